"""Verdicts as data: the typed checks a lifecycle decision is made of, and their reasons.

Every rule that decides an outcome in `policy.py` yields one `Check`: the rule's `name`
(`CheckName`), whether it `passed`, the measured `value`, the `limit` it was held to, and, for
per-metric rules, the `metric`. `detail` holds the extra numbers the reasons quote. The policy
derives the decision from the checks alone, and `explain` derives every reason sentence from the
checks alone, through the templates in `TEMPLATES` (one place, so that a sentence can be reworded
without touching a rule). The registry reads the checks (`awaiting_manual_promotion`), never a
sentence: rewording a template changes no decision and no registry move.

Two kinds of check:
- *gate* checks (every name outside `ROUTE_CHECKS`): a failure blocks the challenger
  (`KEEP_CHAMPION` offline, `REJECT` in a shadow test) or, in probation, rolls back;
- *route* checks (`ROUTE_CHECKS`) choose among the outcomes of a challenger that passed the gate.
  Their `passed` means "the condition holds": `auto_promotion` is on, a shadow test is configured
  (`shadow_mode_duration` > 0), the improvement reaches `direct_promotion_margin`, another
  extension is allowed (`max_shadow_extensions`).

A guard rail on an undefined metric is `skipped` (it passes and does not count). Undefined values
are None; an infinite relative improvement (the champion scored 0) is kept as infinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.lifecycle.states import Decision

if TYPE_CHECKING:
    from mlops_assets.lifecycle.records import DecisionRecord


class CheckName(StrEnum):
    """Every rule that decides an outcome (named after the policy key it applies)."""

    MIN_HOLDOUT_ROWS = "min_holdout_rows"
    SIGNIFICANCE = "significance_alpha"
    THRESHOLD = "champion_threshold"
    GUARD_RAIL = "max_metric_degradation"  # one per other evaluation metric
    METRIC_FLOOR = "metric_floors"  # one per floor
    ERROR_RATE = "error_rate_tolerance"  # shadow test: shadow vs champion
    LATENCY = "max_latency_ratio"  # shadow test: p50 latency
    LABELLED_SAMPLES = "shadow_min_labelled_samples"  # shadow test and probation
    SHADOW_EXTENSIONS = "max_shadow_extensions"
    AUTO_PROMOTION = "auto_promotion"
    SHADOW_DURATION = "shadow_mode_duration"
    DIRECT_PROMOTION = "direct_promotion_margin"
    LIVE_ERROR_RATE = "max_error_rate"  # probation
    ROLLBACK_THRESHOLD = "rollback_threshold"  # probation


ROUTE_CHECKS = frozenset(
    {
        CheckName.SHADOW_EXTENSIONS,
        CheckName.AUTO_PROMOTION,
        CheckName.SHADOW_DURATION,
        CheckName.DIRECT_PROMOTION,
    }
)


class Stage(StrEnum):
    """The lifecycle step a verdict belongs to."""

    OFFLINE = "offline"
    SHADOW = "shadow"
    PROBATION = "probation"


class Check(BaseModel):
    """One rule applied to one verdict."""

    # Infinity survives a JSON round trip (the lifecycle store keeps records as JSON).
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    name: CheckName
    passed: bool
    value: float | None = None
    limit: float | None = None
    metric: str | None = None
    skipped: bool = False
    detail: dict[str, int | float | str | bool | None] = Field(default_factory=dict)


def check(name: CheckName, passed: bool, **fields: Any) -> Check:
    """A Check, with NaN values stored as None (undefined)."""
    for key in ("value", "limit"):
        if isinstance(fields.get(key), float) and math.isnan(fields[key]):
            fields[key] = None
    detail = {k: _defined(v) for k, v in fields.pop("detail", {}).items()}
    return Check(name=name, passed=bool(passed), detail=detail, **fields)


def _defined(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def find(checks: Iterable[Check], name: CheckName) -> Check | None:
    """The first check of that name, or None."""
    return next((c for c in checks if c.name == name), None)


def holds(checks: Iterable[Check], name: CheckName) -> bool:
    """True when a check of that name is present and passed."""
    found = find(checks, name)
    return found is not None and found.passed


def gate_passed(checks: Iterable[Check]) -> bool:
    """True when every gate check (not a route check) passed."""
    return all(c.passed for c in checks if c.name not in ROUTE_CHECKS)


def awaiting_manual_promotion(record: DecisionRecord) -> bool:
    """True when the challenger passed but `auto_promotion: false` leaves promotion to a person.

    Read from the record's checks only. On a KEEP_CHAMPION record this means: keep the version a
    `candidate`, do not reject it. A record stored before checks existed has none, so it is
    never awaiting: re-applied, such a KEEP_CHAMPION rejects its candidate.
    """
    auto = find(record.checks, CheckName.AUTO_PROMOTION)
    return auto is not None and not auto.passed and gate_passed(record.checks)


# --- the sentences -----------------------------------------------------------------------------

# Every reason sentence, keyed by what it explains. Fields are filled by `explain`.
TEMPLATES: dict[str, str] = {
    "min_holdout_rows.failed": (
        "The holdout has {value} rows, fewer than min_holdout_rows {limit}; the comparison "
        "would not be trustworthy."
    ),
    "bootstrap.metrics": "Version {version} on {n} holdout rows: {metrics}.",
    "bootstrap.metric": "{metric} {value}",
    "error_rate.passed": "Error rate: shadow {value}, champion {champion}.",
    "error_rate.failed": (
        "Error rate: shadow {value}, champion {champion}: more than {tolerance} above the "
        "champion's."
    ),
    "latency.passed": "p50 latency: shadow {value} ms, champion {champion} ms.",
    "latency.failed": (
        "p50 latency: shadow {value} ms, champion {champion} ms: more than {ratio} times the "
        "champion's."
    ),
    "labelled_samples.extend": (
        "Only {value} labelled requests, fewer than shadow_min_labelled_samples {limit}; "
        "extension {next} of {max}."
    ),
    "labelled_samples.exhausted": (
        "Only {value} labelled requests, fewer than shadow_min_labelled_samples {limit}, after "
        "{done} extensions (max_shadow_extensions {max})."
    ),
    "primary.undefined": (
        "The primary metric {metric} is undefined on these rows (for example a single class in "
        "the labels), so the challenger cannot be shown to be better."
    ),
    "primary.change": "{metric} {verb} by {gain} ({champion} -> {challenger})",
    "primary.improved": "improved",
    "primary.worsened": "worsened",
    "primary.unchanged": "did not change",
    "significance.mcnemar": (
        "{change}; exact McNemar test: the challenger alone is right on {c} rows, the champion "
        "alone on {b}, one-sided {p} {sign} alpha {alpha}."
    ),
    "significance.bootstrap": (
        "{change}, {level} CI of the improvement [{ci_low}, {ci_high}], one-sided {p} {sign} "
        "alpha {alpha}."
    ),
    "significance.no_test": "{change}; no paired test could be run on these rows.",
    "significance.failed": "The change in {metric} is not significant at alpha {alpha}.",
    "significance.resamples": (
        "With {n_valid} valid resamples the smallest possible bootstrap p-value is {min_p}; "
        "raise bootstrap_resamples to at least {need}."
    ),
    "champion_threshold.passed": "The {kind} improvement {value} meets champion_threshold {limit}.",
    "champion_threshold.failed": (
        "The {kind} improvement {value} is below champion_threshold {limit}."
    ),
    "guard_rail.undefined": "{metric} is undefined on these rows; it is not used in this decision.",
    "guard_rail.failed": (
        "Guard rail: {metric} worsened by {value} ({champion} -> {challenger}), more than "
        "max_metric_degradation {limit}."
    ),
    "guard_rail.held": "Guard rails hold: no other metric worsened by more than {limit}.",
    "metric_floor.undefined": (
        "{metric} is undefined on these rows, so its floor {limit} cannot be checked."
    ),
    "metric_floor.below": "{metric} {value} is below its floor {limit}.",
    "metric_floor.above": "{metric} {value} is above its ceiling {limit}.",
    "metric_floor.met": "{metric} {value} {sign} {limit}",
    "metric_floor.all_met": "Metric floors met: {met}.",
    "offline.bootstrap": "No champion yet: version {version} becomes the first champion.",
    "offline.no_champion": (
        "No champion yet, and version {version} does not pass the checks above; nothing is "
        "promoted."
    ),
    "offline.keep": "Decision: keep champion version {champion}; version {version} is rejected.",
    "offline.manual_keep": (
        "Version {version} passed the offline gate, but auto_promotion is off; promote by hand "
        "with `mlops promote {version}`. Champion version {champion} stays."
    ),
    "offline.manual_shadow": (
        "auto_promotion is off: after the shadow test, promote by hand with "
        "`mlops promote {version}`."
    ),
    "offline.shadow": (
        "Decision: start a shadow test of version {version} for {duration} on {traffic}% of "
        "traffic."
    ),
    "offline.promote_now": (
        "Decision: promote version {version} directly (shadow_mode_duration is 0)."
    ),
    "offline.promote_margin": (
        "Decision: promote version {version} directly: the improvement {value} reaches "
        "direct_promotion_margin {limit}."
    ),
    "shadow.reject": "Decision: end the shadow test of version {version} without promotion.",
    "shadow.manual": (
        "Version {version} passed the shadow test, but auto_promotion is off: it stays in "
        "shadow, awaiting manual promotion with `mlops promote {version}` (or "
        "`mlops reject {version}`)."
    ),
    "shadow.promote": "Decision: promote version {version}; it passed the shadow test.",
    "probation.error_rate.failed": "Live error rate {value} is above the bound {limit}.",
    "probation.error_rate.passed": "Live error rate {value} is within {limit}.",
    "probation.samples.failed": (
        "Only {value} labelled live requests, fewer than {limit}: live {metric} is not judged yet."
    ),
    "probation.metric.undefined": "Live {metric} is undefined; it is not judged.",
    "probation.metric.failed": (
        "Live {metric} {live} on {n} requests fell {value} below its evaluation {evaluated}, more "
        "than rollback_threshold {limit}."
    ),
    "probation.metric.passed": (
        "Live {metric} {live} on {n} requests is within rollback_threshold {limit} of its "
        "evaluation {evaluated}."
    ),
}


def _say(key: str, **fields: Any) -> str:
    return TEMPLATES[key].format(**fields)


# --- number formats ----------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    """A metric value with three decimals."""
    return f"{math.nan if value is None else value:.3f}"


def fmt_p(value: float | None) -> str:
    """A p-value as the reasons quote it."""
    if value is None or math.isnan(value):
        return "p=n/a"
    return f"p={value:.1e}" if value < 0.001 else f"p={value:.3f}"


def fmt_improvement(value: float | None, mode: str) -> str:
    """An improvement: a percentage when relative, three decimals when absolute."""
    value = math.nan if value is None else value
    return f"{value:.1%}" if mode == "relative" else fmt(value)


def fmt_threshold(value: float, mode: str) -> str:
    """A policy number in the units of `improvement`."""
    return f"{value:.1%}" if mode == "relative" else f"{value:g}"


def _mode(c: Check) -> str:
    return str(c.detail.get("mode", "absolute"))


# --- explain -----------------------------------------------------------------------------------


def explain(
    stage: Stage, checks: Sequence[Check], record: DecisionRecord | None = None
) -> list[str]:
    """Every reason sentence of a verdict, derived from its checks, in a fixed order.

    `record` (the decision built from these checks) names the versions and the decision; a
    probation verdict has none.
    """
    if stage == Stage.PROBATION:
        return _explain_probation(checks)
    if record is None:
        raise ValueError(f"a {stage.value} verdict is explained with its decision record")
    lines = _operations(checks) + _samples(checks)
    if stage == Stage.OFFLINE and record.champion_version is None:
        lines += _bootstrap_metrics(record)
    lines += _primary(checks) + _guard_rails(checks) + _floors(checks)
    lines += _decision(stage, checks, record)
    return lines


def _operations(checks: Sequence[Check]) -> list[str]:
    lines = []
    err = find(checks, CheckName.ERROR_RATE)
    if err is not None:
        lines.append(
            _say(
                f"error_rate.{'passed' if err.passed else 'failed'}",
                value=f"{err.value:.2%}",
                champion=f"{err.detail['champion']:.2%}",
                tolerance=f"{err.detail['tolerance']:.2%}",
            )
        )
    lat = find(checks, CheckName.LATENCY)
    if lat is not None:
        lines.append(
            _say(
                f"latency.{'passed' if lat.passed else 'failed'}",
                value=f"{lat.value:.1f}",
                champion=f"{lat.detail['champion']:.1f}",
                ratio=f"{lat.detail['ratio']:g}" if lat.detail.get("ratio") is not None else "",
            )
        )
    return lines


def _samples(checks: Sequence[Check]) -> list[str]:
    rows = find(checks, CheckName.MIN_HOLDOUT_ROWS)
    if rows is not None and not rows.passed:
        return [_say("min_holdout_rows.failed", value=int(rows.value), limit=int(rows.limit))]
    labelled = find(checks, CheckName.LABELLED_SAMPLES)
    more = find(checks, CheckName.SHADOW_EXTENSIONS)
    if labelled is None or labelled.passed or more is None:
        return []
    done, most = int(more.value), int(more.limit)
    key = "labelled_samples.extend" if more.passed else "labelled_samples.exhausted"
    fields = {"value": int(labelled.value), "limit": int(labelled.limit), "max": most}
    return [_say(key, next=done + 1, done=done, **fields)]


def _bootstrap_metrics(record: DecisionRecord) -> list[str]:
    shown = record.challenger_metrics
    if not shown:
        return []
    listed = ", ".join(_say("bootstrap.metric", metric=k, value=fmt(v)) for k, v in shown.items())
    return [
        _say(
            "bootstrap.metrics",
            version=record.challenger_version,
            n=record.sample_size,
            metrics=listed,
        )
    ]


def _primary(checks: Sequence[Check]) -> list[str]:
    sig = find(checks, CheckName.SIGNIFICANCE)
    thr = find(checks, CheckName.THRESHOLD)
    if thr is None:
        return []
    if thr.value is None:
        return [_say("primary.undefined", metric=thr.metric)]
    lines = _significance(sig) if sig is not None else []
    mode = _mode(thr)
    lines.append(
        _say(
            f"champion_threshold.{'passed' if thr.passed else 'failed'}",
            kind="relative" if mode == "relative" else "absolute",
            value=fmt_improvement(thr.value, mode),
            limit=fmt_threshold(thr.limit, mode),
        )
    )
    return lines


def _significance(sig: Check) -> list[str]:
    d = sig.detail
    a, z = float(d["champion"]), float(d["challenger"])
    gain = float(d["gain"])
    verb = "improved" if gain > 0 else ("worsened" if gain < 0 else "unchanged")
    change = _say(
        "primary.change",
        metric=sig.metric,
        verb=_say(f"primary.{verb}"),
        gain=fmt(abs(gain)),
        champion=fmt(a),
        challenger=fmt(z),
    )
    alpha = float(sig.limit)
    common = {"p": fmt_p(sig.value), "sign": "<" if sig.passed else ">=", "alpha": f"{alpha:g}"}
    if d.get("test") == "mcnemar_exact":
        lines = [_say("significance.mcnemar", change=change, b=d["b"], c=d["c"], **common)]
    elif d.get("test") == "paired_bootstrap":
        ci = {"ci_low": fmt(d["ci_low"]), "ci_high": fmt(d["ci_high"])}
        lines = [
            _say("significance.bootstrap", change=change, level=f"{1 - alpha:.0%}", **ci, **common)
        ]
    else:
        lines = [_say("significance.no_test", change=change)]
    if not sig.passed:
        lines.append(_say("significance.failed", metric=sig.metric, alpha=f"{alpha:g}"))
        n_valid = d.get("n_valid")
        if d.get("test") != "mcnemar_exact" and n_valid is not None and 1 / (n_valid + 1) >= alpha:
            lines.append(
                _say(
                    "significance.resamples",
                    n_valid=int(n_valid),
                    min_p=f"{1 / (n_valid + 1):.4f}",
                    need=math.ceil(1 / alpha),
                )
            )
    return lines


def _guard_rails(checks: Sequence[Check]) -> list[str]:
    rails = [c for c in checks if c.name == CheckName.GUARD_RAIL]
    lines = []
    for c in rails:
        if c.skipped:
            lines.append(_say("guard_rail.undefined", metric=c.metric))
        elif not c.passed:
            lines.append(
                _say(
                    "guard_rail.failed",
                    metric=c.metric,
                    value=fmt(c.value),
                    champion=fmt(c.detail["champion"]),
                    challenger=fmt(c.detail["challenger"]),
                    limit=f"{c.limit:g}",
                )
            )
    if rails and all(c.passed for c in rails):
        lines.append(_say("guard_rail.held", limit=f"{rails[0].limit:g}"))
    return lines


def _floors(checks: Sequence[Check]) -> list[str]:
    floors = [c for c in checks if c.name == CheckName.METRIC_FLOOR]
    lines, met = [], []
    for c in floors:
        higher = bool(c.detail.get("higher_is_better", True))
        fields = {"metric": c.metric, "value": fmt(c.value), "limit": f"{c.limit:g}"}
        if c.value is None:
            lines.append(_say("metric_floor.undefined", **fields))
        elif not c.passed:
            lines.append(_say("metric_floor.below" if higher else "metric_floor.above", **fields))
        else:
            met.append(_say("metric_floor.met", sign=">=" if higher else "<=", **fields))
    if floors and all(c.passed for c in floors):
        lines.append(_say("metric_floor.all_met", met=", ".join(met)))
    return lines


def _decision(stage: Stage, checks: Sequence[Check], record: DecisionRecord) -> list[str]:
    d = record.decision
    who = {"version": record.challenger_version, "champion": record.champion_version}
    manual = find(checks, CheckName.AUTO_PROMOTION)
    manual_off = manual is not None and not manual.passed
    if stage == Stage.SHADOW:
        if d == Decision.REJECT:
            return [_say("shadow.reject", **who)]
        if d == Decision.PROMOTE:
            return [_say("shadow.promote", **who)]
        return [_say("shadow.manual", **who)] if manual_off else []
    if record.champion_version is None:
        return [
            _say("offline.bootstrap" if d == Decision.BOOTSTRAP else "offline.no_champion", **who)
        ]
    if d == Decision.KEEP_CHAMPION:
        return [_say("offline.manual_keep" if manual_off else "offline.keep", **who)]
    shadow = find(checks, CheckName.SHADOW_DURATION)
    if d == Decision.START_SHADOW:
        lines = [_say("offline.manual_shadow", **who)] if manual_off else []
        duration, traffic = shadow.detail["duration"], float(shadow.detail["traffic_percent"])
        return [*lines, _say("offline.shadow", duration=duration, traffic=f"{traffic:g}", **who)]
    if shadow is not None and not shadow.passed:
        return [_say("offline.promote_now", **who)]
    margin = find(checks, CheckName.DIRECT_PROMOTION)
    mode = str(margin.detail.get("mode", "absolute"))
    return [
        _say(
            "offline.promote_margin",
            value=fmt_improvement(margin.value, mode),
            limit=fmt_threshold(margin.limit, mode),
            **who,
        )
    ]


def _explain_probation(checks: Sequence[Check]) -> list[str]:
    err = find(checks, CheckName.LIVE_ERROR_RATE)
    samples = find(checks, CheckName.LABELLED_SAMPLES)
    metric = find(checks, CheckName.ROLLBACK_THRESHOLD)
    rate = {"value": f"{err.value:.2%}", "limit": f"{err.limit:.2%}"}
    lines = [] if err.passed else [_say("probation.error_rate.failed", **rate)]
    if samples is not None and not samples.passed:
        lines.append(
            _say(
                "probation.samples.failed",
                value=int(samples.value),
                limit=int(samples.limit),
                metric=samples.metric,
            )
        )
    elif metric is not None and metric.skipped:
        lines.append(_say("probation.metric.undefined", metric=metric.metric))
    elif metric is not None:
        mode = _mode(metric)
        lines.append(
            _say(
                f"probation.metric.{'passed' if metric.passed else 'failed'}",
                metric=metric.metric,
                live=fmt(metric.detail["live"]),
                n=int(metric.detail["samples"]),
                value=fmt_improvement(metric.value, mode),
                evaluated=fmt(metric.detail["evaluated"]),
                limit=fmt_threshold(metric.limit, mode),
            )
        )
    if gate_passed(c for c in checks if c.name != CheckName.LABELLED_SAMPLES):
        lines.append(_say("probation.error_rate.passed", **rate))
    return lines
