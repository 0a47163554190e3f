"""Run the asset graph in process for one raw file, on the persistent Dagster instance.

This is what `mlops train-challenger`, `mlops cycle` and `mlops demo` use: the runs land in
the instance under `MLOPS_HOME/dagster`, so `dagster dev` shows them with their lineage.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from mlops_assets.settings import Settings

log = logging.getLogger(__name__)


def dagster_instance(settings: Settings) -> Any:
    """The persistent Dagster instance under MLOPS_HOME/dagster (what `dagster dev` shows)."""
    from dagster import DagsterInstance

    home = settings.home / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def stage_file(settings: Settings, data_path: Path) -> Path:
    """Make sure the file sits in data/raw/ (copy it there; never overwrite another file)."""
    from mlops_assets.validation import file_sha256

    data_path = data_path.resolve()
    if not data_path.exists():
        raise FileNotFoundError(f"{data_path} does not exist")
    raw = settings.raw_dir.resolve()
    if data_path.parent == raw:
        return data_path
    dest = raw / data_path.name
    if dest.exists() and file_sha256(dest) != file_sha256(data_path):
        dest = raw / f"{data_path.stem}-{file_sha256(data_path)[:12]}{data_path.suffix}"
    if not dest.exists():
        shutil.copy2(data_path, dest)
        log.info("copied %s to %s", data_path, dest)
    return dest


def _dagster_log_level() -> str:
    return "DEBUG" if logging.getLogger().isEnabledFor(logging.DEBUG) else "INFO"


def run_cycle_for_file(
    settings: Settings, data_path: Path, *, evaluate: bool, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """Materialise the asset graph for one raw file; return what each asset reported."""
    from mlops_assets.jobs import CYCLE_ASSETS, TRAIN_ASSETS
    from mlops_assets.partitions import raw_files

    path = stage_file(settings, data_path)
    instance = dagster_instance(settings)
    if not instance.has_dynamic_partition(raw_files.name, path.name):
        instance.add_dynamic_partitions(raw_files.name, [path.name])
    # Without evaluation: ingest, validate, train, and the file's drift (which never gates).
    selection = CYCLE_ASSETS if evaluate else [*TRAIN_ASSETS, "feature_drift"]
    log.info("running %s for %s", " -> ".join(selection), path.name)
    report = materialize(settings, selection, partition_key=path.name, tags=tags)
    report["file"] = path.name
    return report


def materialize(
    settings: Settings,
    selection: list[str],
    *,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Materialise `selection` in process on the persistent instance; summarise the run."""
    import dagster as dg

    from mlops_assets.definitions import build_definitions

    instance = dagster_instance(settings)
    defs = build_definitions(settings.config_path)
    started = time.monotonic()
    result = dg.materialize(
        assets=list(defs.assets or []),
        selection=selection,
        partition_key=partition_key,
        instance=instance,
        resources=defs.resources,
        tags={"mlops/trigger": "cli", **(tags or {})},
        # Dagster's per-event DEBUG lines drown the progress output; `mlops -v` keeps them.
        run_config={"loggers": {"console": {"config": {"log_level": _dagster_log_level()}}}},
        raise_on_error=False,
    )
    report: dict[str, Any] = {
        "run_id": result.run_id,
        "success": result.success,
        "seconds": round(time.monotonic() - started, 1),
        "assets": {},
        "checks": {},
    }
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        report["assets"][mat.asset_key.to_user_string()] = {
            k: v.value for k, v in mat.metadata.items() if not isinstance(v.value, bytes)
        }
    for event in result.get_asset_check_evaluations():
        report["checks"][event.check_name] = {"passed": event.passed}
    if not result.success:
        report["errors"] = [
            ev.event_specific_data.error.message.strip()
            for ev in result.all_events
            if ev.is_step_failure and ev.event_specific_data and ev.event_specific_data.error
        ]
    return report
