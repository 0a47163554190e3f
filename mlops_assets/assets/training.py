"""Training: a Ludwig challenger per validated file, registered in MLflow as a candidate."""

import dagster as dg

from mlops_assets import checks
from mlops_assets.assets.retries import retrying_when_down
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.training import TrainingOutcome
from mlops_assets.partitions import raw_files
from mlops_assets.validation import ValidationResult
from resources import LifecycleResource


@dg.asset(
    group_name="training",
    partitions_def=raw_files,
    kinds={"ludwig", "mlflow"},
    check_specs=checks.CHALLENGER_CHECKS,
    # With check specs Dagster cannot read the value type off the annotation.
    dagster_type=TrainingOutcome,
    description="A Ludwig ECD challenger trained on the validated file (backend=local), "
    "logged to MLflow and registered as a `candidate` version.",
)
def challenger_model(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    validated_features: ValidationResult,
) -> dg.MaterializeResult:
    """Train (or reuse the identical earlier training) and register the challenger."""
    lc = lifecycle.context()
    # MLflow down: the step is retried; a retry reuses a finished training, registers once.
    with retrying_when_down(context):
        outcome: TrainingOutcome = manager.train(
            lc, validated_features, dagster_run_id=context.run_id
        )
        champion = manager.champion_schema(lc)
    metadata = {
        "model_name": outcome.model_name,
        "model_version": outcome.version,
        "mlflow_run_id": outcome.run_id,
        "data_sha256": outcome.data_sha256,
        "ludwig_config_hash": outcome.config_hash,
        "holdout_rows": outcome.holdout_rows,
        "reused_existing_version": outcome.reused,
        "training_seconds": round(outcome.seconds, 2),
        **{f"holdout_{k}": float(v) for k, v in outcome.metrics.items()},
    }
    return dg.MaterializeResult(
        value=outcome,
        metadata=metadata,
        check_results=checks.challenger_results(lc.settings, outcome, champion),
        data_version=dg.DataVersion(f"v{outcome.version}"),
    )
