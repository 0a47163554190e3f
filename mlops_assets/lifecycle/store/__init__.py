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

Where things are:

- `engine`: URLs, `create_store_engine` (SQLite pragmas, BEGIN IMMEDIATE), the UTC and version
  column types;
- `tables`: the tables; `migrations`: schema versions and `upgrade`;
- `base`: `StoreBase`, the engine of one store and its read/write transactions;
- one mixin per concern: `decisions` (decisions and alias history), `predictions` (the
  prediction log, its retention and size), `labels` (first label wins, a label file outranks
  the API, conflicts recorded), `locks` (leases on the database's clock, refreshed while held;
  a dead holder is taken over), `shadow` (shadow tests), `drift`;
- `models` and `errors`: what the store takes, returns and raises.
"""

from __future__ import annotations

from mlops_assets.lifecycle.store.decisions import DecisionsMixin, decision_content
from mlops_assets.lifecycle.store.drift import DriftMixin
from mlops_assets.lifecycle.store.engine import (
    UTCDateTime,
    VersionText,
    as_utc,
    create_store_engine,
)
from mlops_assets.lifecycle.store.errors import DecisionConflict, LockBusy, LockLost, StoreError
from mlops_assets.lifecycle.store.labels import (
    MAX_REQUEST_ID_LENGTH,
    LabelsMixin,
    is_file_source,
    source_rank,
)
from mlops_assets.lifecycle.store.locks import (
    DEFAULT_LOCK_TTL,
    LocksMixin,
    holder_identity,
    pid_alive,
    stale_reason,
)
from mlops_assets.lifecycle.store.migrations import (
    CURRENT_SCHEMA_VERSION,
    MIGRATIONS,
    stored_schema_version,
    upgrade,
)
from mlops_assets.lifecycle.store.models import (
    AliasMove,
    DriftRow,
    LabelConflict,
    LabelResult,
    LockInfo,
    PredictionLogStats,
    PredictionRow,
    RejectedLabel,
    RetentionWindow,
    Role,
    RoleStats,
    ShadowTest,
    StaleLock,
)
from mlops_assets.lifecycle.store.predictions import PredictionLogMixin
from mlops_assets.lifecycle.store.shadow import ShadowTestsMixin
from mlops_assets.lifecycle.store.tables import (
    PREDICTION_LOG_COLUMNS,
    alias_history_table,
    decisions_table,
    drift_results_table,
    label_conflicts_table,
    labels_table,
    locks_table,
    metadata,
    prediction_log_table,
    schema_version_table,
    shadow_tests_table,
)


class LifecycleStore(
    DecisionsMixin,
    PredictionLogMixin,
    LabelsMixin,
    LocksMixin,
    ShadowTestsMixin,
    DriftMixin,
):
    """Durable lifecycle state shared by the cycle, the server and the CLI (see package doc)."""


__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "DEFAULT_LOCK_TTL",
    "MAX_REQUEST_ID_LENGTH",
    "MIGRATIONS",
    "PREDICTION_LOG_COLUMNS",
    "AliasMove",
    "DecisionConflict",
    "DriftRow",
    "LabelConflict",
    "LabelResult",
    "LifecycleStore",
    "LockBusy",
    "LockInfo",
    "LockLost",
    "PredictionLogStats",
    "PredictionRow",
    "RejectedLabel",
    "RetentionWindow",
    "Role",
    "RoleStats",
    "ShadowTest",
    "StaleLock",
    "StoreError",
    "UTCDateTime",
    "VersionText",
    "alias_history_table",
    "as_utc",
    "create_store_engine",
    "decision_content",
    "decisions_table",
    "drift_results_table",
    "holder_identity",
    "is_file_source",
    "label_conflicts_table",
    "labels_table",
    "locks_table",
    "metadata",
    "pid_alive",
    "prediction_log_table",
    "schema_version_table",
    "shadow_tests_table",
    "source_rank",
    "stale_reason",
    "stored_schema_version",
    "upgrade",
]
