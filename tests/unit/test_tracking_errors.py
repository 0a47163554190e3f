"""An MLflow that does not answer is not "no champion" (issue 12, §4): drift and labels."""

from __future__ import annotations

import logging

import pytest
from tests_support import lifecycle_of

from mlops_assets.lifecycle.tracking import TrackingUnreachable
from mlops_assets.settings import load_settings

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture
def down_project(make_project, monkeypatch: pytest.MonkeyPatch):
    """Settings of a project whose tracking server is unreachable."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    root = make_project({"mlflow": {"tracking_uri": DOWN}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    return settings


def test_drift_raises_when_the_server_is_down_instead_of_no_champion(down_project) -> None:
    from mlops_assets.datagen import generate_frame
    from mlops_assets.lifecycle.drift import drift_against_champion

    with pytest.raises(TrackingUnreachable, match=f"{DOWN} is unreachable while reading"):
        drift_against_champion(lifecycle_of(down_project), generate_frame(50, seed=1), "a" * 64)


def test_labels_are_stored_unchecked_with_the_reason_when_the_server_is_down(
    down_project, caplog: pytest.LogCaptureFixture
) -> None:
    from mlops_assets.lifecycle.labels import ingest_label_files

    (down_project.labels_dir / "labels.csv").write_text("request_id,label\nr-1,yes\nr-2,maybe\n")
    with caplog.at_level(logging.WARNING, logger="mlops_assets.lifecycle.labels"):
        out = ingest_label_files(lifecycle_of(down_project))

    # "maybe" is no class of any model, but nobody could ask the registry: stored unchecked.
    (file,) = out.files
    assert (file.status, file.accepted) == ("ingested", 2), file
    (warning,) = [r.getMessage() for r in caplog.records if "not checked" in r.getMessage()]
    assert f"{DOWN} is unreachable" in warning
