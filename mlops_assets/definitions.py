"""The Dagster code location: assets, checks, jobs, sensors, schedules and resources."""

import os
from pathlib import Path

import dagster as dg

from mlops_assets.assets.data import raw_data, validated_features
from mlops_assets.assets.deployment import champion_deployment
from mlops_assets.assets.drift import feature_drift
from mlops_assets.assets.evaluation import evaluation_report
from mlops_assets.assets.monitoring import shadow_evaluation
from mlops_assets.assets.training import challenger_model, training_dataset
from mlops_assets.jobs import (
    challenger_cycle_job,
    lifecycle_maintenance,
    probation_job,
    shadow_cycle_job,
)
from mlops_assets.schedules import build_schedules
from mlops_assets.sensors import build_sensors, run_failure_alert
from mlops_assets.settings import default_config_path, load_settings
from resources import LifecycleResource


def _env(name: str) -> dg.EnvVar | None:
    """Read a URI from the environment at run time when it is set (shown as such in the UI)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_definitions(config_path: str | Path | None = None) -> dg.Definitions:
    """Assemble the code location for one config file."""
    path = Path(config_path or default_config_path()).resolve()
    settings = load_settings(path)
    lifecycle = LifecycleResource(
        config_path=str(path),
        tracking_uri=_env("MLFLOW_TRACKING_URI"),
        store_url=_env("MLOPS_LIFECYCLE_DB"),
    )
    return dg.Definitions(
        assets=[
            raw_data,
            validated_features,
            training_dataset,
            challenger_model,
            evaluation_report,
            champion_deployment,
            shadow_evaluation,
            feature_drift,
        ],
        jobs=[challenger_cycle_job, shadow_cycle_job, lifecycle_maintenance, probation_job],
        sensors=[*build_sensors(settings.config.automation.sensor_interval_s), run_failure_alert],
        schedules=build_schedules(settings.config.automation.schedule_cron),
        resources={"lifecycle": lifecycle},
        # Every step in one process: the multiprocess executor re-imports the code location
        # (and Ludwig, ~8 s) for every step.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
