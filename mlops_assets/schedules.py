"""The lifecycle schedule: every 6 hours (automation.schedule_cron) the cycle runs."""

import time

import dagster as dg

from mlops_assets.jobs import challenger_cycle_job, lifecycle_maintenance
from mlops_assets.partitions import raw_files
from mlops_assets.sensors import raw_file_requests, scan_raw_files
from resources import LifecycleResource


def settled_files(
    files: list[tuple[str, str]], stats: dict[str, list], now_s: float, grace_s: float
) -> tuple[list[tuple[str, str]], list[str]]:
    """Split files into those older than `grace_s` (by mtime) and the names still too young."""
    settled, waiting = [], []
    for name, sha in files:
        if now_s - stats[name][0] / 1e9 >= grace_s:
            settled.append((name, sha))
        else:
            waiting.append(name)
    return settled, waiting


def build_schedules(cron: str) -> list[dg.ScheduleDefinition]:
    """The cycle (new data) and maintenance (reconcile, labels, probation, retention)."""

    @dg.schedule(
        name="lifecycle_cycle_schedule",
        job=challenger_cycle_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Processes any raw file that has no partition yet and is older than "
        "automation.schedule_grace_s (a safety net for the new-file sensor, which gets "
        "first go). Config: automation.schedule_cron.",
    )
    def cycle_schedule(
        context: dg.ScheduleEvaluationContext, lifecycle: LifecycleResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        files, stats = scan_raw_files(lifecycle, None)
        config = lifecycle.settings().config
        # Never younger than the settle time either: a file still being written is not taken.
        grace_s = max(config.automation.schedule_grace_s, config.data.settle_seconds)
        settled, waiting = settled_files(files, stats, time.time(), grace_s)
        known = set(context.instance.get_dynamic_partitions(raw_files.name))
        requests, new = raw_file_requests(settled, known)
        if new:
            context.instance.add_dynamic_partitions(raw_files.name, new)
        if requests:
            return requests
        young = sorted(set(waiting) - known)
        if young:
            return dg.SkipReason(
                f"{len(young)} new file(s) younger than {grace_s} s left to the new-file "
                f"sensor: {', '.join(young)}"
            )
        return dg.SkipReason("no raw file without a partition")

    maintenance = dg.ScheduleDefinition(
        name="lifecycle_maintenance_schedule",
        job=lifecycle_maintenance,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Reconcile, ingest labels, probation check and retention.",
    )
    return [cycle_schedule, maintenance]
