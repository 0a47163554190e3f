"""The records the store takes and returns (pydantic models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from mlops_assets.lifecycle.records import utcnow

Role = Literal["champion", "shadow"]


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


class RejectedLabel(BaseModel):
    """A label `add_labels` did not store, and why.

    `unknown_id`: the request is not in the prediction log (or its id cannot be: too long, not
    text). `conflict`: the request already has a different label that this source cannot
    replace. The stored label is not echoed back: a caller must not learn the ground truth.
    """

    request_id: str
    reason: Literal["unknown_id", "conflict"]


class LabelResult(BaseModel):
    """Outcome of `add_labels`: what was stored, what was refused, and why.

    `accepted` counts labels stored or replaced by this call; `duplicates` counts labels equal to
    the one already stored (idempotent repeats, not stored again); `conflicts` counts differing
    labels (kept out, or replacing an API label, see `add_labels`), each recorded in
    `label_conflicts`. `unknown_ids` lists the ids with no logged prediction, whether rejected
    (API) or stored to join once their predictions are logged (label files).
    """

    accepted: int
    unknown_ids: list[str] = Field(default_factory=list)
    rejected: list[RejectedLabel] = Field(default_factory=list)
    conflicts: int = 0
    duplicates: int = 0


class LabelConflict(BaseModel):
    """A second, different label offered for a request that already had one, and what won."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    request_id: str
    existing_label: str
    existing_source: str
    offered_label: str
    offered_source: str
    time: datetime
    resolution: Literal["kept", "replaced"]  # kept: the stored label stayed


class RetentionWindow(BaseModel):
    """Prediction-log rows retention must keep whatever their age: one role since a time.

    `model_version=None` keeps that role's rows of every version (a shadow test pairs the shadow
    with whichever champion answered); `model_name=None` keeps them for every model.
    """

    model_config = ConfigDict(extra="forbid")

    role: Role
    since: datetime
    model_version: str | None = None
    model_name: str | None = None
    reason: str = ""


class PredictionLogStats(BaseModel):
    """How big the prediction log is: rows, approximate bytes on disk, oldest row.

    `approx_bytes` is `pg_total_relation_size('prediction_log')` (table, indexes, TOAST) on
    PostgreSQL and the pages in use of the whole database file on SQLite (the prediction log is
    nearly all of it; a per-table figure would have to read every page). `rows_exact` is False
    when `rows` is an estimate (PostgreSQL's planner count, SQLite's seq span).
    """

    rows: int
    rows_exact: bool = True
    approx_bytes: int | None = None
    bytes_scope: Literal["table", "database"] = "table"
    oldest: datetime | None = None


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
    """Who holds a transition lock (owner, host, pid), and until when."""

    name: str
    owner: str
    token: str
    acquired_at: datetime
    expires_at: datetime
    host: str | None = None  # None: taken before schema v5
    pid: int | None = None
    pid_namespace: str | None = None

    @property
    def holder(self) -> str:
        """The owner with its host and pid, for messages ("cycle-1 (web-2:4242)")."""
        where = f"{self.host}:{self.pid}" if self.host else "host unknown"
        return f"{self.owner} ({where})"


class StaleLock(BaseModel):
    """A lock whose holder is gone: why it is stale, and whose it was."""

    lock: LockInfo
    reason: str


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


class RoleStats(BaseModel):
    """Requests, errors and p50 latency of one model in one role over a time window."""

    requests: int = 0
    errors: int = 0
    p50_latency_ms: float | None = None

    @computed_field
    @property
    def error_rate(self) -> float:
        """errors / requests (0.0 with no requests)."""
        return self.errors / self.requests if self.requests else 0.0
