"""Champion and challenger compared on the same rows: the evidence, and the gate's checks on it.

`ModelEvaluation` holds one model's predictions on the evaluation rows. `paired_scores` checks
that two evaluations cover the same rows (`check_pair`), recomputes every metric the policy
judges, and runs the paired bootstrap and, when the primary metric is `accuracy`, the exact
McNemar test. `comparisons` and `primary_test` turn that into the record's `MetricComparison`
rows and its `SignificanceTest`. `compare` applies the offline gate's rules 2-3 (threshold,
significance, guard rails, floors; specified in `policy.py`) to that evidence as typed checks;
the offline gate and the shadow test both use it.
"""

from __future__ import annotations

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
from mlops_assets.lifecycle.records import MetricComparison, SignificanceTest
from mlops_assets.lifecycle.stats import (
    BootstrapResult,
    McNemarResult,
    mcnemar_exact,
    paired_bootstrap,
)
from mlops_assets.lifecycle.verdict import Check, CheckName, check, gate_passed
from mlops_assets.settings import ChampionChallengerPolicy

# Float slack when comparing a difference of metrics with a policy number (0.75 - 0.70 < 0.05).
TOLERANCE = 1e-9


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


def finite(value: float | None) -> float | None:
    """The value, or None when it is missing, NaN or infinite."""
    return None if value is None or not math.isfinite(value) else float(value)


