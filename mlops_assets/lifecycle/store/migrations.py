"""Schema versions and upgrades.

`schema_version` holds one row per applied migration, and opening an older store applies the
missing migrations in one transaction (a SQLite file is first copied to `<file>.v<N>.bak`;
on PostgreSQL an advisory lock serialises concurrent upgrades). A store newer than the code is
refused.

Not Alembic's runner: the history is linear integers, and the backup, the lock, the refusal
and the `schema_version` rows (which `LifecycleStore(schema_version=N)` and the tests use)
would all stay ours around it. Alembic checks the result instead: tests/unit/test_store_schema.py
compares every upgrade path with `tables.py`. A future column change on SQLite can use
`alembic.operations.Operations(...).batch_alter_table` inside a migration here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.engine import UTCDateTime, sqlite_file
from mlops_assets.lifecycle.store.errors import StoreError
from mlops_assets.lifecycle.store.tables import (
    alias_history_table,
    decisions_table,
    drift_results_table,
    label_conflicts_table,
    labels_table,
    prediction_log_table,
    schema_version_table,
    shadow_tests_table,
)

log = logging.getLogger(__name__)

_PG_MIGRATION_LOCK = 0x6D6C6F7073  # pg_advisory_xact_lock key for schema upgrades ("mlops")

# Migrations, oldest first. Never edit one that has shipped; append a new one. A migration that
# creates a table uses its definition in `tables.py`, so a later column change must copy the old
# definition into the earlier migration before changing the table there.
_V1_PREDICTION_REQUEST_INDEX = "ix_prediction_log_request_id"


def _m1_core(conn: Connection) -> None:
    for table in (decisions_table, alias_history_table, prediction_log_table, labels_table):
        table.create(conn)
    # As shipped in v1 (dropped again by v4).
    # Plain DDL: an sa.Index object would bind itself to the table for every later create().
    conn.exec_driver_sql(
        f"CREATE INDEX {_V1_PREDICTION_REQUEST_INDEX} ON prediction_log (request_id)"
    )


# The locks table as shipped in v2 (v5 added the holder's host, pid and pid namespace).
_V2_LOCKS = sa.Table(
    "locks",
    sa.MetaData(),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)
_V5_LOCK_COLUMNS = ("host VARCHAR(255)", "pid INTEGER", "pid_namespace VARCHAR(64)")


def _m2_locks_and_shadow_tests(conn: Connection) -> None:
    for table in (_V2_LOCKS, shadow_tests_table):
        table.create(conn)


def _m3_drift(conn: Connection) -> None:
    drift_results_table.create(conn)


def _m4_drop_redundant_prediction_index(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_V1_PREDICTION_REQUEST_INDEX}")


def _m5_lock_holder(conn: Connection) -> None:
    # ADD COLUMN of a nullable column: plain DDL on both backends (rows held now get NULLs,
    # which only their lease can free).
    for column in _V5_LOCK_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE locks ADD COLUMN {column}")


def _m6_label_conflicts(conn: Connection) -> None:
    label_conflicts_table.create(conn)


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "decisions, alias history, prediction log, labels", _m1_core),
    (2, "transition locks and shadow tests", _m2_locks_and_shadow_tests),
    (3, "feature drift results", _m3_drift),
    (
        4,
        "prediction log: drop the request_id index the unique key covers",
        _m4_drop_redundant_prediction_index,
    ),
    (5, "transition locks: the holder's host, pid and pid namespace", _m5_lock_holder),
    (6, "label conflicts: a second, different label for a request", _m6_label_conflicts),
]
CURRENT_SCHEMA_VERSION = MIGRATIONS[-1][0]


def stored_schema_version(engine: Engine) -> int:
    """The schema version of the store behind `engine` (0 when it is empty)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(schema_version_table.name):
            return 0
        return conn.execute(sa.select(sa.func.max(schema_version_table.c.version))).scalar() or 0


def upgrade(engine: Engine, target: int | None = None) -> int:
    """Apply the missing migrations up to `target` (default: current) in one transaction."""
    target = CURRENT_SCHEMA_VERSION if target is None else target
    if target > CURRENT_SCHEMA_VERSION or target < 1:
        raise StoreError(f"no schema version {target}; this code knows 1..{CURRENT_SCHEMA_VERSION}")
    found = stored_schema_version(engine)
    if found > CURRENT_SCHEMA_VERSION:
        raise StoreError(
            f"the lifecycle store has schema v{found}, newer than this code "
            f"(v{CURRENT_SCHEMA_VERSION}); upgrade mlops-champion-challenger"
        )
    if found >= target:
        return found
    path = sqlite_file(engine.url)
    if found > 0 and path is not None:
        _backup_sqlite(engine, path, found)
    with engine.execution_options(sqlite_immediate=True).begin() as conn:
        if engine.dialect.name == "postgresql":
            # Serialise concurrent upgrades; DDL is transactional on both backends.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
        schema_version_table.create(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_version_table.c.version))).scalar() or 0
        for version, description, migrate in MIGRATIONS:
            if current < version <= target:
                log.info("lifecycle store: applying migration v%d (%s)", version, description)
                migrate(conn)
                conn.execute(
                    schema_version_table.insert().values(
                        version=version, description=description, applied_at=utcnow()
                    )
                )
                current = version
    return current


def _backup_sqlite(engine: Engine, path: Path, version: int) -> None:
    backup = path.with_name(f"{path.name}.v{version}.bak")
    if backup.exists():
        return
    raw = engine.raw_connection()  # autocommit (see _on_connect): VACUUM cannot run in a txn
    try:
        raw.driver_connection.execute("VACUUM INTO ?", (str(backup),))
    finally:
        raw.close()
    log.info("lifecycle store: copied schema v%d to %s before upgrading", version, backup)
