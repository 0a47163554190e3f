"""Sensors: new raw files start a challenger cycle; failed runs raise an alert."""

import json
import logging

import dagster as dg

from mlops_assets import alerts
from mlops_assets.jobs import challenger_cycle_job
from mlops_assets.partitions import raw_files
from resources import LifecycleResource

log = logging.getLogger(__name__)


def scan_raw_files(lifecycle: LifecycleResource, cursor: str | None) -> tuple[list, dict]:
    """Fingerprint the CSV files in data/raw/, reusing sha256s of unchanged files."""
    from mlops_assets.validation import file_sha256, list_raw_files

    settings = lifecycle.settings()
    seen: dict[str, list] = json.loads(cursor) if cursor else {}
    current: dict[str, list] = {}
    files = []
    for path in list_raw_files(settings.raw_dir):
        stat = path.stat()
        key = [stat.st_mtime_ns, stat.st_size]
        cached = seen.get(path.name)
        sha = cached[2] if cached and cached[:2] == key else file_sha256(path)
        current[path.name] = [*key, sha]
        files.append((path.name, sha))
    return files, current


@dg.sensor(
    job=challenger_cycle_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a challenger cycle for every new or changed CSV in data/raw/; "
    "an identical file (same name and sha256) never runs twice.",
)
def new_raw_file_sensor(
    context: dg.SensorEvaluationContext, lifecycle: LifecycleResource
) -> dg.SensorResult:
    """One run per (file, sha256); new files are added as dynamic partitions first."""
    files, cursor = scan_raw_files(lifecycle, context.cursor)
    known = set(context.instance.get_dynamic_partitions(raw_files.name))
    new = sorted({name for name, _ in files} - known)
    requests = [
        dg.RunRequest(
            partition_key=name,
            run_key=f"{name}:{sha}",
            tags={"mlops/data_sha256": sha, "mlops/trigger": "new_raw_file"},
        )
        for name, sha in files
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[raw_files.build_add_request(new)] if new else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises an alert (log line, alert log, optional webhook) naming the failed "
    "asset and the error.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, lifecycle: LifecycleResource) -> None:
    """Alert on any failed run in this code location."""
    failed_steps = [
        {"step": ev.step_key, "error": ev.event_specific_data.error.message.strip()}
        for ev in context.get_step_failure_events()
        if ev.event_specific_data and ev.event_specific_data.error
    ]
    alerts.raise_alert(
        lifecycle.settings(),
        kind="run_failure",
        message=f"Dagster run {context.dagster_run.run_id} ({context.dagster_run.job_name}) failed",
        details={
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "partition": context.dagster_run.tags.get("dagster/partition"),
            "failed_steps": failed_steps,
            "failure": context.failure_event.message,
        },
    )
