"""The champion-challenger decision rules: pure functions from evaluations to decision records.

Each step builds a list of typed checks (`verdict.Check`, one per rule below, named by
`verdict.CheckName` after the policy key it applies), derives the decision from the checks
alone (`offline_decision`, `shadow_decision`, `probation_rollback`), and derives every reason
sentence from the checks in one step (`verdict.explain`, templates in `verdict.TEMPLATES`). The
checks are stored on the record, so the registry reads them, never a sentence.

Both models are always scored on the same rows: the same holdout offline, the same labelled
mirrored requests in a shadow test (`comparison.py` checks this: same number of rows, same true
labels, same row ids when both carry them, and raises ValueError otherwise). Every metric is
recomputed from the predictions; the `metrics` an evaluation carries are for reference. The
metrics judged are `evaluation_metrics` plus any metric named in `metric_floors`.

An *improvement* is oriented so that positive means the challenger is better: challenger -
champion, or champion - challenger for `log_loss`. With `improvement: relative` it is divided
by the champion's value. Significance is always one-sided (H1: the challenger is better).

Offline gate (`decide_offline`)
-------------------------------
1. No champion yet: the challenger becomes the first champion (`BOOTSTRAP`) when the holdout
   has at least `min_holdout_rows` rows and it meets every metric floor. `auto_promotion` does
   not apply, since there is nothing to protect and nothing is served until a champion exists.
   Otherwise `KEEP_CHAMPION` with no champion version: nothing is promoted, and the reasons say
   "no champion yet".
2. With a champion, any failed check gives `KEEP_CHAMPION`, and every failure is listed (the
   checks after the first are built by `comparison.compare`, shared with the shadow test):
   - `min_holdout_rows`: the holdout has fewer rows (then nothing else is checked);
   - `champion_threshold`: the primary metric's improvement is below it;
   - `significance_alpha`: the one-sided p-value is not below it. The test is the exact McNemar
     test when the primary metric is `accuracy`, and the paired bootstrap
     (`bootstrap_resamples` resamples) otherwise;
   - `max_metric_degradation` (guard rail, one check per other evaluation metric): it worsens by
     more than this (absolute, in the metric's own units, on the point estimates), whatever the
     primary says;
   - `metric_floors` (one check per floor): the challenger's value is below the floor (for
     `log_loss` the floor is a ceiling: the value must not exceed it).
3. Undefined metrics (NaN, e.g. `roc_auc` when the rows hold a single class): an undefined
   primary metric fails `champion_threshold` (and no test is run); an undefined guard-rail
   metric is `skipped`, and the reasons say so; a floor on an undefined metric fails, since it
   cannot be checked.
4. A challenger that passes gets route checks, which choose its outcome:
   - `auto_promotion: true`: `PROMOTE` when `shadow_mode_duration` is 0, or when the improvement
     reaches `direct_promotion_margin` (same units as `champion_threshold`); else `START_SHADOW`.
   - `auto_promotion: false`: `START_SHADOW` when `shadow_mode_duration` > 0 (promotion after the
     test is then by hand). With a zero duration: `KEEP_CHAMPION`, and the reasons say to
     promote by hand with `mlops promote VERSION`. That version passed the gate: it should stay
     a `candidate` rather than become `rejected`, so that it can be promoted by hand.
     `awaiting_manual_promotion(record)` tells the two kinds of KEEP_CHAMPION apart from the
     checks: every gate check passed and the `auto_promotion` check did not.

Shadow test (`decide_shadow`)
-----------------------------
On the labelled mirrored requests, with the champion's answers to the same requests:
1. `REJECT` when the shadow's error rate exceeds the champion's by more than
   `error_rate_tolerance` (default 0.01), whatever the labels say; and, only when
   `max_latency_ratio` is set (default: off), when its p50 latency exceeds that multiple of the
   champion's.
2. Fewer than `shadow_min_labelled_samples` labelled requests: `EXTEND_SHADOW` while
   `extensions_so_far` < `max_shadow_extensions`, else `REJECT`.
3. The offline checks of step 2 above (threshold, significance, guard rails, floors) on these
   requests; any failure gives `REJECT`.
4. A shadow that passes: `PROMOTE` with `auto_promotion: true`. With `auto_promotion: false`,
   `EXTEND_SHADOW`, and the reasons say it awaits manual promotion: the shadow keeps its
   traffic until someone runs `mlops promote VERSION` or `mlops reject VERSION`.

Probation (`check_probation`)
-----------------------------
During `probation_period` after a promotion, roll back when the live error rate exceeds
`max_error_rate` (default 0.05), or when, with at least `min_samples` labelled live requests
(default `shadow_min_labelled_samples`), the live primary metric fell below its evaluated value
by more than `rollback_threshold` (absolute or relative, as `improvement`).

Records
-------
`MetricComparison.delta` is challenger - champion in the metric's own units (so negative is
better for `log_loss`), `relative_delta` is that divided by |champion|, and `ci_low`/`ci_high`
bound the same raw delta (paired bootstrap percentile interval at level 1 - alpha). `p_value`
is the one-sided p-value for an improvement, from the test named in `test`. `checks` holds the
checks above; the reasons speak in improvements, with numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from mlops_assets.lifecycle.comparison import (
    TOLERANCE,
    Gate,
    ModelEvaluation,
    check_pair,
    classes_of,
    compare,
    defined,
    floor_checks,
    improvement,
    metric_names,
    score,
)
from mlops_assets.lifecycle.metrics import check_metric_names
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.verdict import (
    Check,
    CheckName,
    Stage,
    check,
    explain,
    find,
    gate_passed,
    holds,
)
from mlops_assets.lifecycle.verdict import (
    awaiting_manual_promotion as awaiting_manual_promotion,
)
from mlops_assets.settings import ChampionChallengerPolicy, format_duration

logger = logging.getLogger(__name__)

VERDICT_ORDER: dict[Decision, int] = {
    Decision.KEEP_CHAMPION: 0,
    Decision.START_SHADOW: 1,
    Decision.PROMOTE: 2,
}


# --- decisions from checks -----------------------------------------------------------------------


def offline_decision(checks: Sequence[Check], *, has_champion: bool) -> Decision:
    """The offline verdict, from its checks alone (module docstring, rules 1-4)."""
    if not gate_passed(checks):
        return Decision.KEEP_CHAMPION
    if not has_champion:
        return Decision.BOOTSTRAP
    shadow_test = holds(checks, CheckName.SHADOW_DURATION)
    if not holds(checks, CheckName.AUTO_PROMOTION):
        return Decision.START_SHADOW if shadow_test else Decision.KEEP_CHAMPION
    if not shadow_test or holds(checks, CheckName.DIRECT_PROMOTION):
        return Decision.PROMOTE
    return Decision.START_SHADOW


def shadow_decision(checks: Sequence[Check]) -> Decision:
    """The shadow-test verdict, from its checks alone (module docstring, rules 1-4)."""
    if not gate_passed(c for c in checks if c.name != CheckName.LABELLED_SAMPLES):
        return Decision.REJECT
    labelled = find(checks, CheckName.LABELLED_SAMPLES)
    if labelled is not None and not labelled.passed:
        extend = holds(checks, CheckName.SHADOW_EXTENSIONS)
        return Decision.EXTEND_SHADOW if extend else Decision.REJECT
    return Decision.PROMOTE if holds(checks, CheckName.AUTO_PROMOTION) else Decision.EXTEND_SHADOW


def probation_rollback(checks: Sequence[Check]) -> bool:
    """Roll back when the live error rate or the live metric check failed."""
    return not gate_passed(c for c in checks if c.name != CheckName.LABELLED_SAMPLES)


def _route_checks(gain: float, policy: ChampionChallengerPolicy) -> list[Check]:
    """What a challenger that passed the offline gate does next (rule 4)."""
    duration = policy.shadow_mode_duration
    seconds = duration.total_seconds()
    checks = [
        check(CheckName.AUTO_PROMOTION, policy.auto_promotion),
        check(
            CheckName.SHADOW_DURATION,
            seconds > 0,
            value=seconds,
            limit=0.0,
            detail={
                "duration": format_duration(duration),
                "traffic_percent": policy.shadow_traffic_percent,
            },
        ),
    ]
    margin = policy.direct_promotion_margin
    if policy.auto_promotion and seconds > 0 and margin is not None:
        checks.append(
            check(
                CheckName.DIRECT_PROMOTION,
                gain >= margin - TOLERANCE,
                value=gain,
                limit=margin,
                detail={"mode": policy.improvement},
            )
        )
    return checks


def _record(
    decision: Decision,
    stage: Stage,
    checks: list[Check],
    *,
    model_name: str,
    actor: Actor,
    dagster_run_id: str | None,
    champion: ModelEvaluation | None,
    challenger: ModelEvaluation,
    policy: ChampionChallengerPolicy,
    gate: Gate | None = None,
    challenger_metrics: dict[str, float] | None = None,
) -> DecisionRecord:
    record = DecisionRecord(
        decision=decision,
        actor=actor,
        model_name=model_name,
        dagster_run_id=dagster_run_id,
        champion_version=champion.version if champion else None,
        challenger_version=challenger.version,
        champion_metrics=gate.champion_metrics if gate else {},
        challenger_metrics=gate.challenger_metrics if gate else (challenger_metrics or {}),
        comparisons=gate.comparisons if gate else [],
        test=gate.test if gate else None,
        sample_size=challenger.n_rows,
        policy=policy.model_dump(mode="json"),
        checks=checks,
    )
    record.reasons = explain(stage, checks, record)
    logger.info(
        "%s: %s for version %s (champion %s)",
        model_name,
        decision.value,
        challenger.version,
        record.champion_version,
    )
    return record


# --- offline gate ------------------------------------------------------------------------------


def decide_offline(
    champion: ModelEvaluation | None,
    challenger: ModelEvaluation,
    policy: ChampionChallengerPolicy,
    *,
    model_name: str,
    actor: Actor,
    dagster_run_id: str | None = None,
    seed: int = 0,
) -> DecisionRecord:
    """Judge a challenger on the holdout against the champion; see the module docstring."""
    common = {
        "model_name": model_name,
        "actor": actor,
        "dagster_run_id": dagster_run_id,
        "champion": champion,
        "challenger": challenger,
        "policy": policy,
    }
    n, need = challenger.n_rows, policy.min_holdout_rows
    rows = check(CheckName.MIN_HOLDOUT_ROWS, n >= need, value=n, limit=need)
    if champion is None:
        metrics = score(challenger, classes_of(challenger), metric_names(policy))
        checks = [rows, *floor_checks(metrics, policy)]
        decision = offline_decision(checks, has_champion=False)
        return _record(
            decision, Stage.OFFLINE, checks, challenger_metrics=defined(metrics), **common
        )

    classes = check_pair(champion, challenger)
    if not rows.passed:
        metrics = score(challenger, classes, metric_names(policy))
        return _record(
            offline_decision([rows], has_champion=True),
            Stage.OFFLINE,
            [rows],
            challenger_metrics=defined(metrics),
            **common,
        )
    gate = compare(champion, challenger, classes, policy, seed)
    checks = [rows, *gate.checks]
    if gate.passed:
        checks += _route_checks(gate.improvement, policy)
    decision = offline_decision(checks, has_champion=True)
    return _record(decision, Stage.OFFLINE, checks, gate=gate, **common)


# --- shadow test -------------------------------------------------------------------------------


def _operation_checks(
    error_rates: tuple[float, float],
    p50_latencies_ms: tuple[float | None, float | None],
    tolerance: float,
    max_ratio: float | None,
) -> list[Check]:
    """Shadow error rate against the champion's, and (when both are known) p50 latency.

    Each pair is (champion, shadow).
    """
    champion_rate, shadow_rate = error_rates
    checks = [
        check(
            CheckName.ERROR_RATE,
            shadow_rate <= champion_rate + tolerance,
            value=shadow_rate,
            limit=champion_rate + tolerance,
            detail={"champion": champion_rate, "tolerance": tolerance},
        )
    ]
    champion_ms, shadow_ms = p50_latencies_ms
    if champion_ms is not None and shadow_ms is not None:
        limit = None if max_ratio is None else max_ratio * champion_ms
        checks.append(
            check(
                CheckName.LATENCY,
                limit is None or shadow_ms <= limit,
                value=shadow_ms,
                limit=limit,
                detail={"champion": champion_ms, "ratio": max_ratio},
            )
        )
    return checks


def decide_shadow(
    champion: ModelEvaluation,
    shadow: ModelEvaluation,
    policy: ChampionChallengerPolicy,
    *,
    extensions_so_far: int,
    champion_error_rate: float,
    shadow_error_rate: float,
    champion_p50_latency_ms: float | None,
    shadow_p50_latency_ms: float | None,
    model_name: str,
    actor: Actor,
    dagster_run_id: str | None = None,
    seed: int = 0,
    error_rate_tolerance: float | None = None,
    max_latency_ratio: float | None = None,
) -> DecisionRecord:
    """Judge a shadow on labelled mirrored requests; see the module docstring.

    `error_rate_tolerance` and `max_latency_ratio` override the policy's values when given.
    """
    common = {
        "model_name": model_name,
        "actor": actor,
        "dagster_run_id": dagster_run_id,
        "champion": champion,
        "challenger": shadow,
        "policy": policy,
    }
    classes = check_pair(champion, shadow)
    tolerance = (
        policy.error_rate_tolerance if error_rate_tolerance is None else error_rate_tolerance
    )
    ratio = policy.max_latency_ratio if max_latency_ratio is None else max_latency_ratio
    checks = _operation_checks(
        (champion_error_rate, shadow_error_rate),
        (champion_p50_latency_ms, shadow_p50_latency_ms),
        tolerance,
        ratio,
    )
    if not gate_passed(checks):
        return _record(shadow_decision(checks), Stage.SHADOW, checks, **common)

    n, need, most = shadow.n_rows, policy.shadow_min_labelled_samples, policy.max_shadow_extensions
    checks.append(check(CheckName.LABELLED_SAMPLES, n >= need, value=n, limit=need))
    if n < need:
        more = extensions_so_far < most
        checks.append(check(CheckName.SHADOW_EXTENSIONS, more, value=extensions_so_far, limit=most))
        shown = defined(score(shadow, classes, metric_names(policy)))
        decision = shadow_decision(checks)
        return _record(decision, Stage.SHADOW, checks, challenger_metrics=shown, **common)

    gate = compare(champion, shadow, classes, policy, seed)
    checks += gate.checks
    if gate.passed:
        checks.append(check(CheckName.AUTO_PROMOTION, policy.auto_promotion))
    return _record(shadow_decision(checks), Stage.SHADOW, checks, gate=gate, **common)


# --- probation ---------------------------------------------------------------------------------


def probation_checks(
    evaluated_metric: float,
    live_metric: float,
    live_samples: int,
    error_rate: float,
    policy: ChampionChallengerPolicy,
    *,
    metric: str | None = None,
    max_error_rate: float | None = None,
    min_samples: int | None = None,
) -> list[Check]:
    """The checks of a champion in probation: live error rate, labelled samples, live metric."""
    metric = metric or policy.primary_metric
    check_metric_names([metric])
    bound = policy.max_error_rate if max_error_rate is None else max_error_rate
    need = policy.shadow_min_labelled_samples if min_samples is None else min_samples
    checks = [
        check(CheckName.LIVE_ERROR_RATE, error_rate <= bound, value=error_rate, limit=bound),
        check(
            CheckName.LABELLED_SAMPLES,
            live_samples >= need,
            value=live_samples,
            limit=need,
            metric=metric,
        ),
    ]
    if live_samples < need:
        return checks
    mode, limit = policy.improvement, policy.rollback_threshold
    detail = {"live": live_metric, "evaluated": evaluated_metric, "samples": live_samples}
    if math.isnan(live_metric) or math.isnan(evaluated_metric):
        undefined = check(
            CheckName.ROLLBACK_THRESHOLD, True, limit=limit, metric=metric, skipped=True
        )
        return [*checks, undefined]
    drop = -improvement(metric, evaluated_metric, live_metric, mode)
    judged = check(
        CheckName.ROLLBACK_THRESHOLD,
        drop <= limit + TOLERANCE,
        value=drop,
        limit=limit,
        metric=metric,
        detail={**detail, "mode": mode},
    )
    return [*checks, judged]


def check_probation(
    evaluated_metric: float,
    live_metric: float,
    live_samples: int,
    error_rate: float,
    policy: ChampionChallengerPolicy,
    *,
    metric: str | None = None,
    max_error_rate: float | None = None,
    min_samples: int | None = None,
) -> tuple[bool, list[str]]:
    """Return (roll back?, reasons) for a new champion in probation; see the module docstring.

    `max_error_rate` and `min_samples` override the policy's values when given.
    """
    checks = probation_checks(
        evaluated_metric,
        live_metric,
        live_samples,
        error_rate,
        policy,
        metric=metric,
        max_error_rate=max_error_rate,
        min_samples=min_samples,
    )
    return probation_rollback(checks), explain(Stage.PROBATION, checks)


def verdict_rank(decision: Decision) -> int:
    """Order of offline verdicts: KEEP_CHAMPION < START_SHADOW < PROMOTE."""
    return VERDICT_ORDER[decision]