def defined(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics that are defined (not NaN)."""
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def check_pair(a: ModelEvaluation, b: ModelEvaluation) -> list[str]:
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
    return classes_of(a, b)


def classes_of(*evals: ModelEvaluation) -> list[str]:
    """The classes to score with: given explicitly, or every label and prediction seen."""
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


def metric_names(policy: ChampionChallengerPolicy) -> list[str]:
    """The metrics judged: `evaluation_metrics` plus any metric with a floor."""
    names = list(policy.evaluation_metrics)
    names += [m for m in policy.metric_floors if m not in names]
    return check_metric_names(names)


def score(e: ModelEvaluation, classes: list[str], names: list[str]) -> dict[str, float]:
    """One model's metrics on its rows (all NaN when there are none)."""
    if e.n_rows == 0:
        return {m: float("nan") for m in names}
    return compute_metrics(e.y_true, e.y_pred, e.probabilities, classes, names)


def improvement(metric: str, champion: float, challenger: float, mode: str) -> float:
    """Oriented improvement, absolute or relative to the champion."""
    gain = challenger - champion if HIGHER_IS_BETTER[metric] else champion - challenger
    if mode == "absolute":
        return gain
    if champion == 0:
        return math.inf if gain > 0 else 0.0
    return gain / abs(champion)


class PairedScores(BaseModel):
    """Both models' metrics on the shared rows, with the paired bootstrap and McNemar test."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    n: int
    champion: dict[str, float]
    challenger: dict[str, float]
    boot: dict[str, BootstrapResult]
    mcnemar: McNemarResult | None


def paired_scores(
    champion: ModelEvaluation,
    challenger: ModelEvaluation,
    classes: list[str],
    policy: ChampionChallengerPolicy,
    seed: int,
) -> PairedScores:
    """Score both models on the same rows and run the paired tests."""
    names = metric_names(policy)
    boot: dict[str, BootstrapResult] = {}
    if champion.n_rows:
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
            alpha=policy.significance_alpha,
        )
    mcnemar = None
    if policy.primary_metric == "accuracy":
        mcnemar = mcnemar_exact(
            champion.y_pred == champion.y_true, challenger.y_pred == challenger.y_true
        )
    return PairedScores(
        n=champion.n_rows,
        champion=score(champion, classes, names),
        challenger=score(challenger, classes, names),
        boot=boot,
        mcnemar=mcnemar,
    )


def comparisons(scores: PairedScores) -> list[MetricComparison]:
    """One `MetricComparison` per metric defined for both models."""
    out: list[MetricComparison] = []
    for metric, a in scores.champion.items():
        z = scores.challenger[metric]
        if math.isnan(a) or math.isnan(z):
            continue
        delta = z - a
        b = scores.boot.get(metric)
        ci_low = ci_high = p_value = None
        if b is not None:
            # The bootstrap interval is of the improvement; the record holds the raw delta.
            lo, hi = (b.ci_low, b.ci_high) if HIGHER_IS_BETTER[metric] else (-b.ci_high, -b.ci_low)
            ci_low, ci_high, p_value = finite(lo), finite(hi), finite(b.p_value)
        test_name = "paired_bootstrap" if b is not None else None
        if metric == "accuracy" and scores.mcnemar is not None:
            p_value, test_name = scores.mcnemar.p_value_challenger_better, "mcnemar_exact"
        out.append(
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
    return out


def primary_test(
    scores: PairedScores, policy: ChampionChallengerPolicy, seed: int
) -> SignificanceTest | None:
    """The one-sided test of the primary metric: exact McNemar for accuracy, else bootstrap.

    None when no test could be run (no bootstrap p-value on these rows).
    """
    mcnemar, b = scores.mcnemar, scores.boot.get(policy.primary_metric)
    if mcnemar is not None:
        return SignificanceTest(
            name="mcnemar_exact",
            statistic=mcnemar.statistic,
            p_value=mcnemar.p_value_challenger_better,
            sample_size=scores.n,
            detail={
                "b_champion_only_right": mcnemar.b,
                "c_challenger_only_right": mcnemar.c,
                "p_value_two_sided": mcnemar.p_value,
                "alternative": "challenger better (one-sided)",
            },
        )
    if b is None or math.isnan(b.p_value):
        return None
    return SignificanceTest(
        name="paired_bootstrap",
        statistic=b.delta,
        p_value=b.p_value,
        sample_size=scores.n,
        detail={
            "improvement_ci_low": finite(b.ci_low),
            "improvement_ci_high": finite(b.ci_high),
            "n_resamples": b.n_resamples,
            "n_valid_resamples": b.n_valid,
            "seed": seed,
            "alpha": policy.significance_alpha,
            "method": "Poisson bootstrap, percentile interval",
            "alternative": "challenger better (one-sided)",
        },
    )


# --- the offline gate's checks on the comparison (policy.py, offline rules 2-3) ------------------


class Gate(BaseModel):
    """Outcome of the paired comparison: its checks and the evidence for the record."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    checks: list[Check]
    improvement: float
    champion_metrics: dict[str, float]
    challenger_metrics: dict[str, float]
    comparisons: list[MetricComparison]
    test: SignificanceTest | None

    @property
    def passed(self) -> bool:
        """True when every check of the comparison passed."""
        return gate_passed(self.checks)


def _significance_check(
    scores: PairedScores, test: SignificanceTest | None, policy: ChampionChallengerPolicy
) -> Check:
    """Is the primary metric's improvement significant (one-sided p < `significance_alpha`)?"""
    primary, alpha = policy.primary_metric, policy.significance_alpha
    a, z = scores.champion[primary], scores.challenger[primary]
    detail: dict[str, Any] = {
        "champion": a,
        "challenger": z,
        "gain": improvement(primary, a, z, "absolute"),
        "test": test.name if test else None,
    }
    b = scores.boot.get(primary)
    if scores.mcnemar is not None:
        detail |= {"b": scores.mcnemar.b, "c": scores.mcnemar.c}
    elif b is not None:
        detail |= {"ci_low": b.ci_low, "ci_high": b.ci_high, "n_valid": b.n_valid}
    p_value = test.p_value if test else None
    significant = p_value is not None and p_value < alpha
    return check(
        CheckName.SIGNIFICANCE,
        significant,
        value=p_value,
        limit=alpha,
        metric=primary,
        detail=detail,
    )


def _primary_checks(
    scores: PairedScores, policy: ChampionChallengerPolicy, seed: int
) -> tuple[list[Check], float, SignificanceTest | None]:
    """Significance and threshold of the primary metric; (checks, improvement, test)."""
    primary, mode = policy.primary_metric, policy.improvement
    a, z = scores.champion[primary], scores.challenger[primary]
    limit = policy.champion_threshold
    if math.isnan(a) or math.isnan(z):
        undefined = check(
            CheckName.THRESHOLD, False, limit=limit, metric=primary, detail={"mode": mode}
        )
        return [undefined], float("nan"), None
    gain = improvement(primary, a, z, mode)
    test = primary_test(scores, policy, seed)
    thr = check(
        CheckName.THRESHOLD,
        gain >= limit - TOLERANCE,
        value=gain,
        limit=limit,
        metric=primary,
        detail={"mode": mode},
    )
    return [_significance_check(scores, test, policy), thr], gain, test


def _guard_rail_checks(scores: PairedScores, policy: ChampionChallengerPolicy) -> list[Check]:
    """No other evaluation metric may worsen by more than `max_metric_degradation`."""
    limit = policy.max_metric_degradation
    checks = []
    for metric in policy.evaluation_metrics:
        if metric == policy.primary_metric:
            continue
        a, z = scores.champion[metric], scores.challenger[metric]
        if math.isnan(a) or math.isnan(z):
            checks.append(
                check(CheckName.GUARD_RAIL, True, limit=limit, metric=metric, skipped=True)
            )
            continue
        worse = -improvement(metric, a, z, "absolute")
        checks.append(
            check(
                CheckName.GUARD_RAIL,
                worse <= limit + TOLERANCE,
                value=worse,
                limit=limit,
                metric=metric,
                detail={"champion": a, "challenger": z},
            )
        )
    return checks


def floor_checks(metrics: dict[str, float], policy: ChampionChallengerPolicy) -> list[Check]:
    """Each metric floor (a ceiling for `log_loss`); a floor on an undefined metric fails."""
    checks = []
    for metric, floor in policy.metric_floors.items():
        value = metrics.get(metric, float("nan"))
        higher = HIGHER_IS_BETTER[metric]
        ok = not math.isnan(value) and (value >= floor if higher else value <= floor)
        checks.append(
            check(
                CheckName.METRIC_FLOOR,
                ok,
                value=value,
                limit=floor,
                metric=metric,
                detail={"higher_is_better": higher},
            )
        )
    return checks


def compare(
    champion: ModelEvaluation,
    challenger: ModelEvaluation,
    classes: list[str],
    policy: ChampionChallengerPolicy,
    seed: int,
) -> Gate:
    """Threshold, significance, guard rails and floors on the shared rows."""
    scores = paired_scores(champion, challenger, classes, policy, seed)
    primary, improvement, test = _primary_checks(scores, policy, seed)
    checks = [
        *primary,
        *_guard_rail_checks(scores, policy),
        *floor_checks(scores.challenger, policy),
    ]
    return Gate(
        checks=checks,
        improvement=improvement,
        champion_metrics=defined(scores.champion),
        challenger_metrics=defined(scores.challenger),
        comparisons=comparisons(scores),
        test=test,
    )
