"""The lifecycle schedule: every 6 hours (cron in config) the cycle sweeps for work."""

import dagster as dg

from mlops_assets.lifecycle import manager
from resources import LifecycleResource


@dg.op(description="Finish or repair any half-done registry move (crash recovery).")
def reconcile_registry(context: dg.OpExecutionContext, lifecycle: LifecycleResource) -> int:
    """Run the decision engine's reconcile step."""
    repaired = manager.reconcile(lifecycle.settings())
    context.log.info(f"reconciled {len(repaired)} pending decision(s)")
    return len(repaired)


@dg.job(description="Periodic maintenance of the lifecycle: reconcile the registry.")
def lifecycle_maintenance() -> None:
    """Reconcile first; shadow expiry and retention join this job as they land."""
    reconcile_registry()


def build_cycle_schedule(cron: str) -> dg.ScheduleDefinition:
    """The cycle schedule on the configured cron (default every 6 hours)."""
    return dg.ScheduleDefinition(
        name="lifecycle_cycle_schedule",
        job=lifecycle_maintenance,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Runs the lifecycle maintenance cycle (config: automation.schedule_cron).",
    )
