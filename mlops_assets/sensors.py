"""Sensors: new raw files, shadow expiry, probation, and alerts on failed runs."""

import json
import logging

import dagster as dg

from mlops_assets import alerts
from mlops_assets.jobs import challenger_cycle_job, probation_job, shadow_cycle_job
from mlops_assets.partitions import raw_files
from resources import LifecycleResource

log = logging.getLogger(__name__)


def scan_raw_files(
    lifecycle: LifecycleResource,
    cursor: str | None,
    *,
    settle_seconds: float = 0,
    now: float | None = None,
) -> tuple[list, dict]:
    """Fingerprint the settled CSV files in data/raw/, reusing sha256s of unchanged files.

    Returns the settled files as (name, sha256) and the new cursor: [mtime_ns, size, sha256]
    per file. A file that has not settled (`settle_seconds`, mlops_assets/files.py: its size
    and mtime must match the cursor's previous look and be that old) is left out of the files
    and kept in the cursor with an empty sha256, so the next tick looks at it again.
    """
    from mlops_assets.files import Look, is_settled, look
    from mlops_assets.validation import file_sha256, list_raw_files

    settings = lifecycle.settings()
    seen: dict[str, list] = json.loads(cursor) if cursor else {}
    current: dict[str, list] = {}
    files = []
    for path in list_raw_files(settings.raw_dir):
        first = look(path)
        if first is None:  # renamed or deleted since the listing
            continue
        key = [first.mtime_ns, first.size]
        cached = seen.get(path.name)
        previous = Look(size=cached[1], mtime_ns=cached[0]) if cached else None
        # An unsettled file keeps the sha256 of its last settled look in a fourth slot, so a
        # rewrite is still seen as a change once it settles.
        pending = [*key, "", last_sha(cached)]
        if not is_settled(first, previous, settle_seconds, now):
            current[path.name] = pending
            continue
        sha = cached[2] if cached and cached[:2] == key and cached[2] else file_sha256(path)
        if look(path) != first:  # it changed while it was hashed
            current[path.name] = pending
            continue
        current[path.name] = [*key, sha]
        files.append((path.name, sha))
    return files, current


def last_sha(entry: list | None) -> str:
    """The sha256 of a cursor entry's last settled look ("" when it never settled)."""
    if not entry:
        return ""
    return entry[2] or (entry[3] if len(entry) > 3 else "")


def raw_file_requests(
    files: list[tuple[str, str]], known: set[str], seen: dict[str, list] | None = None
) -> tuple[list[dg.RunRequest], list[str]]:
    """Run requests for new files and changed files, and the partitions to add first.

    A file whose partition already exists but that this sensor has never seen was staged by
    someone else (the CLI, the UI) who runs it; it is not run twice. A file whose sha256
    changed since the last look runs again (run key `file:sha256`).
    """
    seen = seen or {}
    new = sorted({name for name, _ in files} - known)
    requests = [
        dg.RunRequest(
            partition_key=name,
            run_key=f"{name}:{sha}",
            tags={"mlops/data_sha256": sha, "mlops/trigger": "new_raw_file"},
        )
        for name, sha in files
        if name in new or last_sha(seen.get(name)) not in ("", sha)
    ]
    return requests, new


def build_sensors(interval: int) -> list[dg.SensorDefinition]:
    """The polling sensors, every `interval` seconds (config: automation.sensor_interval_s)."""

    @dg.sensor(
        job=challenger_cycle_job,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts a challenger cycle for every new or changed CSV in data/raw/ once "
        "it has settled (data.settle_seconds; dot-files, *.tmp, *.part are never taken); an "
        "identical file (same name and sha256) never runs twice.",
    )
    def new_raw_file_sensor(
        context: dg.SensorEvaluationContext, lifecycle: LifecycleResource
    ) -> dg.SensorResult:
        """One run per settled (file, sha256); new files are added as dynamic partitions first."""
        seen = json.loads(context.cursor) if context.cursor else {}
        settle_seconds = lifecycle.settings().config.data.settle_seconds
        files, cursor = scan_raw_files(lifecycle, context.cursor, settle_seconds=settle_seconds)
        known = set(context.instance.get_dynamic_partitions(raw_files.name))
        requests, new = raw_file_requests(files, known, seen)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[raw_files.build_add_request(new)] if new else [],
            cursor=json.dumps(cursor, sort_keys=True),
        )

    @dg.sensor(
        job=shadow_cycle_job,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When a shadow test's expiry passes, materialises shadow_evaluation to "
        "decide PROMOTE, EXTEND_SHADOW or REJECT.",
    )
    def shadow_expiry_sensor(
        context: dg.SensorEvaluationContext, lifecycle: LifecycleResource
    ) -> dg.SensorResult | dg.SkipReason:
        """One run per (version, expiry): an extension makes a new expiry and so a new run."""
        from mlops_assets.lifecycle.shadow import expired_shadows

        expired = expired_shadows(lifecycle.context())
        if not expired:
            return dg.SkipReason("no expired shadow test")
        key = ",".join(f"{t.version}@{t.expires_at.isoformat()}" for t in expired)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"shadow:{key}", tags={"mlops/trigger": "expiry"})]
        )

    @dg.sensor(
        job=probation_job,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="During a new champion's probation, rolls back when its labelled live "
        "quality or error rate degrades past the policy.",
    )
    def probation_sensor(
        context: dg.SensorEvaluationContext, lifecycle: LifecycleResource
    ) -> dg.SensorResult | dg.SkipReason:
        """Start a probation run only when the check says roll back."""
        from mlops_assets.lifecycle.probation import check_probation_now

        result = check_probation_now(lifecycle.context())
        if not result.rollback:
            return dg.SkipReason("; ".join(result.reasons) or "no champion on probation")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"probation:{result.champion_version}",
                    tags={"mlops/trigger": "probation"},
                )
            ]
        )

    return [new_raw_file_sensor, shadow_expiry_sensor, probation_sensor]


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
        message=f"Dagster run {context.dagster_run.run_id} ({context.dagster_run.job_name}) "
        f"failed in step(s) {', '.join(s['step'] for s in failed_steps) or 'unknown'}",
        details={
            "run_id": context.dagster_run.run_id,
            "job": context.dagster_run.job_name,
            "partition": context.dagster_run.tags.get("dagster/partition"),
            "failed_steps": failed_steps,
            "failure": context.failure_event.message,
        },
    )
