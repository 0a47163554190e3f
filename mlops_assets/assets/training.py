"""Training: each validated file's training window, and the Ludwig challenger trained on it."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from mlops_assets import checks
from mlops_assets.assets.retries import retrying_when_down
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.training import TrainingOutcome
from mlops_assets.lifecycle.window import TrainingData
from mlops_assets.partitions import raw_files
from mlops_assets.validation import ValidationResult
from resources import LifecycleResource


def window_markdown(data: TrainingData) -> str:
    """The window's files as a Markdown table (newest first), for the asset's metadata."""
    lines = ["| file | sha256 | rows taken | rows in file | modified |", "|---|---|---|---|---|"]
    for f in data.files:
        when = datetime.fromtimestamp(f.mtime, UTC).isoformat(timespec="seconds")
        lines.append(f"| {Path(f.path).name} | {f.sha256} | {f.rows} | {f.file_rows} | {when} |")
    lines += [f"\nleft out: {why}" for why in data.skipped]
    return "\n".join(lines)


@dg.asset(
    group_name="training",
    partitions_def=raw_files,
    kinds={"pandas"},
    description="The rows a challenger trains on: the validated file and the older validated "
    "files `training.window` selects (newest first, capped at `training.max_rows`). The "
    "holdout comes from this partition's file alone.",
)
def training_dataset(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    validated_features: ValidationResult,
) -> dg.MaterializeResult[TrainingData]:
    """Select and stack the window's files; every file and its sha256 is in the metadata."""
    if not validated_features.ok:
        raise dg.Failure(description=f"{validated_features.path} did not pass validation")
    lc = lifecycle.context()
    with retrying_when_down(context):  # the older files are checked against the champion
        data = manager.training_window(lc, validated_features)
    context.log.info(
        f"window {data.window}: {len(data.frame)} rows from {len(data.files)} file(s)"
        + (f", {len(data.skipped)} left out" if data.skipped else "")
    )
    return dg.MaterializeResult(
        value=data,
        metadata={
            "window": data.window,
            "max_rows": data.max_rows,
            "files": len(data.files),
            "holdout_source": Path(data.files[0].path).name,
            "data_key": data.data_key,
            "dagster/row_count": len(data.frame),
            "data_files": dg.MetadataValue.md(window_markdown(data)),
        },
        data_version=dg.DataVersion(data.data_key),
    )


@dg.asset(
    group_name="training",
    partitions_def=raw_files,
    kinds={"ludwig", "mlflow"},
    check_specs=checks.CHALLENGER_CHECKS,
    # With check specs Dagster cannot read the value type off the annotation.
    dagster_type=TrainingOutcome,
    description="A Ludwig ECD challenger trained on the training window (backend=local), "
    "logged to MLflow and registered as a `candidate` version.",
)
def challenger_model(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    training_dataset: TrainingData,
) -> dg.MaterializeResult:
    """Train (or reuse the identical earlier training) and register the challenger."""
    lc = lifecycle.context()
    # MLflow down: the step is retried; a retry reuses a finished training, registers once.
    with retrying_when_down(context):
        outcome: TrainingOutcome = manager.train(
            lc, training_dataset, dagster_run_id=context.run_id
        )
        champion = manager.champion_schema(lc)
    metadata = {
        "model_name": outcome.model_name,
        "model_version": outcome.version,
        "mlflow_run_id": outcome.run_id,
        "data_sha256": outcome.data_sha256,
        "data_files": len(outcome.data_files),
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
