"""The lifecycle schedule: every 6 hours (automation.schedule_cron) the cycle runs."""

import dagster as dg

from mlops_assets.jobs import challenger_cycle_job, lifecycle_maintenance
from mlops_assets.partitions import raw_files
from mlops_assets.sensors import raw_file_requests, scan_raw_files
from resources import LifecycleResource


def build_schedules(cron: str) -> list[dg.ScheduleDefinition]:
    """The cycle (new data) and maintenance (reconcile, labels, probation, retention)."""

    @dg.schedule(
        name="lifecycle_cycle_schedule",
        job=challenger_cycle_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Processes any raw file that has no partition yet (a safety net for the "
        "new-file sensor). Config: automation.schedule_cron.",
    )
    def cycle_schedule(
        context: dg.ScheduleEvaluationContext, lifecycle: LifecycleResource
    ) -> list[dg.RunRequest]:
        files, _ = scan_raw_files(lifecycle, None)
        known = set(context.instance.get_dynamic_partitions(raw_files.name))
        requests, new = raw_file_requests(files, known)
        if new:
            context.instance.add_dynamic_partitions(raw_files.name, new)
        return requests

    maintenance = dg.ScheduleDefinition(
        name="lifecycle_maintenance_schedule",
        job=lifecycle_maintenance,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reconcile, ingest labels, probation check and retention.",
    )
    return [cycle_schedule, maintenance]
