"""Asset checks: blocking quality gates that stop everything downstream when they fail, and
warnings (drift) that inform the decision without blocking anything.

The specs are attached to the assets (`check_specs=`) and the assets emit the results, which
keeps the checks working per partition; the logic lives here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from mlops_assets.lifecycle.drift import DriftReport
    from mlops_assets.lifecycle.evaluation import EvaluationResult
    from mlops_assets.lifecycle.schema import InputSchema
    from mlops_assets.lifecycle.training import TrainingOutcome
    from mlops_assets.settings import Settings
    from mlops_assets.validation import ValidationResult

VALIDATION_CHECKS = [
    dg.AssetCheckSpec(
        "passes_schema",
        asset="validated_features",
        blocking=True,
        description="Types, ranges, categories, nullability, target present and varied, "
        "minimum rows. A failing file is quarantined with a report.",
    )
]

CHALLENGER_CHECKS = [
    dg.AssetCheckSpec(
        "enough_holdout_rows",
        asset="challenger_model",
        blocking=True,
        description="The holdout has at least champion_challenger.min_holdout_rows rows.",
    ),
    dg.AssetCheckSpec(
        "metrics_above_floors",
        asset="challenger_model",
        blocking=True,
        description="Holdout metrics are at or above champion_challenger.metric_floors.",
    ),
    dg.AssetCheckSpec(
        "input_schema_compatible",
        asset="challenger_model",
        blocking=True,
        description="The inputs match the champion's, or the change is recorded.",
    ),
]

EVALUATION_CHECKS = [
    dg.AssetCheckSpec(
        "no_nan_predictions",
        asset="evaluation_report",
        blocking=True,
        description="The challenger gives a finite probability for every holdout row.",
    )
]

DRIFT_CHECKS = [
    dg.AssetCheckSpec(
        "drift_within_limits",
        asset="feature_drift",
        # A warning, never a gate: drifted data is exactly what a challenger should learn from.
        blocking=False,
        description="No feature of the file drifted from the champion's training data "
        "(PSI, Kolmogorov-Smirnov, chi-square). A failure warns; it blocks nothing.",
    )
]


def problems_markdown(result: ValidationResult) -> str:
    """A Markdown table of every failing validation check."""
    lines = ["| check | column | problem |", "|---|---|---|"]
    for p in result.problems:
        lines.append(f"| {p.check} | {p.column or ''} | {p.message} |")
    return "\n".join(lines)


def validation_results(result: ValidationResult) -> list[dg.AssetCheckResult]:
    """The result of `passes_schema` for one validated file."""
    return [
        dg.AssetCheckResult(
            check_name="passes_schema",
            asset_key="validated_features",
            passed=result.ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "problems": len(result.problems),
                "details": dg.MetadataValue.md(problems_markdown(result))
                if result.problems
                else "none",
            },
        )
    ]


def challenger_results(
    settings: Settings, outcome: TrainingOutcome, champion: InputSchema | None
) -> list[dg.AssetCheckResult]:
    """Results of the challenger's blocking checks."""
    from mlops_assets.lifecycle.evaluation import schema_change

    policy = settings.policy
    holdout_rows = outcome.holdout_rows
    floors = {
        metric: (outcome.metrics.get(metric, math.nan), floor)
        for metric, floor in policy.metric_floors.items()
    }
    below = {m: v for m, (v, f) in floors.items() if not (v >= f)}
    changes = schema_change(champion, outcome.schema_) if champion else []
    return [
        dg.AssetCheckResult(
            check_name="enough_holdout_rows",
            asset_key="challenger_model",
            passed=holdout_rows >= policy.min_holdout_rows,
            metadata={"holdout_rows": holdout_rows, "minimum": policy.min_holdout_rows},
        ),
        dg.AssetCheckResult(
            check_name="metrics_above_floors",
            asset_key="challenger_model",
            passed=not below,
            metadata={
                "below_floor": ", ".join(f"{m}={v:.4f}" for m, v in below.items()) or "none",
                **{f"{m} (floor {f})": float(v) for m, (v, f) in floors.items()},
            },
        ),
        dg.AssetCheckResult(
            check_name="input_schema_compatible",
            asset_key="challenger_model",
            # A change is allowed but recorded: it shows as a warning, not a block.
            passed=not changes,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "changes": "; ".join(changes) or "none",
                "fingerprint": outcome.schema_.fingerprint(),
            },
        ),
    ]


def evaluation_results(result: EvaluationResult) -> list[dg.AssetCheckResult]:
    """Result of `no_nan_predictions`."""
    return [
        dg.AssetCheckResult(
            check_name="no_nan_predictions",
            asset_key="evaluation_report",
            passed=result.challenger_nan_predictions == 0,
            metadata={
                "nan_rows": result.challenger_nan_predictions,
                "holdout_rows": result.holdout_rows,
            },
        )
    ]


def drift_results(report: DriftReport) -> list[dg.AssetCheckResult]:
    """Result of `drift_within_limits` (severity WARN; passes when drift was not computed)."""
    drifted = report.drifted_features
    return [
        dg.AssetCheckResult(
            check_name="drift_within_limits",
            asset_key="feature_drift",
            passed=not drifted,
            severity=dg.AssetCheckSeverity.WARN,
            description=report.note,
            metadata={
                "drifted_features": ", ".join(drifted) or "none",
                "num_drifted": len(drifted),
                "computed": report.computed,
                "reference_version": report.reference_version or "none",
            },
        )
    ]
