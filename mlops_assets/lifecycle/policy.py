"""The champion-challenger decision rules: pure functions from evaluations to decision records.

Both models are always scored on the same rows: the same holdout offline, the same labelled
mirrored requests in a shadow test. The functions check this (same number of rows, same true
labels, same row ids when both carry them) and raise ValueError otherwise. Every metric is
recomputed here from the predictions; the `metrics` an evaluation carries are for reference.
The metrics judged are `evaluation_metrics` plus any metric named in `metric_floors`.

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
2. With a champion, any of these failures gives `KEEP_CHAMPION`, and every failure is listed:
   - the holdout has fewer than `min_holdout_rows` rows;
   - the primary metric's improvement is below `champion_threshold`;
   - the improvement is not significant: the one-sided p-value is not below
     `significance_alpha`. The test is the exact McNemar test when the primary metric is
     `accuracy`, and the paired bootstrap (`bootstrap_resamples` resamples) otherwise;
   - guard rail: any other evaluation metric worsens by more than `max_metric_degradation`
     (absolute, in the metric's own units, on the point estimates), whatever the primary says;
   - a metric floor is not met: the challenger's value is below `metric_floors[metric]` (for
     `log_loss` the floor is a ceiling: the value must not exceed it).
3. Undefined metrics (NaN, e.g. `roc_auc` when the rows hold a single class): an undefined
   primary metric fails the gate; an undefined guard-rail metric is skipped, and the reasons
   say so; a floor on an undefined metric fails, since it cannot be checked.
4. A challenger that passes:
   - `auto_promotion: true`: `PROMOTE` when `shadow_mode_duration` is 0, or when the improvement
     reaches `direct_promotion_margin` (same units as `champion_threshold`); else `START_SHADOW`.
   - `auto_promotion: false`: `START_SHADOW` when `shadow_mode_duration` > 0 (promotion after the
     test is then by hand). With a zero duration: `KEEP_CHAMPION`, with the reason "auto_promotion
     is off; promote by hand with `mlops promote VERSION`". That version passed the gate: it
     should stay a `candidate` rather than become `rejected`, so that it can be promoted by
     hand. `awaiting_manual_promotion(record)` tells the two kinds of KEEP_CHAMPION apart.

Shadow test (`decide_shadow`)
-----------------------------
On the labelled mirrored requests, with the champion's answers to the same requests:
1. `REJECT` when the shadow's error rate exceeds the champion's by more than
   `error_rate_tolerance` (default 0.01), whatever the labels say; and, only when
   `max_latency_ratio` is given, when its p50 latency exceeds that multiple of the champion's.
2. Fewer than `shadow_min_labelled_samples` labelled requests: `EXTEND_SHADOW` while
   `extensions_so_far` < `max_shadow_extensions`, else `REJECT`.
3. The offline rules of step 2 above (threshold, significance, guard rails, floors) on these
   requests; any failure gives `REJECT`.
4. A shadow that passes: `PROMOTE` with `auto_promotion: true`. With `auto_promotion: false`,
   `EXTEND_SHADOW` with the reason "passed; awaiting manual promotion": the shadow keeps its
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
is the one-sided p-value for an improvement, from the test named in `test`. The reasons speak
in improvements, with numbers.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from mlops_assets.lifecycle.metrics import (
    HIGHER_IS_BETTER,
    as_labels,
    check_metric_names,
    compute_metrics,
)
from mlops_assets.lifecycle.records import DecisionRecord, MetricComparison, SignificanceTest
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.stats import BootstrapResult, mcnemar_exact, paired_bootstrap
from mlops_assets.settings import ChampionChallengerPolicy, format_duration

logger = logging.getLogger(__name__)

MANUAL_PROMOTION_NOTE = "auto_promotion is off"
# Float slack when comparing a difference of metrics with a policy number (0.75 - 0.70 < 0.05).
_TOLERANCE = 1e-9
VERDICT_ORDER: dict[Decision, int] = {
    Decision.KEEP_CHAMPION: 0,
    Decision.START_SHADOW: 1,
    Decision.PROMOTE: 2,
}


class ModelEvaluation(BaseModel):
    """One model's predictions on the evaluation rows (holdout, or labelled mirrored requests).

    Labels are held as strings. `probabilities` is `[N, k]` in `classes` order, or 1-D
    P(positive) for a binary problem. `row_ids` (optional) identify the rows, so that the policy
    can check both models were scored on the same ones. `metrics` is informational.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    version: str
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray | None = None
    metrics: dict[str, float] = {}
    classes: list[str] | None = None
    row_ids: np.ndarray | None = None

    @field_validator("y_true", "y_pred", "row_ids", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        return None if value is None else as_labels(value)

    @field_validator("probabilities", mode="before")
    @classmethod
    def _proba(cls, value: Any) -> Any:
        return None if value is None else np.asarray(value, dtype=np.float64)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> Any:
        return None if value is None else [str(c) for c in value]

    @model_validator(mode="after")
    def _same_length(self) -> ModelEvaluation:
        n = len(self.y_true)
        if len(self.y_pred) != n:
            raise ValueError(f"y_true has {n} rows but y_pred has {len(self.y_pred)}")
        if self.probabilities is not None and len(self.probabilities) != n:
            raise ValueError(f"y_true has {n} rows but probabilities {len(self.probabilities)}")
        if self.row_ids is not None and len(self.row_ids) != n:
            raise ValueError(f"y_true has {n} rows but row_ids has {len(self.row_ids)}")
        return self

    @property
    def n_rows(self) -> int:
        """Number of evaluation rows."""
        return len(self.y_true)


def awaiting_manual_promotion(record: DecisionRecord) -> bool:
    """True when the challenger passed but `auto_promotion: false` leaves promotion to a person.

    On a KEEP_CHAMPION record this means: keep the version a `candidate`, do not reject it.
    """
    return any(MANUAL_PROMOTION_NOTE in reason for reason in record.reasons)


# --- formatting --------------------------------------------------------------------------------


def _f(value: float) -> str:
    return f"{value:.3f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "p=n/a"
    return f"p={value:.1e}" if value < 0.001 else f"p={value:.3f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --- shared pieces -----------------------------------------------------------------------------


def _check_pair(a: ModelEvaluation, b: ModelEvaluation) -> list[str]:
    """Check two evaluations cover the same rows; return the classes to score with."""
    if a.n_rows != b.n_rows:
        raise ValueError(
            f"models were scored on different rows: version {a.version} has {a.n_rows}, "
            f"version {b.version} has {b.n_rows}"
        )
    if a.row_ids is not None and b.row_ids is not None and not np.array_equal(a.row_ids, b.row_ids):
        raise ValueError(f"versions {a.version} and {b.version} were scored on different row ids")
    if not np.array_equal(a.y_true, b.y_true):
        raise ValueError(f"versions {a.version} and {b.version} have different true labels")
    if a.classes and b.classes and a.classes != b.classes:
        raise ValueError(f"versions {a.version} and {b.version} have different classes")
    return _classes_of(a, b)


def _classes_of(*evals: ModelEvaluation) -> list[str]:
    for e in evals:
        if e.classes:
            return list(e.classes)
    seen: set[str] = set()
    for e in evals:
        seen.update(e.y_true.tolist())
        seen.update(e.y_pred.tolist())
    classes = sorted(seen)
    if len(classes) < 2:
        raise ValueError(
            f"only {classes} seen in the labels and predictions; pass `classes` explicitly"
        )
    return classes


def _metric_names(policy: ChampionChallengerPolicy) -> list[str]:
    names = list(policy.evaluation_metrics)
    names += [m for m in policy.metric_floors if m not in names]
    return check_metric_names(names)


def _score(e: ModelEvaluation, classes: list[str], names: list[str]) -> dict[str, float]:
    if e.n_rows == 0:
        return {m: float("nan") for m in names}
    return compute_metrics(e.y_true, e.y_pred, e.probabilities, classes, names)


def _improvement(metric: str, champion: float, challenger: float, mode: str) -> float:
    """Oriented improvement, absolute or relative to the champion."""
    gain = challenger - champion if HIGHER_IS_BETTER[metric] else champion - challenger
    if mode == "absolute":
        return gain
    if champion == 0:
        return math.inf if gain > 0 else 0.0
    return gain / abs(champion)


def _fmt_improvement(value: float, mode: str) -> str:
    return f"{value:.1%}" if mode == "relative" else _f(value)


def _fmt_threshold(value: float, mode: str) -> str:
    return f"{value:.1%}" if mode == "relative" else f"{value:g}"


def _check_floors(
    metrics: dict[str, float], policy: ChampionChallengerPolicy
) -> tuple[bool, list[str]]:
    ok = True
    reasons: list[str] = []
    met: list[str] = []
    for metric, floor in policy.metric_floors.items():
        value = metrics.get(metric, float("nan"))
        if math.isnan(value):
            ok = False
            reasons.append(
                f"{metric} is undefined on these rows, so its floor {floor:g} cannot be checked."
            )
        elif HIGHER_IS_BETTER[metric] and value < floor:
            ok = False
            reasons.append(f"{metric} {_f(value)} is below its floor {floor:g}.")
        elif not HIGHER_IS_BETTER[metric] and value > floor:
            ok = False
            reasons.append(f"{metric} {_f(value)} is above its ceiling {floor:g}.")
        else:
            sign = ">=" if HIGHER_IS_BETTER[metric] else "<="
            met.append(f"{metric} {_f(value)} {sign} {floor:g}")
    if ok and met:
        reasons.append(f"Metric floors met: {', '.join(met)}.")
    return ok, reasons


class _Gate(BaseModel):
    """Outcome of the paired comparison (rules 2-3 of the offline gate)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    passed: bool
    improvement: float
    reasons: list[str]
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    comparisons: list[MetricComparison]
    test: SignificanceTest | None


def _compare(
    champion: ModelEvaluation,
    challenger: ModelEvaluation,
    classes: list[str],
    policy: ChampionChallengerPolicy,
    seed: int,
) -> _Gate:
    """Threshold, significance, guard rails and floors on the shared rows."""
    names = _metric_names(policy)
    primary = policy.primary_metric
    alpha = policy.significance_alpha
    mode = policy.improvement
    n = champion.n_rows
    m_a = _score(champion, classes, names)
    m_z = _score(challenger, classes, names)
    boot: dict[str, BootstrapResult] = {}
    if n:
        boot = paired_bootstrap(
            champion.y_true,
            champion.y_pred,
            challenger.y_pred,
            champion.probabilities,
            challenger.probabilities,
            classes,
            names,
            n_resamples=policy.bootstrap_resamples,
            seed=seed,
            alpha=alpha,
        )
    mcnemar = None
    if primary == "accuracy":
        mcnemar = mcnemar_exact(
            champion.y_pred == champion.y_true, challenger.y_pred == challenger.y_true
        )

    comparisons: list[MetricComparison] = []
    for metric in names:
        a, z = m_a[metric], m_z[metric]
        if math.isnan(a) or math.isnan(z):
            continue
        delta = z - a
        b = boot.get(metric)
        ci_low = ci_high = p_value = None
        if b is not None:
            # The bootstrap interval is of the improvement; the record holds the raw delta.
            lo, hi = (b.ci_low, b.ci_high) if HIGHER_IS_BETTER[metric] else (-b.ci_high, -b.ci_low)
            ci_low, ci_high, p_value = _finite(lo), _finite(hi), _finite(b.p_value)
        test_name = "paired_bootstrap" if b is not None else None
        if metric == "accuracy" and mcnemar is not None:
            p_value, test_name = mcnemar.p_value_challenger_better, "mcnemar_exact"
        comparisons.append(
            MetricComparison(
                metric=metric,
                champion=a,
                challenger=z,
                delta=delta,
                relative_delta=delta / abs(a) if a else None,
                ci_low=ci_low,
                ci_high=ci_high,
                p_value=p_value,
                test=test_name,
            )
        )

    reasons: list[str] = []
    passed = True
    a, z = m_a[primary], m_z[primary]
    improvement = float("nan")
    test: SignificanceTest | None = None
    if math.isnan(a) or math.isnan(z):
        passed = False
        reasons.append(
            f"The primary metric {primary} is undefined on these rows (for example a single "
            "class in the labels), so the challenger cannot be shown to be better."
        )
    else:
        improvement = _improvement(primary, a, z, mode)
        gain = _improvement(primary, a, z, "absolute")
        verb = "improved" if gain > 0 else ("worsened" if gain < 0 else "did not change")
        head = f"{primary} {verb} by {_f(abs(gain))} ({_f(a)} -> {_f(z)})"
        b = boot.get(primary)
        if mcnemar is not None:
            p_value = mcnemar.p_value_challenger_better
            significant = p_value < alpha
            sign = "<" if significant else ">="
            reasons.append(
                f"{head}; exact McNemar test: the challenger alone is right on {mcnemar.c} "
                f"rows, the champion alone on {mcnemar.b}, one-sided {_p(p_value)} "
                f"{sign} alpha {alpha:g}."
            )
            test = SignificanceTest(
                name="mcnemar_exact",
                statistic=mcnemar.statistic,
                p_value=p_value,
                sample_size=n,
                detail={
                    "b_champion_only_right": mcnemar.b,
                    "c_challenger_only_right": mcnemar.c,
                    "p_value_two_sided": mcnemar.p_value,
                    "alternative": "challenger better (one-sided)",
                },
            )
        elif b is not None and not math.isnan(b.p_value):
            p_value = b.p_value
            significant = p_value < alpha
            sign = "<" if significant else ">="
            reasons.append(
                f"{head}, {1 - alpha:.0%} CI of the improvement [{_f(b.ci_low)}, "
                f"{_f(b.ci_high)}], one-sided {_p(p_value)} {sign} alpha {alpha:g}."
            )
            test = SignificanceTest(
                name="paired_bootstrap",
                statistic=b.delta,
                p_value=p_value,
                sample_size=n,
                detail={
                    "improvement_ci_low": _finite(b.ci_low),
                    "improvement_ci_high": _finite(b.ci_high),
                    "n_resamples": b.n_resamples,
                    "n_valid_resamples": b.n_valid,
                    "seed": seed,
                    "alpha": alpha,
                    "method": "Poisson bootstrap, percentile interval",
                    "alternative": "challenger better (one-sided)",
                },
            )
        else:
            significant = False
            reasons.append(f"{head}; no paired test could be run on these rows.")
        if not significant:
            passed = False
            reasons.append(f"The change in {primary} is not significant at alpha {alpha:g}.")
            if mcnemar is None and b is not None and 1 / (b.n_valid + 1) >= alpha:
                reasons.append(
                    f"With {b.n_valid} valid resamples the smallest possible bootstrap p-value "
                    f"is {1 / (b.n_valid + 1):.4f}; raise bootstrap_resamples to at least "
                    f"{math.ceil(1 / alpha)}."
                )
        thr = policy.champion_threshold
        kind = "relative" if mode == "relative" else "absolute"
        if improvement >= thr - _TOLERANCE:
            reasons.append(
                f"The {kind} improvement {_fmt_improvement(improvement, mode)} meets "
                f"champion_threshold {_fmt_threshold(thr, mode)}."
            )
        else:
            passed = False
            reasons.append(
                f"The {kind} improvement {_fmt_improvement(improvement, mode)} is below "
                f"champion_threshold {_fmt_threshold(thr, mode)}."
            )

    # Guard rails on every other evaluation metric.
    limit = policy.max_metric_degradation
    others = [m for m in policy.evaluation_metrics if m != primary]
    rails_ok = True
    for metric in others:
        ma, mz = m_a[metric], m_z[metric]
        if math.isnan(ma) or math.isnan(mz):
            reasons.append(f"{metric} is undefined on these rows; it is not used in this decision.")
            continue
        gain = _improvement(metric, ma, mz, "absolute")
        if gain < -limit - _TOLERANCE:
            rails_ok = False
            reasons.append(
                f"Guard rail: {metric} worsened by {_f(-gain)} ({_f(ma)} -> {_f(mz)}), more "
                f"than max_metric_degradation {limit:g}."
            )
    if others and rails_ok:
        reasons.append(f"Guard rails hold: no other metric worsened by more than {limit:g}.")
    passed = passed and rails_ok

    floors_ok, floor_reasons = _check_floors(m_z, policy)
    reasons += floor_reasons
    passed = passed and floors_ok

    return _Gate(
        passed=passed,
        improvement=improvement,
        reasons=reasons,
        champion_metrics={k: v for k, v in m_a.items() if not math.isnan(v)},
        challenger_metrics={k: v for k, v in m_z.items() if not math.isnan(v)},
        comparisons=comparisons,
        test=test,
    )


def _record(
    decision: Decision,
    *,
    model_name: str,
    actor: Actor,
    dagster_run_id: str | None,
    champion: ModelEvaluation | None,
    challenger: ModelEvaluation,
    policy: ChampionChallengerPolicy,
    reasons: list[str],
    gate: _Gate | None = None,
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
        reasons=reasons,
    )
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
    n = challenger.n_rows
    min_rows = policy.min_holdout_rows
    rows_reason = (
        f"The holdout has {n} rows, fewer than min_holdout_rows {min_rows}; the comparison "
        "would not be trustworthy."
    )
    version = challenger.version

    if champion is None:
        classes = _classes_of(challenger)
        metrics = _score(challenger, classes, _metric_names(policy))
        shown = {k: v for k, v in metrics.items() if not math.isnan(v)}
        floors_ok, floor_reasons = _check_floors(metrics, policy)
        reasons = [] if n >= min_rows else [rows_reason]
        if shown:
            listed = ", ".join(f"{k} {_f(v)}" for k, v in shown.items())
            reasons.append(f"Version {version} on {n} holdout rows: {listed}.")
        reasons += floor_reasons
        if n >= min_rows and floors_ok:
            reasons.append(f"No champion yet: version {version} becomes the first champion.")
            return _record(Decision.BOOTSTRAP, reasons=reasons, challenger_metrics=shown, **common)
        reasons.append(
            f"No champion yet, and version {version} does not pass the checks above; "
            "nothing is promoted."
        )
        return _record(Decision.KEEP_CHAMPION, reasons=reasons, challenger_metrics=shown, **common)

    classes = _check_pair(champion, challenger)
    keep = f"Decision: keep champion version {champion.version}; version {version} is rejected."
    if n < min_rows:
        metrics = _score(challenger, classes, _metric_names(policy))
        shown = {k: v for k, v in metrics.items() if not math.isnan(v)}
        return _record(
            Decision.KEEP_CHAMPION,
            reasons=[rows_reason, keep],
            challenger_metrics=shown,
            **common,
        )

    gate = _compare(champion, challenger, classes, policy, seed)
    reasons = list(gate.reasons)
    if not gate.passed:
        return _record(Decision.KEEP_CHAMPION, reasons=[*reasons, keep], gate=gate, **common)

    duration = policy.shadow_mode_duration
    margin = policy.direct_promotion_margin
    mode = policy.improvement
    big = margin is not None and gate.improvement >= margin - _TOLERANCE
    shadow = (
        f"Decision: start a shadow test of version {version} for {format_duration(duration)} "
        f"on {policy.shadow_traffic_percent:g}% of traffic."
    )
    if not policy.auto_promotion:
        if duration.total_seconds() > 0:
            reasons.append(
                f"{MANUAL_PROMOTION_NOTE}: after the shadow test, promote by hand with "
                f"`mlops promote {version}`."
            )
            return _record(Decision.START_SHADOW, reasons=[*reasons, shadow], gate=gate, **common)
        reasons.append(
            f"Version {version} passed the offline gate, but {MANUAL_PROMOTION_NOTE}; promote "
            f"by hand with `mlops promote {version}`. Champion version {champion.version} stays."
        )
        return _record(Decision.KEEP_CHAMPION, reasons=reasons, gate=gate, **common)
    if duration.total_seconds() == 0:
        reasons.append(f"Decision: promote version {version} directly (shadow_mode_duration is 0).")
        return _record(Decision.PROMOTE, reasons=reasons, gate=gate, **common)
    if big:
        reasons.append(
            f"Decision: promote version {version} directly: the improvement "
            f"{_fmt_improvement(gate.improvement, mode)} reaches direct_promotion_margin "
            f"{_fmt_threshold(margin, mode)}."
        )
        return _record(Decision.PROMOTE, reasons=reasons, gate=gate, **common)
    return _record(Decision.START_SHADOW, reasons=[*reasons, shadow], gate=gate, **common)


# --- shadow test -------------------------------------------------------------------------------


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
    error_rate_tolerance: float = 0.01,
    max_latency_ratio: float | None = None,
) -> DecisionRecord:
    """Judge a shadow on labelled mirrored requests; see the module docstring."""
    common = {
        "model_name": model_name,
        "actor": actor,
        "dagster_run_id": dagster_run_id,
        "champion": champion,
        "challenger": shadow,
        "policy": policy,
    }
    classes = _check_pair(champion, shadow)
    version = shadow.version
    n = shadow.n_rows
    reject = f"Decision: end the shadow test of version {version} without promotion."
    reasons: list[str] = []

    ops_ok = True
    err_line = f"Error rate: shadow {shadow_error_rate:.2%}, champion {champion_error_rate:.2%}"
    if shadow_error_rate > champion_error_rate + error_rate_tolerance:
        ops_ok = False
        reasons.append(f"{err_line}: more than {error_rate_tolerance:.2%} above the champion's.")
    else:
        reasons.append(f"{err_line}.")
    if champion_p50_latency_ms is not None and shadow_p50_latency_ms is not None:
        lat_line = (
            f"p50 latency: shadow {shadow_p50_latency_ms:.1f} ms, champion "
            f"{champion_p50_latency_ms:.1f} ms"
        )
        if (
            max_latency_ratio is not None
            and shadow_p50_latency_ms > max_latency_ratio * champion_p50_latency_ms
        ):
            ops_ok = False
            reasons.append(f"{lat_line}: more than {max_latency_ratio:g} times the champion's.")
        else:
            reasons.append(f"{lat_line}.")
    if not ops_ok:
        return _record(Decision.REJECT, reasons=[*reasons, reject], **common)

    need = policy.shadow_min_labelled_samples
    if n < need:
        names = _metric_names(policy)
        shown = {k: v for k, v in _score(shadow, classes, names).items() if not math.isnan(v)}
        if extensions_so_far < policy.max_shadow_extensions:
            reasons.append(
                f"Only {n} labelled requests, fewer than shadow_min_labelled_samples {need}; "
                f"extension {extensions_so_far + 1} of {policy.max_shadow_extensions}."
            )
            return _record(
                Decision.EXTEND_SHADOW, reasons=reasons, challenger_metrics=shown, **common
            )
        reasons.append(
            f"Only {n} labelled requests, fewer than shadow_min_labelled_samples {need}, after "
            f"{extensions_so_far} extensions (max_shadow_extensions "
            f"{policy.max_shadow_extensions})."
        )
        return _record(
            Decision.REJECT, reasons=[*reasons, reject], challenger_metrics=shown, **common
        )

    gate = _compare(champion, shadow, classes, policy, seed)
    reasons += gate.reasons
    if not gate.passed:
        return _record(Decision.REJECT, reasons=[*reasons, reject], gate=gate, **common)
    if not policy.auto_promotion:
        reasons.append(
            f"Version {version} passed the shadow test, but {MANUAL_PROMOTION_NOTE}: it stays "
            f"in shadow, awaiting manual promotion with `mlops promote {version}` (or "
            f"`mlops reject {version}`)."
        )
        return _record(Decision.EXTEND_SHADOW, reasons=reasons, gate=gate, **common)
    reasons.append(f"Decision: promote version {version}; it passed the shadow test.")
    return _record(Decision.PROMOTE, reasons=reasons, gate=gate, **common)


# --- probation ---------------------------------------------------------------------------------


def check_probation(
    evaluated_metric: float,
    live_metric: float,
    live_samples: int,
    error_rate: float,
    policy: ChampionChallengerPolicy,
    *,
    metric: str | None = None,
    max_error_rate: float = 0.05,
    min_samples: int | None = None,
) -> tuple[bool, list[str]]:
    """Return (roll back?, reasons) for a new champion in probation; see the module docstring."""
    metric = metric or policy.primary_metric
    check_metric_names([metric])
    need = policy.shadow_min_labelled_samples if min_samples is None else min_samples
    reasons: list[str] = []
    rollback = False
    if error_rate > max_error_rate:
        rollback = True
        reasons.append(f"Live error rate {error_rate:.2%} is above the bound {max_error_rate:.2%}.")
    if live_samples < need:
        reasons.append(
            f"Only {live_samples} labelled live requests, fewer than {need}: live {metric} is "
            "not judged yet."
        )
    elif math.isnan(live_metric) or math.isnan(evaluated_metric):
        reasons.append(f"Live {metric} is undefined; it is not judged.")
    else:
        mode = policy.improvement
        drop = -_improvement(metric, evaluated_metric, live_metric, mode)
        shown = _fmt_improvement(drop, mode)
        limit = _fmt_threshold(policy.rollback_threshold, mode)
        if drop > policy.rollback_threshold + _TOLERANCE:
            rollback = True
            reasons.append(
                f"Live {metric} {_f(live_metric)} on {live_samples} requests fell {shown} below "
                f"its evaluation {_f(evaluated_metric)}, more than rollback_threshold {limit}."
            )
        else:
            reasons.append(
                f"Live {metric} {_f(live_metric)} on {live_samples} requests is within "
                f"rollback_threshold {limit} of its evaluation {_f(evaluated_metric)}."
            )
    if not rollback and error_rate <= max_error_rate:
        reasons.append(f"Live error rate {error_rate:.2%} is within {max_error_rate:.2%}.")
    return rollback, reasons


def verdict_rank(decision: Decision) -> int:
    """Order of offline verdicts: KEEP_CHAMPION < START_SHADOW < PROMOTE."""
    return VERDICT_ORDER[decision]
