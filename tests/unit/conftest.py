"""Unit-tier fixtures: lifecycle store URLs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests_support import pg_schema_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite lifecycle store in a folder that does not exist yet."""
    return f"sqlite:///{tmp_path / 'state' / 'lifecycle.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
def store_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL (a fresh schema; MLOPS_TEST_PG_URL)."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    base = os.environ.get("MLOPS_TEST_PG_URL")
    if not base:
        pytest.skip('MLOPS_TEST_PG_URL is not set; run `eval "$(scripts/start_postgres.sh)"`')
    with pg_schema_url(base) as url:
        yield url
