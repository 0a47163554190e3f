"""Names from the lifecycle contract (DESIGN.md): model states, aliases, decisions, actors."""

from __future__ import annotations

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


STATE_TAG = "lifecycle.state"

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
