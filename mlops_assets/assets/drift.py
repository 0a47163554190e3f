"""Monitoring: feature drift of each validated file against the champion's training data."""

import dagster as dg

from mlops_assets import checks
from mlops_assets.assets.retries import retrying_when_down
from mlops_assets.partitions import raw_files
from mlops_assets.validation import ValidationResult
from resources import LifecycleResource


@dg.asset(
    group_name="monitoring",
    partitions_def=raw_files,
    kinds={"pandas", "scipy"},
    check_specs=checks.DRIFT_CHECKS,
    # Cheap, and beside training rather than upstream of it: with priority it runs first, so
    # the drift against the champion *before* this file's decision is on record.
    op_tags={"dagster/priority": "1"},
    description="Drift of the validated file against the champion's training data: PSI and "
    "Kolmogorov-Smirnov for number features, chi-square for categories. Stored in the "
    "lifecycle store; `drift_within_limits` warns (never blocks) when a feature drifted.",
)
def feature_drift(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    validated_features: ValidationResult,
) -> dg.MaterializeResult:
    """Compare the file with the champion's training data and record the result."""
    from mlops_assets.lifecycle.drift import drift_against_champion, results_markdown

    if validated_features.frame is None:
        raise dg.Failure(description=f"{validated_features.path} has no validated data")
    with retrying_when_down(context):
        report = drift_against_champion(
            lifecycle.context(), validated_features.frame, validated_features.sha256
        )
    stored = 0
    if report.computed:
        stored = lifecycle.store().record_drift(
            report.model_name,
            report.data_sha256,
            report.reference_version,
            report.results,
            dagster_run_id=context.run_id,
        )
    (context.log.warning if report.drifted_features else context.log.info)(report.note)
    metadata: dict = {
        "data_sha256": report.data_sha256,
        "reference_version": report.reference_version or "none",
        "reference_source": report.reference_source or "none",
        "reference_files": ", ".join(report.reference_files) or "none",
        "computed": report.computed,
        "num_drifted": len(report.drifted_features),
        "drifted_features": ", ".join(report.drifted_features) or "none",
        "n_reference": report.n_reference,
        "n_current": report.n_current,
        "stored_rows": stored,
        "note": report.note,
        "results": dg.MetadataValue.md(
            results_markdown(report.results) if report.results else report.note
        ),
    }
    # Numeric per-feature PSI, so the UI plots it across materialisations.
    for r in report.results:
        if r.method == "psi" and r.statistic == r.statistic:  # not NaN
            metadata[f"psi.{r.feature}"] = float(r.statistic)
    return dg.MaterializeResult(metadata=metadata, check_results=checks.drift_results(report))
