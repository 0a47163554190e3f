"""Opening the store's database: URLs, SQLite tuning, and the UTC and version column types.

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
`BEGIN IMMEDIATE`, so the server's prediction-log writer, the Dagster cycle and the CLI can
share one file without "database is locked" errors. PostgreSQL gets pre-ping.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.pool import StaticPool

from mlops_assets.lifecycle.store.errors import StoreError


def as_utc(value: datetime) -> datetime:
    """Return `value` as timezone-aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A DateTime column that stores UTC and always returns timezone-aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; SQLite stores it naive (as sortable ISO text)."""
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach (or convert to) UTC."""
        return None if value is None else as_utc(value)


class VersionText(sa.types.TypeDecorator):
    """A model version column: MLflow hands out ints, we store and compare text.

    Binding through this type means `column == 1` works on PostgreSQL too (which has no
    varchar = integer operator), not just on SQLite.
    """

    impl = sa.String(64)
    cache_ok = True

    def process_bind_param(self, value: object, dialect: Dialect) -> str | None:
        """Store any version (int or str) as text."""
        return None if value is None else str(value)


def sqlite_file(url: sa.URL) -> Path | None:
    """The file behind a SQLite URL (None for PostgreSQL and in-memory SQLite)."""
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create_store_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An Engine for the store: WAL + busy timeout + explicit BEGIN on SQLite, pre-ping on PG."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_file(parsed)
        if path is not None:
            path.expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "connect_args": {"timeout": busy_timeout_s, "check_same_thread": False}
        }
        if path is None:  # in-memory: one shared connection, or every checkout sees an empty DB
            kwargs["poolclass"] = StaticPool
        engine = sa.create_engine(parsed, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module: it would not BEGIN before
            # SELECT or DDL, and could not BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if path is not None:
                cur.execute("PRAGMA journal_mode = WAL")
                # With WAL, NORMAL syncs at checkpoints instead of at every commit: still safe
                # against a crash of any process, while the prediction log's small transactions
                # stop paying an fsync each (a power cut may lose the last commits; PostgreSQL
                # is the production store).
                cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front, so the busy timeout applies and a
            # read-then-write transaction cannot fail halfway with SQLITE_BUSY.
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    if backend == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True)
    raise StoreError(f"unsupported lifecycle store URL {url!r}: use sqlite:/// or postgresql://")
