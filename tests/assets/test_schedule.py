"""The cycle schedule evaluated for real against a Dagster instance: it is the new-file
sensor's safety net, so it only claims files the sensor has had time to see."""

from __future__ import annotations

import os
import time

import dagster as dg
import pytest

from mlops_assets.definitions import build_definitions

pytestmark = pytest.mark.slow


def test_cycle_schedule_claims_only_settled_files(make_project, sample_csv) -> None:
    root = make_project(config={"automation": {"schedule_grace_s": 120}})
    defs = build_definitions(root / "config" / "config.yaml")
    schedule = defs.get_schedule_def("lifecycle_cycle_schedule")
    raw = root / "data" / "raw"
    young = sample_csv(raw, samples=50, seed=1, name="young.csv")
    old = sample_csv(raw, samples=50, seed=2, name="old.csv")
    past = time.time() - 600
    os.utime(old, (past, past))

    with dg.instance_for_test() as instance:

        def evaluate() -> dg.ScheduleExecutionData:
            with dg.build_schedule_context(
                instance=instance,
                resources=defs.resources,
                repository_def=defs.get_repository_def(),
            ) as context:
                return schedule.evaluate_tick(context)

        first = evaluate()
        assert [r.partition_key for r in first.run_requests] == [old.name]
        assert first.run_requests[0].tags["mlops/data_sha256"]
        assert instance.get_dynamic_partitions("raw_files") == [old.name]

        # The old file is now known; the young one is still the sensor's.
        second = evaluate()
        assert not second.run_requests
        assert young.name in second.skip_message and "sensor" in second.skip_message

        # Once the young file has settled unclaimed (the sensor is off), the schedule runs it.
        os.utime(young, (past, past))
        third = evaluate()
        assert [r.partition_key for r in third.run_requests] == [young.name]
        assert sorted(instance.get_dynamic_partitions("raw_files")) == sorted(
            [old.name, young.name]
        )
