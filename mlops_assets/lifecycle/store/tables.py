"""The store's tables (SQLAlchemy Core), as of the current schema version."""

from __future__ import annotations

import sqlalchemy as sa

from mlops_assets.lifecycle.store.engine import UTCDateTime, VersionText

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

# A second, different label for a request that already had one (v6): what was stored, what was
# offered, and whether the offer was kept out or replaced the stored label. A repeat of the same
# offer against the same stored label is recorded once (see `LabelsMixin.add_labels`).
label_conflicts_table = sa.Table(
    "label_conflicts",
    metadata,
    sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("existing_label", sa.Text, nullable=False),
    sa.Column("existing_source", sa.String(255), nullable=False),
    sa.Column("offered_label", sa.Text, nullable=False),
    sa.Column("offered_source", sa.String(255), nullable=False),
    sa.Column("time", UTCDateTime, nullable=False, index=True),
    sa.Column("resolution", sa.String(16), nullable=False),
)

locks_table = sa.Table(
    "locks",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    # Who holds it (v5): a holder on this host whose pid is gone is taken over at once. The pid
    # namespace tells containers that share a host name apart (their pids are not ours).
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_namespace", sa.String(64)),
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
