"""An unreachable MLflow retries the Dagster step (issue 12, §4), against a real dead port."""

from __future__ import annotations

import dagster as dg
import pytest

from mlops_assets.assets import retries
from mlops_assets.lifecycle.tracking import TrackingUnreachable
from mlops_assets.settings import load_settings

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture
def project(make_project, monkeypatch: pytest.MonkeyPatch):
    """A project on a local MLflow; Dagster retries without waiting, MLflow tries once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(retries, "TRACKING_RETRY_WAIT_S", 0.0)
    root = make_project()
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    return settings


def materialize(settings, path, selection: list[str], tracking_uri: str | None = None):
    """Materialise `selection` for the file's partition on the project's Dagster instance."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.partitions import raw_files
    from mlops_assets.pipeline import dagster_instance
    from resources import LifecycleResource

    instance = dagster_instance(settings)
    if not instance.has_dynamic_partition(raw_files.name, path.name):
        instance.add_dynamic_partitions(raw_files.name, [path.name])
    defs = build_definitions(settings.config_path)
    resources = dict(defs.resources or {})
    if tracking_uri is not None:
        resources["lifecycle"] = LifecycleResource(
            config_path=str(settings.config_path), tracking_uri=tracking_uri
        )
    return dg.materialize(
        assets=list(defs.assets or []),
        selection=selection,
        partition_key=path.name,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def retried_then_failed(result: dg.ExecuteInProcessResult, step: str) -> str:
    """The failure text of `step`, after checking it was retried TRACKING_RETRIES times."""
    assert not result.success
    retried = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY and e.step_key == step
    ]
    assert len(retried) == retries.TRACKING_RETRIES
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == step
    return str(failure.event_specific_data.error)


def test_validation_is_retried_then_fails_naming_the_server_and_moves_nothing(
    project, sample_csv
) -> None:
    path = sample_csv(project.raw_dir, samples=100)

    result = materialize(project, path, ["raw_data", "validated_features"], tracking_uri=DOWN)

    text = retried_then_failed(result, "validated_features")
    assert f"{DOWN} is unreachable while reading" in text, text
    # Nothing was decided on MLflow's silence: the file was neither quarantined nor moved.
    assert path.is_file() and not any(project.quarantine_dir.iterdir())


def test_training_is_retried_when_the_server_is_down(project, sample_csv) -> None:
    path = sample_csv(project.raw_dir, samples=100)
    upstream = ["raw_data", "validated_features", "training_dataset"]
    assert materialize(project, path, upstream).success

    result = materialize(project, path, ["challenger_model"], tracking_uri=DOWN)

    text = retried_then_failed(result, "challenger_model")
    assert f"{DOWN} is unreachable while training a challenger on {path.name}" in text, text
    assert TrackingUnreachable.__name__ in text
