"""Names from the lifecycle contract (DESIGN.md): model states, aliases, decisions, actors."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ModelState(StrEnum):
    """Value of the `lifecycle.state` tag on every registered model version."""

    CANDIDATE = "candidate"
    REJECTED = "rejected"
    SHADOW = "shadow"
    CHAMPION = "champion"
    ARCHIVED = "archived"


class Alias(StrEnum):
    """MLflow registry aliases; they are the source of truth for what is served."""

    CHAMPION = "champion"
    CHALLENGER = "challenger"
    PREVIOUS_CHAMPION = "previous-champion"


class Decision(StrEnum):
    """The one decision every lifecycle step ends in."""

    PROMOTE = "PROMOTE"
    START_SHADOW = "START_SHADOW"
    KEEP_CHAMPION = "KEEP_CHAMPION"
    EXTEND_SHADOW = "EXTEND_SHADOW"
    REJECT = "REJECT"
    ROLLBACK = "ROLLBACK"
    BOOTSTRAP = "BOOTSTRAP"


class Actor(StrEnum):
    """Who took a decision."""

    SENSOR = "sensor"
    SCHEDULE = "schedule"
    CLI = "cli"
    API = "api"
    UI = "ui"


class Tag(StrEnum):
    """Model-version tag names written and read by the lifecycle (one spelling, one place)."""

    # Lifecycle state and the decision that set it (registry moves).
    STATE = "lifecycle.state"
    DECISION_ID = "lifecycle.decision_id"
    REASONS = "lifecycle.reasons"
    PROMOTED_AT = "lifecycle.promoted_at"
    ARCHIVED_AT = "lifecycle.archived_at"
    REJECTED_AT = "lifecycle.rejected_at"
    ROLLED_BACK = "lifecycle.rolled_back"
    # Lineage, set at registration.
    DATA_SHA256 = "data.sha256"
    DATA_FILES = "data.files"
    DATA_KEY = "data.key"  # sha256 of every file's sha256 and the rows taken (lifecycle/window.py)
    DATA_WINDOW = "data.window"  # training.window as configured, e.g. "since: 90d"
    LUDWIG_CONFIG_HASH = "ludwig.config_hash"
    # sha256 of the Ludwig config the version was trained with (hyperopt's winner, or the file's)
    CHOSEN_CONFIG_HASH = "ludwig.chosen_config_hash"
    SCHEMA_FINGERPRINT = "schema.fingerprint"
    BUNDLE_SHA256 = "bundle.sha256"  # sha256 of the serving bundle's sha256.json
    DAGSTER_RUN_ID = "dagster.run_id"
    IMAGE_REF = "image.ref"  # the per-model image `mlops package` built (mlops/<model>:v<N>)
    IMAGE_DIGEST = "image.digest"  # its image id (sha256:...); there is no registry digest
    # Retention: old rejected versions are marked, never deleted.
    MLOPS_ARCHIVED = "mlops.archived"
    MLOPS_ARCHIVED_AT = "mlops.archived_at"
    MLOPS_ARCHIVED_REASON = "mlops.archived_reason"


STATE_TAG = Tag.STATE.value

# Holdout metrics are logged on the training run as `holdout.<metric>`.
HOLDOUT_METRIC_PREFIX = "holdout."


def holdout_metric_key(metric: str) -> str:
    """The MLflow run-metric key of a holdout metric."""
    return f"{HOLDOUT_METRIC_PREFIX}{metric}"


def holdout_metrics(run_metrics: Mapping[str, float]) -> dict[str, float]:
    """The holdout metrics of a training run, keyed by metric name (prefix removed)."""
    return {
        k.removeprefix(HOLDOUT_METRIC_PREFIX): v
        for k, v in run_metrics.items()
        if k.startswith(HOLDOUT_METRIC_PREFIX)
    }


# Allowed moves of `lifecycle.state` (DESIGN.md "Model states").
ALLOWED_MOVES: dict[ModelState, frozenset[ModelState]] = {
    ModelState.CANDIDATE: frozenset({ModelState.REJECTED, ModelState.SHADOW, ModelState.CHAMPION}),
    ModelState.SHADOW: frozenset({ModelState.CHAMPION, ModelState.REJECTED}),
    ModelState.CHAMPION: frozenset({ModelState.ARCHIVED}),
    ModelState.ARCHIVED: frozenset({ModelState.CHAMPION}),
    ModelState.REJECTED: frozenset(),
}


def is_allowed_move(src: ModelState, dst: ModelState) -> bool:
    """Return True when the contract allows moving a version from `src` to `dst`."""
    return src == dst or dst in ALLOWED_MOVES[src]
