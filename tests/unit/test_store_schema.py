"""Every upgrade path builds exactly the schema `store/tables.py` declares.

Alembic's autogenerate comparison reads the live database and lists what differs from the
SQLAlchemy metadata (tables, columns, types, indexes, unique keys), so a migration that
forgets a column or an index fails here, on SQLite and (MLOPS_TEST_PG_URL) PostgreSQL.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mlops_assets.lifecycle.store import CURRENT_SCHEMA_VERSION, LifecycleStore, metadata


def schema_diff(store: LifecycleStore) -> list:
    """What the live schema of `store` lacks or has beyond the declared tables."""
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


@pytest.mark.parametrize("start", [None, *range(1, CURRENT_SCHEMA_VERSION)])
def test_upgrading_from_any_version_gives_the_declared_schema(store_url: str, start: int | None):
    if start is not None:
        LifecycleStore(store_url, schema_version=start).close()
    with LifecycleStore(store_url) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
        assert schema_diff(store) == []


def test_the_comparison_sees_a_missing_migration(store_url: str):
    with LifecycleStore(store_url, schema_version=CURRENT_SCHEMA_VERSION - 1) as old:
        assert schema_diff(old) != []
