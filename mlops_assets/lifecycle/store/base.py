"""The store's base: one engine, its transactions, and the JSON encoding of stored columns."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from mlops_assets.lifecycle.store.engine import as_utc, create_store_engine
from mlops_assets.lifecycle.store.migrations import upgrade

_CHUNK = 500  # ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits


def dumps(value: Any) -> str:
    """Canonical JSON text of a stored value (sorted keys; NaN kept)."""
    # allow_nan: a metric can be NaN (e.g. precision with no positive prediction); pydantic's
    # own JSON would turn it into null, which a float field then refuses on the way back.
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def loads(text: str | None) -> Any:
    """The value of a stored JSON column (None stays None)."""
    return None if text is None else json.loads(text)


def chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    """`items` in slices small enough for one IN (...) clause."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreBase:
    """The engine of one store (opened and migrated once) and its read/write transactions.

    Each concern of the store (decisions, prediction log, labels, locks, shadow tests, drift)
    is a mixin over this class; `LifecycleStore` combines them.
    """

    def __init__(
        self, url: str, *, busy_timeout_s: float = 30.0, schema_version: int | None = None
    ) -> None:
        self.url = url
        self.engine = create_store_engine(url, busy_timeout_s=busy_timeout_s)
        self._write_engine = self.engine.execution_options(sqlite_immediate=True)
        self.schema_version = upgrade(self.engine, schema_version)

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"{type(self).__name__}({url!r})"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def database_now(self) -> datetime:
        """The database's current time (UTC): the one clock every host sharing the store reads."""
        with self._read() as conn:
            return self._db_now(conn)

    def _db_now(self, conn: Connection) -> datetime:
        if self.engine.dialect.name == "sqlite":
            # CURRENT_TIMESTAMP has whole seconds only; 'now' is UTC, %f gives milliseconds.
            text = conn.execute(sa.select(sa.func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar()
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        return as_utc(conn.execute(sa.select(sa.func.now())).scalar())

    def _insert(self, table: sa.Table) -> Any:
        dialect = pg_dialect if self.engine.dialect.name == "postgresql" else sqlite_dialect
        return dialect.insert(table)
