"""Probation: roll a new champion back when its live quality falls below what it was promoted on.

`check_probation_now` judges the champion; `run_probation` applies the ROLLBACK. Both are safe to
re-run and take `now` so tests can move the clock.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.lifecycle.classes import version_classes
from mlops_assets.lifecycle.manager import apply_decision
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.shadow import (
    fallback_classes,
    now_or_utcnow,
    reconcile_locked,
    usable_rows,
)
from mlops_assets.lifecycle.states import Actor, Alias, Decision, Tag, holdout_metric_key
from mlops_assets.lifecycle.store import RoleStats, as_utc

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle


class ProbationResult(BaseModel):
    """Whether the current champion, in probation after its promotion, should be rolled back."""

    model_config = ConfigDict(extra="forbid")

    checked_at: datetime
    champion_version: str | None = None
    previous_champion_version: str | None = None
    in_probation: bool = False
    promoted_at: datetime | None = None
    probation_ends_at: datetime | None = None
    promoting_decision_id: str | None = None
    metric: str
    evaluated_metric: float | None = None
    evaluated_source: str | None = None  # where evaluated_metric came from
    live_metric: float | None = None
    live_samples: int = 0
    live: RoleStats = Field(default_factory=RoleStats)
    rollback: bool = False
    reasons: list[str] = Field(default_factory=list)


def _promotion(lc: Lifecycle, champion: str) -> tuple[datetime | None, str | None]:
    """When the champion alias last moved to `champion`, and by which decision."""
    moves = [
        m
        for m in lc.store.alias_history(lc.model_name, Alias.CHAMPION.value)
        if m.to_version == champion
    ]
    if moves:
        return moves[-1].time, moves[-1].decision_id
    tags = dict(lc.client.get_model_version(lc.model_name, champion).tags or {})
    when = tags.get(Tag.PROMOTED_AT)
    return (as_utc(datetime.fromisoformat(when)) if when else None), tags.get(Tag.DECISION_ID)


def _evaluated_metric(
    lc: Lifecycle,
    champion: str,
    metric: str,
    decision: DecisionRecord | None,
) -> tuple[float | None, str | None]:
    """The primary metric a champion was promoted on, and where it was found."""
    if decision is not None and decision.challenger_version == champion:
        value = decision.challenger_metrics.get(metric)
        if value is not None and math.isfinite(value):
            return float(value), f"decision {decision.id} ({decision.decision.value})"
    client = lc.client
    run = client.get_run(client.get_model_version(lc.model_name, champion).run_id)
    for key in (f"eval.challenger.{metric}", holdout_metric_key(metric)):
        value = run.data.metrics.get(key)
        if value is not None and math.isfinite(value):
            return float(value), f"MLflow run metric {key}"
    return None, None


def check_probation_now(lc: Lifecycle, *, now: datetime | None = None) -> ProbationResult:
    """Judge the champion's live quality during `probation_period` after its promotion.

    Only a champion that came in by PROMOTE (not BOOTSTRAP, not a ROLLBACK) and has a
    `previous-champion` to go back to is in probation. Live quality is the primary metric on
    its labelled `champion` predictions since the promotion, compared by `policy.check_probation`
    with the metric it was promoted on, together with its live error rate.
    """
    from mlops_assets.lifecycle.metrics import compute_metrics
    from mlops_assets.lifecycle.policy import check_probation

    now = now_or_utcnow(now)
    policy = lc.settings.policy
    metric = policy.primary_metric
    name, store = lc.model_name, lc.store
    result = ProbationResult(checked_at=now, metric=metric)
    champion = lc.alias_version(Alias.CHAMPION)
    result.champion_version = champion
    if champion is None:
        result.reasons.append("There is no champion; nothing is in probation.")
        return result
    result.previous_champion_version = lc.alias_version(Alias.PREVIOUS_CHAMPION)
    promoted_at, decision_id = _promotion(lc, champion)
    result.promoted_at = promoted_at
    result.promoting_decision_id = decision_id
    decision = store.get_decision(decision_id) if decision_id else None
    if promoted_at is None:
        result.reasons.append(f"Champion v{champion} has no recorded promotion time.")
        return result
    result.probation_ends_at = promoted_at + policy.probation_period
    if decision is not None and decision.decision != Decision.PROMOTE:
        result.reasons.append(
            f"Champion v{champion} came in by {decision.decision.value}, not PROMOTE; it is "
            "not in probation."
        )
        return result
    if now >= result.probation_ends_at:
        result.reasons.append(
            f"Champion v{champion}'s probation ended at "
            f"{result.probation_ends_at.isoformat(timespec='seconds')}."
        )
        return result
    if result.previous_champion_version is None:
        result.reasons.append(
            f"Champion v{champion} has no previous champion to roll back to; probation is "
            "not checked."
        )
        return result
    result.in_probation = True

    evaluated, source = _evaluated_metric(lc, champion, metric, decision)
    result.evaluated_metric, result.evaluated_source = evaluated, source
    result.live = store.role_stats(name, champion, "champion", promoted_at)
    rows = store.labelled_predictions(champion, promoted_at, role="champion", model_name=name)
    classes = version_classes(lc, champion) or fallback_classes(list(rows["prediction"]), champion)
    rows, probas, dropped = usable_rows(rows, classes, ["prediction"], ["probabilities"])
    result.live_samples = len(rows)
    live = float("nan")
    if len(rows):
        live = compute_metrics(
            rows["label"].astype(str).to_numpy(),
            rows["prediction"].astype(str).to_numpy(),
            probas["probabilities"],
            classes,
            [metric],
        )[metric]
    result.live_metric = live if math.isfinite(live) else None
    rollback, reasons = check_probation(
        evaluated if evaluated is not None else float("nan"),
        live,
        len(rows),
        result.live.error_rate,
        policy,
        metric=metric,
    )
    if evaluated is None:
        reasons.append(f"No evaluated {metric} is recorded for v{champion}; it cannot be judged.")
    else:
        reasons.append(f"Evaluated {metric} {evaluated:.3f} comes from {source}.")
    if dropped:
        reasons.append(f"{dropped} labelled request(s) were left out (label not in {classes}).")
    result.rollback = rollback
    result.reasons = [
        f"Champion v{champion} is in probation until "
        f"{result.probation_ends_at.isoformat(timespec='seconds')}.",
        *reasons,
    ]
    return result


def run_probation(
    lc: Lifecycle,
    *,
    actor: Actor,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
) -> DecisionRecord | None:
    """Roll the champion back to `previous-champion` when its probation check fails.

    Returns the applied ROLLBACK, or None when no rollback is needed. A re-run after the
    rollback finds the restored champion (which came in by ROLLBACK) outside probation.
    """
    now = now_or_utcnow(now)
    settings = lc.settings
    reconcile_locked(lc, owner="probation")
    result = check_probation_now(lc, now=now)
    if not result.rollback:
        return None
    champion, target = result.champion_version, result.previous_champion_version
    record = DecisionRecord(
        time=now,
        decision=Decision.ROLLBACK,
        actor=actor,
        model_name=settings.model_name,
        dagster_run_id=dagster_run_id,
        champion_version=champion,
        challenger_version=target,
        champion_metrics=(
            {result.metric: result.live_metric} if result.live_metric is not None else {}
        ),
        sample_size=result.live_samples,
        policy=settings.policy.model_dump(mode="json"),
        reasons=[
            *result.reasons,
            f"Decision: roll back from v{champion} to the previous champion v{target}.",
        ],
    )

    def champion_unchanged() -> str | None:
        current = lc.alias_version(Alias.CHAMPION)
        return None if current == champion else f"the champion is now v{current}, not v{champion}"

    return apply_decision(lc, record, precondition=champion_unchanged)
