"""Which actor started a Dagster run, read from the run's tags (one rule for every asset and op)."""

from __future__ import annotations

from collections.abc import Mapping

from mlops_assets.lifecycle.states import Actor

ACTOR_TAG = "mlops/actor"


def actor_from_run(run_tags: Mapping[str, str]) -> Actor:
    """A schedule, then a sensor, then the `mlops/actor` tag; a plain run is the CLI's."""
    if run_tags.get("dagster/schedule_name"):
        return Actor.SCHEDULE
    if run_tags.get("dagster/sensor_name"):
        return Actor.SENSOR
    return Actor(run_tags.get(ACTOR_TAG, Actor.CLI.value))
