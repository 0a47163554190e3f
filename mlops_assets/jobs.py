"""Jobs: the per-file challenger cycle, the shadow-test judgement, and maintenance."""

import dagster as dg

from mlops_assets.actors import actor_from_run
from mlops_assets.partitions import raw_files
from resources import LifecycleResource

# Ingest -> validate -> training window -> train.
TRAIN_ASSETS = ["raw_data", "validated_features", "training_dataset", "challenger_model"]
CYCLE_ASSETS = [
    *TRAIN_ASSETS,
    "evaluation_report",
    "champion_deployment",
    # Beside training, not upstream of it: a drift failure never blocks the cycle's decision.
    "feature_drift",
]

challenger_cycle_job = dg.define_asset_job(
    "challenger_cycle",
    selection=dg.AssetSelection.assets(*CYCLE_ASSETS),
    partitions_def=raw_files,
    description="Ingest -> validate -> train -> evaluate -> decide for one raw file, "
    "and its feature drift against the champion.",
)

shadow_cycle_job = dg.define_asset_job(
    "shadow_cycle",
    selection=dg.AssetSelection.assets("shadow_evaluation"),
    description="Judge every expired shadow test and apply the decision.",
)


@dg.op(description="Finish or repair any half-done registry move (crash recovery).")
def reconcile_registry(context: dg.OpExecutionContext, lifecycle: LifecycleResource) -> int:
    """Run the decision engine's reconcile step."""
    from mlops_assets.lifecycle import manager

    repaired = manager.reconcile(lifecycle.context())
    context.log.info(f"reconciled {len(repaired)} pending decision(s)")
    return len(repaired)


@dg.op(description="Load label files from data/labels/ into the lifecycle store.")
def ingest_labels(context: dg.OpExecutionContext, lifecycle: LifecycleResource, after: int) -> int:
    """Ingest label files (processed files move to data/labels/processed/)."""
    from mlops_assets.lifecycle import labels

    result = labels.ingest_label_files(lifecycle.context())
    context.log.info(
        f"labels: {len(result.files)} file(s), {result.accepted} accepted, "
        f"{len(result.quarantined)} quarantined"
    )
    return after


@dg.op(description="Judge every expired shadow test (the safety net for a failed expiry run).")
def judge_expired_shadow_tests(
    context: dg.OpExecutionContext, lifecycle: LifecycleResource, after: int
) -> int:
    """Decide every shadow test past its expiry that is still open.

    The shadow-expiry sensor starts one run per expiry (its run key), so a run that failed has
    used its key; without this step nothing would judge that test again until `mlops cycle`.
    """
    from mlops_assets.lifecycle import shadow

    records = shadow.run_shadow_expiry(
        lifecycle.context(), actor=actor_from_run(context.run.tags), dagster_run_id=context.run_id
    )
    for rec in records:
        context.log.info(f"shadow v{rec.challenger_version}: {rec.decision} ({rec.status})")
    return after


@dg.op(description="Roll back a new champion whose live quality fell during probation.")
def probation_check(
    context: dg.OpExecutionContext, lifecycle: LifecycleResource, after: int
) -> int:
    """Apply ROLLBACK when the probation rules say so."""
    from mlops_assets.lifecycle import probation

    record = probation.run_probation(
        lifecycle.context(), actor=actor_from_run(context.run.tags), dagster_run_id=context.run_id
    )
    if record is not None:
        context.log.warning(f"ROLLBACK: {' '.join(record.reasons)}")
    return after


@dg.op(description="Prune old prediction-log rows and archive old rejected runs.")
def retention(context: dg.OpExecutionContext, lifecycle: LifecycleResource, after: int) -> None:
    """Apply `automation.retention` (never to champions or archived champions)."""
    from mlops_assets.lifecycle.retention import run_retention

    report = run_retention(lifecycle.context())
    context.log.info(f"retention: {report}")


@dg.job(
    description="Reconcile, ingest labels, judge expired shadow tests, probation check and "
    "retention."
)
def lifecycle_maintenance() -> None:
    """Periodic maintenance; also judges shadow tests whose own expiry run failed."""
    retention(probation_check(judge_expired_shadow_tests(ingest_labels(reconcile_registry()))))


@dg.job(description="Probation check alone (started by the probation sensor).")
def probation_job() -> None:
    """Check the new champion's live quality and roll back when it degraded."""
    probation_check(ingest_labels(reconcile_registry()))
