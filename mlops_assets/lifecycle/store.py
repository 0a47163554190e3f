"""The durable lifecycle store: decisions, alias moves, predictions, labels, locks, shadow tests.

SQLAlchemy Core over SQLite (the default: one file under MLOPS_HOME) or PostgreSQL (production).
SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
`BEGIN IMMEDIATE`, so the server's prediction-log writer, the Dagster cycle and the CLI can
share one file without "database is locked" errors.

The schema is versioned: `schema_version` holds one row per applied migration, and opening an
older store applies the missing migrations in one transaction (a SQLite file is first copied to
`<file>.v<N>.bak`). A store newer than the code is refused.

Every timestamp is stored as UTC and returned timezone-aware (UTC). A naive datetime passed in
is taken to be UTC already.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import Decision

log = logging.getLogger(__name__)

Role = Literal["champion", "shadow"]
_CHUNK = 500  # ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits
_PG_MIGRATION_LOCK = 0x6D6C6F7073  # pg_advisory_xact_lock key for schema upgrades ("mlops")


class StoreError(RuntimeError):
    """The lifecycle store cannot be used as asked (bad URL, newer schema, conflict)."""


class DecisionConflict(StoreError):
    """A decision id is already stored with different content (records are append-only)."""


class LockBusy(TimeoutError):
    """The transition lock is held by someone else and did not free up in time."""

    def __init__(self, name: str, owner: str | None, expires_at: datetime | None, waited: float):
        self.name = name
        self.owner = owner
        self.expires_at = expires_at
        holder = f"held by {owner!r} until {expires_at.isoformat()}" if owner else "held"
        super().__init__(
            f"transition lock for {name!r} is {holder}; gave up after {waited:g} s "
            "(another lifecycle cycle is moving aliases; retry later)"
        )


class LockLost(StoreError):
    """Our transition lock expired and someone else took it over."""


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


# --- public records -------------------------------------------------------------------------


class AliasMove(BaseModel):
    """One move of an MLflow alias; `to_version=None` means the alias was removed."""

    model_config = ConfigDict(extra="forbid")

    model_name: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    decision_id: str | None = None
    time: datetime


class PredictionRow(BaseModel):
    """One logged prediction of one model (the champion's or a shadow's) for one request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1)
    time: datetime = Field(default_factory=utcnow)
    role: Role
    model_name: str
    model_version: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    prediction: str | None = None
    probabilities: dict[str, float] | list[float] | None = None
    latency_ms: float | None = None
    error: str | None = None

    @field_validator("request_id", "model_version", "prediction", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # Labels and versions may come as bool, int or numpy scalars; the log stores text.
        return value if value is None or isinstance(value, str) else str(value)


class LabelResult(BaseModel):
    """Outcome of `add_labels`: how many were stored, and which ids have no logged prediction."""

    accepted: int
    unknown_ids: list[str] = Field(default_factory=list)


class ShadowTest(BaseModel):
    """A shadow test of one version: when it started, when it expires, how it ended."""

    model_config = ConfigDict(extra="forbid")

    model_name: str
    version: str
    started_at: datetime
    expires_at: datetime
    extensions: int = 0
    status: Literal["open", "closed"] = "open"
    decision_id: str | None = None  # the decision that closed it
    opened_by: str | None = None  # the decision that opened it
    closed_at: datetime | None = None


class LockInfo(BaseModel):
    """Who holds a transition lock, and until when."""

    name: str
    owner: str
    token: str
    acquired_at: datetime
    expires_at: datetime


class DriftRow(BaseModel):
    """One stored drift check: one feature, one method, on one data file against a reference."""

    model_config = ConfigDict(extra="forbid")

    id: int
    model_name: str
    computed_at: datetime
    data_sha256: str  # the current data
    reference_version: str | None  # the champion whose training data was the reference
    feature: str
    method: str  # "psi", "ks" or "chi_square"
    statistic: float  # NaN when it could not be computed (too few values)
    p_value: float | None
    threshold: float
    drifted: bool
    dagster_run_id: str | None = None


# --- schema ----------------------------------------------------------------------------------

metadata = sa.MetaData()
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY autoincrements

schema_version_table = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

decisions_table = sa.Table(
    "decisions",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("time", UTCDateTime, nullable=False, index=True),
    sa.Column("model_name", sa.String(255), nullable=False, index=True),
    sa.Column("decision", sa.String(32), nullable=False, index=True),
    sa.Column("actor", sa.String(32), nullable=False),
    sa.Column("champion_version", VersionText(), index=True),
    sa.Column("challenger_version", VersionText(), index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("error", sa.Text),
    sa.Column("record", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

alias_history_table = sa.Table(
    "alias_history",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("from_version", VersionText()),
    sa.Column("to_version", VersionText()),
    sa.Column("actor", sa.String(32), nullable=False),
    sa.Column("decision_id", sa.String(64), index=True),
    sa.Column("time", UTCDateTime, nullable=False),
    # One move per alias per decision: re-applying a decision never duplicates history.
    sa.UniqueConstraint("decision_id", "model_name", "alias", name="uq_alias_history_decision"),
    sa.Index("ix_alias_history_lookup", "model_name", "alias", "time"),
)

prediction_log_table = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    # Lookups by request_id use the unique key below, whose first column it is (v4 dropped the
    # separate index: one B-tree less for every logged prediction).
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("time", UTCDateTime, nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", VersionText(), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text),
    sa.Column("probabilities", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("error", sa.Text),
    # A retried flush (commit acknowledged but lost) must not double a request's rows.
    sa.UniqueConstraint("request_id", "role", "model_version", name="uq_prediction_request"),
    sa.Index("ix_prediction_version_role_time", "model_version", "role", "time"),
)

# Column order of `LifecycleStore.append_prediction_rows` tuples.
PREDICTION_LOG_COLUMNS = (
    "request_id",
    "time",
    "role",
    "model_name",
    "model_version",
    "inputs",
    "prediction",
    "probabilities",
    "latency_ms",
    "error",
)

labels_table = sa.Table(
    "labels",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("time", UTCDateTime, nullable=False, index=True),
)

locks_table = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

shadow_tests_table = sa.Table(
    "shadow_tests",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("version", VersionText(), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("extensions", sa.Integer, nullable=False, default=0),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decision_id", sa.String(64)),
    sa.Column("opened_by", sa.String(64)),
    sa.Column("closed_at", UTCDateTime),
    # A version enters the shadow state once in its life (shadow -> champion | rejected).
    sa.UniqueConstraint("model_name", "version", name="uq_shadow_test_version"),
    sa.Index("ix_shadow_tests_open", "model_name", "status", "expires_at"),
)

drift_results_table = sa.Table(
    "drift_results",
    metadata,
    sa.Column("id", _Seq, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("computed_at", UTCDateTime, nullable=False),
    sa.Column("data_sha256", sa.String(1024), nullable=False),
    sa.Column("reference_version", VersionText()),
    sa.Column("feature", sa.String(255), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    # NULL for NaN: SQLite cannot store NaN (it turns it into NULL), so both backends agree.
    sa.Column("statistic", sa.Float),
    sa.Column("p_value", sa.Float),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    # One result per feature and method for a data file and reference: re-runs replace.
    sa.UniqueConstraint(
        "model_name",
        "data_sha256",
        "reference_version",
        "feature",
        "method",
        name="uq_drift_result",
    ),
    sa.Index("ix_drift_results_latest", "model_name", "feature", "method", "computed_at"),
)


# Migrations, oldest first. Never edit one that has shipped; append a new one. A migration that
# creates a table uses the table definition above, so a later column change must copy the old
# definition into the earlier migration before changing the table here.
_V1_PREDICTION_REQUEST_INDEX = "ix_prediction_log_request_id"


def _m1_core(conn: Connection) -> None:
    for table in (decisions_table, alias_history_table, prediction_log_table, labels_table):
        table.create(conn)
    # As shipped in v1 (dropped again by v4).
    # Plain DDL: an sa.Index object would bind itself to the table for every later create().
    conn.exec_driver_sql(
        f"CREATE INDEX {_V1_PREDICTION_REQUEST_INDEX} ON prediction_log (request_id)"
    )


def _m2_locks_and_shadow_tests(conn: Connection) -> None:
    for table in (locks_table, shadow_tests_table):
        table.create(conn)


def _m3_drift(conn: Connection) -> None:
    drift_results_table.create(conn)


def _m4_drop_redundant_prediction_index(conn: Connection) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_V1_PREDICTION_REQUEST_INDEX}")


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "decisions, alias history, prediction log, labels", _m1_core),
    (2, "transition locks and shadow tests", _m2_locks_and_shadow_tests),
    (3, "feature drift results", _m3_drift),
    (
        4,
        "prediction log: drop the request_id index the unique key covers",
        _m4_drop_redundant_prediction_index,
    ),
]
CURRENT_SCHEMA_VERSION = MIGRATIONS[-1][0]


# --- engine ----------------------------------------------------------------------------------


def _sqlite_file(url: sa.URL) -> Path | None:
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create_store_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An Engine for the store: WAL + busy timeout + explicit BEGIN on SQLite, pre-ping on PG."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_file(parsed)
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
    path = _sqlite_file(engine.url)
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


def _dumps(value: Any) -> str:
    # allow_nan: a metric can be NaN (e.g. precision with no positive prediction); pydantic's
    # own JSON would turn it into null, which a float field then refuses on the way back.
    return json.dumps(value, sort_keys=True, default=str, allow_nan=True)


def decision_content(rec: DecisionRecord) -> str:
    """A decision's content without its status, as canonical JSON (NaN-safe comparison)."""
    return _dumps(rec.model_dump(mode="json", exclude={"status", "error"}))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the store -------------------------------------------------------------------------------


class LifecycleStore:
    """Durable lifecycle state shared by the cycle, the server and the CLI (see module doc)."""

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

    def __enter__(self) -> LifecycleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LifecycleStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        dialect = pg_dialect if self.engine.dialect.name == "postgresql" else sqlite_dialect
        return dialect.insert(table)

    # --- decisions ---------------------------------------------------------------------------

    @staticmethod
    def _decision_from_row(row: sa.Row) -> DecisionRecord:
        rec = DecisionRecord.model_validate(json.loads(row.record))
        return rec.model_copy(
            update={"status": DecisionStatus(row.status), "error": row.error, "time": row.time}
        )

    def record_decision(self, rec: DecisionRecord) -> DecisionRecord:
        """Append a decision (idempotent for the same id and content); return it as stored."""
        rec = rec.model_copy(update={"time": as_utc(rec.time)})
        t = decisions_table
        try:
            with self._write() as conn:
                row = conn.execute(sa.select(t).where(t.c.id == rec.id)).first()
                if row is not None:
                    return self._same_decision(row, rec)
                conn.execute(
                    t.insert().values(
                        id=rec.id,
                        time=rec.time,
                        model_name=rec.model_name,
                        decision=rec.decision.value,
                        actor=rec.actor.value,
                        champion_version=rec.champion_version,
                        challenger_version=rec.challenger_version,
                        status=rec.status.value,
                        error=rec.error,
                        record=_dumps(rec.model_dump(mode="json")),
                        updated_at=utcnow(),
                    )
                )
        except IntegrityError:  # the same id recorded concurrently (PostgreSQL)
            with self._read() as conn:
                return self._same_decision(
                    conn.execute(sa.select(t).where(t.c.id == rec.id)).one(), rec
                )
        return rec

    def _same_decision(self, row: sa.Row, rec: DecisionRecord) -> DecisionRecord:
        stored = self._decision_from_row(row)
        if decision_content(stored) != decision_content(rec):
            raise DecisionConflict(
                f"decision {rec.id} is already stored with different content; "
                "decision records are append-only"
            )
        return stored

    def set_status(
        self, decision_id: str, status: DecisionStatus, error: str | None = None
    ) -> DecisionRecord:
        """Move a decision from pending to applied or failed (the same status again is a no-op)."""
        status = DecisionStatus(status)
        t = decisions_table
        with self._write() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == decision_id).with_for_update()).first()
            if row is None:
                raise KeyError(f"no decision {decision_id}")
            current = DecisionStatus(row.status)
            if current == status:
                return self._decision_from_row(row)
            if current != DecisionStatus.PENDING or status not in (
                DecisionStatus.APPLIED,
                DecisionStatus.FAILED,
            ):
                raise StoreError(
                    f"decision {decision_id} is {current.value}; only pending -> applied|failed "
                    f"is allowed, not -> {status.value}"
                )
            conn.execute(
                t.update()
                .where(t.c.id == decision_id)
                .values(status=status.value, error=error, updated_at=utcnow())
            )
            row = conn.execute(sa.select(t).where(t.c.id == decision_id)).one()
        return self._decision_from_row(row)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """One decision by id, or None."""
        t = decisions_table
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == decision_id)).first()
        return None if row is None else self._decision_from_row(row)

    def decisions(
        self,
        *,
        version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        decision: Decision | None = None,
        model_name: str | None = None,
        status: DecisionStatus | None = None,
        limit: int | None = 50,
    ) -> list[DecisionRecord]:
        """Decisions, newest first; `version` matches the champion or the challenger version."""
        t = decisions_table
        q = sa.select(t).order_by(t.c.time.desc(), t.c.seq.desc())
        if version is not None:
            q = q.where(sa.or_(t.c.champion_version == version, t.c.challenger_version == version))
        if since is not None:
            q = q.where(t.c.time >= since)
        if until is not None:
            q = q.where(t.c.time <= until)
        if decision is not None:
            q = q.where(t.c.decision == Decision(decision).value)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        if status is not None:
            q = q.where(t.c.status == DecisionStatus(status).value)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._decision_from_row(r) for r in conn.execute(q)]

    def pending_decisions(self, model_name: str | None = None) -> list[DecisionRecord]:
        """Decisions not yet fully applied, oldest first (what reconcile rolls forward)."""
        t = decisions_table
        q = (
            sa.select(t)
            .where(t.c.status == DecisionStatus.PENDING.value)
            .order_by(t.c.time, t.c.seq)
        )
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        with self._read() as conn:
            return [self._decision_from_row(r) for r in conn.execute(q)]

    def decision_counts(self, model_name: str | None = None) -> dict[str, int]:
        """How many decision records each decision value has (every Decision, 0 when none)."""
        t = decisions_table
        q = sa.select(t.c.decision, sa.func.count()).group_by(t.c.decision)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        counts = {d.value: 0 for d in Decision}
        with self._read() as conn:
            counts.update({str(d): int(n) for d, n in conn.execute(q)})
        return counts

    # --- alias history -----------------------------------------------------------------------

    @staticmethod
    def _move_from_row(row: sa.Row) -> AliasMove:
        return AliasMove(
            model_name=row.model_name,
            alias=row.alias,
            from_version=row.from_version,
            to_version=row.to_version,
            actor=row.actor,
            decision_id=row.decision_id,
            time=row.time,
        )

    def record_alias_move(
        self,
        model_name: str,
        alias: str,
        from_version: str | None,
        to_version: str | None,
        actor: str,
        decision_id: str | None,
        time: datetime | None = None,
    ) -> AliasMove:
        """Append one alias move; for a decision that already moved this alias, return that move."""
        t = alias_history_table
        alias = str(alias)
        values = {
            "model_name": model_name,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "actor": str(actor),
            "decision_id": decision_id,
            "time": as_utc(time) if time else utcnow(),
        }
        existing_q = sa.select(t).where(
            t.c.decision_id == decision_id, t.c.model_name == model_name, t.c.alias == alias
        )
        try:
            with self._write() as conn:
                if decision_id is not None:
                    row = conn.execute(existing_q).first()
                    if row is not None:
                        return self._checked_move(row, to_version)
                conn.execute(t.insert().values(**values))
        except IntegrityError:  # a concurrent writer (PostgreSQL) recorded it first
            with self._read() as conn:
                return self._checked_move(conn.execute(existing_q).one(), to_version)
        return AliasMove(**values)

    def _checked_move(self, row: sa.Row, to_version: str | None) -> AliasMove:
        move = self._move_from_row(row)
        if move.to_version != to_version:
            raise StoreError(
                f"decision {move.decision_id} already moved alias {move.alias!r} to "
                f"{move.to_version!r}, not {to_version!r}"
            )
        return move

    def alias_history(
        self, model_name: str, alias: str | None = None, *, decision_id: str | None = None
    ) -> list[AliasMove]:
        """Alias moves of a model, oldest first (optionally one alias or one decision)."""
        t = alias_history_table
        q = sa.select(t).where(t.c.model_name == model_name).order_by(t.c.time, t.c.seq)
        if alias is not None:
            q = q.where(t.c.alias == str(alias))
        if decision_id is not None:
            q = q.where(t.c.decision_id == decision_id)
        with self._read() as conn:
            return [self._move_from_row(r) for r in conn.execute(q)]

    def version_at(self, model_name: str, alias: str, when: datetime) -> str | None:
        """Which version `alias` pointed at, at time `when` (None: it did not exist)."""
        t = alias_history_table
        q = (
            sa.select(t.c.to_version)
            .where(t.c.model_name == model_name, t.c.alias == str(alias), t.c.time <= when)
            .order_by(t.c.time.desc(), t.c.seq.desc())
            .limit(1)
        )
        with self._read() as conn:
            return conn.execute(q).scalar()

    # --- prediction log ----------------------------------------------------------------------

    def log_predictions(self, rows: Sequence[PredictionRow]) -> int:
        """Append prediction rows in one transaction; return how many were new."""
        return self.append_prediction_rows(
            [
                (
                    r.request_id,
                    r.time,
                    r.role,
                    r.model_name,
                    str(r.model_version),
                    _dumps(r.inputs),
                    r.prediction,
                    None if r.probabilities is None else _dumps(r.probabilities),
                    r.latency_ms,
                    r.error,
                )
                for r in rows
            ]
        )

    def append_prediction_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Append pre-encoded rows (`PREDICTION_LOG_COLUMNS` order, JSON as text); count new.

        The serving hot path: no per-row model objects. A row already logged (same request,
        role and version, e.g. a retried flush) is skipped, not doubled.
        """
        if not rows:
            return 0
        t = prediction_log_table
        if self.engine.dialect.name == "sqlite":
            # The driver's executemany is ~10x cheaper per row than SQLAlchemy's parameter
            # processing; times go in as the same naive-UTC text UTCDateTime writes.
            stamp: dict[datetime, str] = {}

            def text(when: datetime) -> str:
                if when not in stamp:
                    stamp[when] = as_utc(when).strftime("%Y-%m-%d %H:%M:%S.%f")
                return stamp[when]

            cols = ", ".join(PREDICTION_LOG_COLUMNS)
            marks = ", ".join("?" for _ in PREDICTION_LOG_COLUMNS)
            sql = f"INSERT OR IGNORE INTO {t.name} ({cols}) VALUES ({marks})"
            params = [(r[0], text(r[1]), *r[2:]) for r in rows]
            with self._write() as conn:
                count = conn.exec_driver_sql(sql, params).rowcount
        elif self.engine.dialect.driver == "psycopg2":
            # psycopg2's executemany is a round trip per row (~6k rows/s); execute_values
            # sends multi-row VALUES pages, and RETURNING counts the rows really inserted.
            from psycopg2.extras import execute_values

            cols = ", ".join(PREDICTION_LOG_COLUMNS)
            sql = (
                f"INSERT INTO {t.name} ({cols}) VALUES %s "
                "ON CONFLICT (request_id, role, model_version) DO NOTHING RETURNING 1"
            )
            params = [(r[0], as_utc(r[1]), r[2], r[3], str(r[4]), *r[5:]) for r in rows]
            with self._write() as conn:
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    count = len(execute_values(cursor, sql, params, page_size=1000, fetch=True))
                finally:
                    cursor.close()
        else:
            stmt = self._insert(t).on_conflict_do_nothing(
                index_elements=[t.c.request_id, t.c.role, t.c.model_version]
            )
            values = [dict(zip(PREDICTION_LOG_COLUMNS, r, strict=True)) for r in rows]
            with self._write() as conn:
                count = conn.execute(stmt, values).rowcount
        return len(rows) if count is None or count < 0 else count

    @staticmethod
    def _prediction_from_row(row: sa.Row) -> PredictionRow:
        return PredictionRow(
            request_id=row.request_id,
            time=row.time,
            role=row.role,
            model_name=row.model_name,
            model_version=row.model_version,
            inputs=_loads(row.inputs) or {},
            prediction=row.prediction,
            probabilities=_loads(row.probabilities),
            latency_ms=row.latency_ms,
            error=row.error,
        )

    def predictions(
        self,
        *,
        model_version: str | None = None,
        role: Role | None = None,
        since: datetime | None = None,
        model_name: str | None = None,
        request_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[PredictionRow]:
        """Logged predictions, newest first."""
        t = prediction_log_table
        q = sa.select(t).order_by(t.c.time.desc(), t.c.seq.desc())
        if model_version is not None:
            q = q.where(t.c.model_version == str(model_version))
        if role is not None:
            q = q.where(t.c.role == role)
        if since is not None:
            q = q.where(t.c.time >= since)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        if request_ids is not None:
            q = q.where(t.c.request_id.in_(list(request_ids)))
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._prediction_from_row(r) for r in conn.execute(q)]

    def prune_predictions(self, before: datetime, keep_versions: set[str]) -> int:
        """Delete predictions older than `before` except those of `keep_versions`.

        Labels received before `before` whose request no longer has any logged prediction go
        too. Returns the number of prediction rows deleted.
        """
        p, lab = prediction_log_table, labels_table
        q = sa.delete(p).where(p.c.time < before)
        if keep_versions:
            q = q.where(p.c.model_version.not_in(sorted(str(v) for v in keep_versions)))
        with self._write() as conn:
            deleted = conn.execute(q).rowcount
            orphans = conn.execute(
                sa.delete(lab).where(
                    lab.c.time < before,
                    ~sa.exists().where(p.c.request_id == lab.c.request_id),
                )
            ).rowcount
        log.info("pruned %d predictions and %d orphaned labels before %s", deleted, orphans, before)
        return deleted

    # --- labels ------------------------------------------------------------------------------

    def add_labels(self, items: Iterable[tuple[str, str]], source: str) -> LabelResult:
        """Store labels (upsert: the last label for a request wins).

        Every label is stored, even for a request not (yet) in the prediction log: the log
        writer flushes asynchronously, so labels may arrive first. Those ids are reported in
        `unknown_ids`; they join the evaluation once their predictions are logged.
        """
        latest: dict[str, str] = {}
        for request_id, label in items:
            request_id = str(request_id).strip()
            if not request_id:
                raise ValueError("a label needs a non-empty request_id")
            if label is None or str(label).strip() == "":
                raise ValueError(f"the label for request {request_id!r} is empty")
            latest.pop(request_id, None)  # keep input order of the last occurrence
            latest[request_id] = str(label).strip()
        if not latest:
            return LabelResult(accepted=0, unknown_ids=[])
        now = utcnow()
        t, p = labels_table, prediction_log_table
        values = [
            {"request_id": rid, "label": lab, "source": source, "time": now}
            for rid, lab in latest.items()
        ]
        stmt = self._insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.request_id],
            set_={
                "label": stmt.excluded.label,
                "source": stmt.excluded.source,
                "time": stmt.excluded.time,
            },
        )
        ids = list(latest)
        known: set[str] = set()
        with self._write() as conn:
            conn.execute(stmt, values)
            for chunk in _chunks(ids):
                known.update(
                    conn.execute(
                        sa.select(p.c.request_id).distinct().where(p.c.request_id.in_(chunk))
                    ).scalars()
                )
        return LabelResult(accepted=len(ids), unknown_ids=[i for i in ids if i not in known])

    def labels(self, request_ids: Sequence[str]) -> dict[str, str]:
        """The stored label of each of `request_ids` that has one."""
        t = labels_table
        out: dict[str, str] = {}
        with self._read() as conn:
            for chunk in _chunks(list(request_ids)):
                rows = conn.execute(
                    sa.select(t.c.request_id, t.c.label).where(t.c.request_id.in_(chunk))
                )
                out.update({r.request_id: r.label for r in rows})
        return out

    def labelled_pairs(
        self,
        champion_version: str,
        shadow_version: str,
        since: datetime | None = None,
        *,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Labelled requests answered by both the champion and the shadow (the same rows).

        Columns: request_id, label, champion_prediction, champion_probabilities,
        shadow_prediction, shadow_probabilities. A request where either model failed
        (error logged, no prediction) is left out for both, oldest request first.
        """
        c = prediction_log_table.alias("c")
        s = prediction_log_table.alias("s")
        lab = labels_table
        q = (
            sa.select(
                c.c.request_id,
                lab.c.label,
                c.c.prediction.label("champion_prediction"),
                c.c.probabilities.label("champion_probabilities"),
                s.c.prediction.label("shadow_prediction"),
                s.c.probabilities.label("shadow_probabilities"),
            )
            .select_from(
                c.join(s, s.c.request_id == c.c.request_id).join(
                    lab, lab.c.request_id == c.c.request_id
                )
            )
            .where(
                c.c.role == "champion",
                c.c.model_version == str(champion_version),
                s.c.role == "shadow",
                s.c.model_version == str(shadow_version),
                c.c.error.is_(None),
                s.c.error.is_(None),
                c.c.prediction.is_not(None),
                s.c.prediction.is_not(None),
            )
            .order_by(c.c.time, c.c.seq)
        )
        if since is not None:
            q = q.where(c.c.time >= since)
        if model_name is not None:
            q = q.where(c.c.model_name == model_name, s.c.model_name == model_name)
        columns = [
            "request_id",
            "label",
            "champion_prediction",
            "champion_probabilities",
            "shadow_prediction",
            "shadow_probabilities",
        ]
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for row in rows:
            row["champion_probabilities"] = _loads(row["champion_probabilities"])
            row["shadow_probabilities"] = _loads(row["shadow_probabilities"])
        return pd.DataFrame(rows, columns=columns)

    def labelled_predictions(
        self,
        model_version: str,
        since: datetime | None = None,
        *,
        role: Role | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Labelled, successful predictions of one version (probation of a new champion).

        Columns: request_id, time, role, label, prediction, probabilities; oldest first.
        """
        p, lab = prediction_log_table, labels_table
        q = (
            sa.select(
                p.c.request_id, p.c.time, p.c.role, lab.c.label, p.c.prediction, p.c.probabilities
            )
            .select_from(p.join(lab, lab.c.request_id == p.c.request_id))
            .where(
                p.c.model_version == str(model_version),
                p.c.error.is_(None),
                p.c.prediction.is_not(None),
            )
            .order_by(p.c.time, p.c.seq)
        )
        if since is not None:
            q = q.where(p.c.time >= since)
        if role is not None:
            q = q.where(p.c.role == role)
        if model_name is not None:
            q = q.where(p.c.model_name == model_name)
        columns = ["request_id", "time", "role", "label", "prediction", "probabilities"]
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for row in rows:
            row["probabilities"] = _loads(row["probabilities"])
        return pd.DataFrame(rows, columns=columns)

    # --- transition lock ---------------------------------------------------------------------

    def lock_holder(self, name: str) -> LockInfo | None:
        """Who holds lock `name` (even if expired), or None."""
        t = locks_table
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).first()
        return None if row is None else LockInfo.model_validate(dict(row._mapping))

    def acquire_lock(
        self,
        name: str,
        owner: str,
        ttl: timedelta = timedelta(minutes=10),
        wait: float = 30.0,
    ) -> LockInfo:
        """Take lock `name` (a row in `locks`), taking over an expired one; LockBusy after `wait`.

        The lock works across processes and hosts sharing the store. Expiry uses this host's
        clock, so hosts sharing a PostgreSQL store need synchronised clocks.
        """
        t = locks_table
        token = uuid.uuid4().hex
        owner = f"{owner} ({socket.gethostname()}:{os.getpid()})"
        start = time.monotonic()
        delay = 0.02
        while True:
            now = utcnow()
            values = {
                "name": name,
                "owner": owner,
                "token": token,
                "acquired_at": now,
                "expires_at": now + ttl,
            }
            with self._write() as conn:
                inserted = conn.execute(
                    self._insert(t)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=[t.c.name])
                ).rowcount
                if inserted == 1:
                    return LockInfo(**values)
                held = conn.execute(sa.select(t).where(t.c.name == name)).first()
                taken = conn.execute(
                    t.update().where(t.c.name == name, t.c.expires_at <= now).values(**values)
                ).rowcount
            if taken == 1:
                log.warning(
                    "took over expired transition lock %r from %s",
                    name,
                    held.owner if held else "?",
                )
                return LockInfo(**values)
            waited = time.monotonic() - start
            if waited >= wait:
                raise LockBusy(
                    name, held.owner if held else None, held.expires_at if held else None, waited
                )
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(wait - waited, 0.0)))
            delay = min(delay * 2, 0.5)

    def refresh_lock(self, lock: LockInfo, ttl: timedelta = timedelta(minutes=10)) -> LockInfo:
        """Push the expiry of a held lock forward; LockLost if it was taken over."""
        t = locks_table
        expires = utcnow() + ttl
        with self._write() as conn:
            n = conn.execute(
                t.update()
                .where(t.c.name == lock.name, t.c.token == lock.token)
                .values(expires_at=expires)
            ).rowcount
        if n != 1:
            raise LockLost(f"transition lock {lock.name!r} expired and was taken over")
        return lock.model_copy(update={"expires_at": expires})

    def release_lock(self, lock: LockInfo) -> bool:
        """Release a held lock; False (and a warning) when it had expired and was taken over."""
        t = locks_table
        with self._write() as conn:
            n = conn.execute(
                sa.delete(t).where(t.c.name == lock.name, t.c.token == lock.token)
            ).rowcount
        if n != 1:
            log.warning(
                "transition lock %r expired while %s held it and was taken over; "
                "raise its ttl if this cycle is legitimately long",
                lock.name,
                lock.owner,
            )
        return n == 1

    @contextmanager
    def transition_lock(
        self,
        model_name: str,
        owner: str,
        ttl: timedelta = timedelta(minutes=10),
        wait: float = 30.0,
    ) -> Iterator[LockInfo]:
        """Hold the per-model transition lock for the block (see `acquire_lock`)."""
        lock = self.acquire_lock(f"transition:{model_name}", owner, ttl=ttl, wait=wait)
        try:
            yield lock
        finally:
            self.release_lock(lock)

    # --- shadow tests ------------------------------------------------------------------------

    @staticmethod
    def _shadow_from_row(row: sa.Row) -> ShadowTest:
        data = dict(row._mapping)
        data.pop("seq", None)
        return ShadowTest.model_validate(data)

    def _shadow_rows(
        self, conn: Connection, version: str, model_name: str | None, *, lock: bool = False
    ) -> list[sa.Row]:
        t = shadow_tests_table
        q = sa.select(t).where(t.c.version == str(version))
        if lock:
            q = q.with_for_update()  # PostgreSQL row lock; SQLite's BEGIN IMMEDIATE suffices
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        rows = list(conn.execute(q))
        if len(rows) > 1:
            raise StoreError(
                f"version {version} has shadow tests under several models; pass model_name"
            )
        return rows

    def shadow_test(self, version: str, model_name: str | None = None) -> ShadowTest | None:
        """The shadow test of a version (open or closed), or None."""
        with self._read() as conn:
            rows = self._shadow_rows(conn, version, model_name)
        return self._shadow_from_row(rows[0]) if rows else None

    def open_shadow_test(
        self,
        model_name: str,
        version: str,
        expires_at: datetime,
        started_at: datetime | None = None,
        decision_id: str | None = None,
    ) -> ShadowTest:
        """Open the shadow test of a version; if it is already open, return it unchanged."""
        t = shadow_tests_table
        started = as_utc(started_at) if started_at else utcnow()
        try:
            with self._write() as conn:
                rows = self._shadow_rows(conn, version, model_name)
                if rows:
                    test = self._shadow_from_row(rows[0])
                    if test.status != "open":
                        raise StoreError(
                            f"the shadow test of {model_name} v{version} already ended "
                            f"(decision {test.decision_id}); a version is shadow-tested once"
                        )
                    return test
                conn.execute(
                    t.insert().values(
                        model_name=model_name,
                        version=str(version),
                        started_at=started,
                        expires_at=as_utc(expires_at),
                        extensions=0,
                        status="open",
                        opened_by=decision_id,
                    )
                )
        except IntegrityError:  # opened concurrently (PostgreSQL)
            found = self.shadow_test(version, model_name)
            assert found is not None
            return found
        return ShadowTest(
            model_name=model_name,
            version=str(version),
            started_at=started,
            expires_at=as_utc(expires_at),
            opened_by=decision_id,
        )

    def extend_shadow_test(
        self, version: str, new_expires_at: datetime, *, model_name: str | None = None
    ) -> ShadowTest:
        """Move an open test's expiry later and count the extension.

        Idempotent: a `new_expires_at` not later than the current expiry changes nothing, so
        re-running the same extension does not count it twice.
        """
        t = shadow_tests_table
        new_expires_at = as_utc(new_expires_at)
        with self._write() as conn:
            rows = self._shadow_rows(conn, version, model_name, lock=True)
            if not rows or rows[0].status != "open":
                raise StoreError(f"version {version} has no open shadow test to extend")
            row = rows[0]
            if new_expires_at > row.expires_at:
                conn.execute(
                    t.update()
                    .where(t.c.seq == row.seq)
                    .values(expires_at=new_expires_at, extensions=row.extensions + 1)
                )
            row = conn.execute(sa.select(t).where(t.c.seq == row.seq)).one()
        return self._shadow_from_row(row)

    def close_shadow_test(
        self, version: str, decision_id: str, *, model_name: str | None = None
    ) -> ShadowTest:
        """Close a version's shadow test with the decision that ended it (idempotent)."""
        t = shadow_tests_table
        with self._write() as conn:
            rows = self._shadow_rows(conn, version, model_name, lock=True)
            if not rows:
                raise StoreError(f"version {version} has no shadow test to close")
            row = rows[0]
            if row.status == "open":
                conn.execute(
                    t.update()
                    .where(t.c.seq == row.seq)
                    .values(status="closed", decision_id=decision_id, closed_at=utcnow())
                )
                row = conn.execute(sa.select(t).where(t.c.seq == row.seq)).one()
            elif row.decision_id != decision_id:
                log.warning(
                    "shadow test of v%s was already closed by decision %s, not %s",
                    version,
                    row.decision_id,
                    decision_id,
                )
        return self._shadow_from_row(row)

    def open_shadow_tests(self, model_name: str) -> list[ShadowTest]:
        """Open shadow tests of a model, soonest expiry first."""
        t = shadow_tests_table
        q = (
            sa.select(t)
            .where(t.c.model_name == model_name, t.c.status == "open")
            .order_by(t.c.expires_at, t.c.seq)
        )
        with self._read() as conn:
            return [self._shadow_from_row(r) for r in conn.execute(q)]

    def expired_shadow_tests(
        self, model_name: str, now: datetime | None = None
    ) -> list[ShadowTest]:
        """Open shadow tests whose expiry is at or before `now`."""
        now = as_utc(now) if now else utcnow()
        return [t for t in self.open_shadow_tests(model_name) if t.expires_at <= now]

    # --- feature drift -----------------------------------------------------------------------

    def record_drift(
        self,
        model_name: str,
        data_sha256: str,
        reference_version: str | None,
        results: Sequence[Any],
        dagster_run_id: str | None = None,
        *,
        computed_at: datetime | None = None,
    ) -> int:
        """Store one drift computation (`DriftResult`s); return how many rows were written.

        Idempotent: the results of the same data and reference replace the earlier ones in one
        transaction, so a re-run never duplicates rows.
        """
        t = drift_results_table
        when = as_utc(computed_at) if computed_at else utcnow()
        ref = None if reference_version is None else str(reference_version)
        rows = [
            {
                "model_name": model_name,
                "computed_at": when,
                "data_sha256": data_sha256,
                "reference_version": ref,
                "feature": r.feature,
                "method": r.method,
                "statistic": None if pd.isna(r.statistic) else float(r.statistic),
                "p_value": None if r.p_value is None or pd.isna(r.p_value) else float(r.p_value),
                "threshold": float(r.threshold),
                "drifted": bool(r.drifted),
                "dagster_run_id": dagster_run_id,
            }
            for r in results
        ]
        same = [
            t.c.model_name == model_name,
            t.c.data_sha256 == data_sha256,
            t.c.reference_version.is_(None) if ref is None else t.c.reference_version == ref,
        ]
        with self._write() as conn:
            if self.engine.dialect.name == "postgresql":
                # Serialise writers of the same computation (SQLite's BEGIN IMMEDIATE already
                # does); the unique constraint cannot, as a NULL reference never conflicts.
                key = f"drift:{model_name}:{data_sha256}:{ref}"
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
            conn.execute(sa.delete(t).where(*same))
            if rows:
                conn.execute(t.insert(), rows)
        return len(rows)

    @staticmethod
    def _drift_from_row(row: Any) -> DriftRow:
        data = dict(row._mapping)
        data.pop("rn", None)
        if data["statistic"] is None:
            data["statistic"] = float("nan")
        return DriftRow.model_validate(data)

    def latest_drift(self, model_name: str) -> list[DriftRow]:
        """The most recent result of each (feature, method) of a model, by feature and method."""
        t = drift_results_table
        rn = (
            sa.func.row_number()
            .over(
                partition_by=(t.c.feature, t.c.method),
                order_by=(t.c.computed_at.desc(), t.c.id.desc()),
            )
            .label("rn")
        )
        ranked = sa.select(t, rn).where(t.c.model_name == model_name).subquery()
        q = (
            sa.select(*(ranked.c[c.name] for c in t.columns))
            .where(ranked.c.rn == 1)
            .order_by(ranked.c.feature, ranked.c.method)
        )
        with self._read() as conn:
            return [self._drift_from_row(r) for r in conn.execute(q)]

    def drift_results(
        self, model_name: str, *, data_sha256: str | None = None, limit: int | None = None
    ) -> list[DriftRow]:
        """Stored drift results of a model, newest computation first (optionally one file)."""
        t = drift_results_table
        q = (
            sa.select(t)
            .where(t.c.model_name == model_name)
            .order_by(t.c.computed_at.desc(), t.c.id.desc())
        )
        if data_sha256 is not None:
            q = q.where(t.c.data_sha256 == data_sha256)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._drift_from_row(r) for r in conn.execute(q)]
