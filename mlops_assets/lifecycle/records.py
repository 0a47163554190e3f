"""Records shared by the policy, the lifecycle store and the registry moves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.verdict import Check


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class DecisionStatus(StrEnum):
    """Progress of a decision through the crash-safe apply sequence."""

    PENDING = "pending"  # recorded, aliases/tags not yet (fully) moved
    APPLIED = "applied"  # aliases and tags moved
    FAILED = "failed"  # could not be applied; the registry was restored
    RECORDED = "recorded"  # a decision with no registry move (e.g. dry run)


class MetricComparison(BaseModel):
    """One metric for both models on the same rows, with its uncertainty."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    champion: float | None
    challenger: float
    delta: float | None = None  # challenger - champion (absolute)
    relative_delta: float | None = None
    ci_low: float | None = None  # paired bootstrap interval of the delta
    ci_high: float | None = None
    p_value: float | None = None
    test: str | None = None


class SignificanceTest(BaseModel):
    """The paired test applied to the primary comparison."""

    model_config = ConfigDict(extra="forbid")

    name: str  # e.g. "mcnemar_exact" or "paired_bootstrap"
    statistic: float | None
    p_value: float | None
    sample_size: int
    detail: dict[str, Any] = Field(default_factory=dict)


class DecisionRecord(BaseModel):
    """One lifecycle decision: everything DESIGN.md lists for a decision record."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    time: datetime = Field(default_factory=utcnow)
    decision: Decision
    actor: Actor
    model_name: str
    dagster_run_id: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    champion_metrics: dict[str, float] = Field(default_factory=dict)
    challenger_metrics: dict[str, float] = Field(default_factory=dict)
    comparisons: list[MetricComparison] = Field(default_factory=list)
    test: SignificanceTest | None = None
    sample_size: int | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    # The typed checks the decision was derived from; the reasons are derived from them too.
    # Records stored before checks existed have none.
    checks: list[Check] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    status: DecisionStatus = DecisionStatus.PENDING
    error: str | None = None

    @property
    def deltas(self) -> dict[str, float]:
        """challenger - champion for every compared metric with both values."""
        return {c.metric: c.delta for c in self.comparisons if c.delta is not None}
