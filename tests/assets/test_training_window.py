"""Training windows through the asset graph: every file that fed a version, in MLflow."""

from __future__ import annotations

import io
import os

import pandas as pd
import pytest
from mlflow import MlflowClient
from tests_support import lifecycle_of

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.training import DATA_FILES_ARTIFACT, HOLDOUT_ARTIFACT, read_run_text
from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings
from mlops_assets.validation import file_sha256

pytestmark = pytest.mark.slow


def _aged(path, days: float):
    """Give `path` an mtime `days` ago (file time is what `since` windows read)."""
    when = path.stat().st_mtime - days * 86400
    os.utime(path, (when, when))
    return path


def test_a_challenger_learns_from_the_window_and_lineage_lists_every_file(
    make_project, sample_csv
) -> None:
    root = make_project({"training": {"window": {"since": "30d"}, "max_rows": 900}})
    settings = load_settings(root / "config" / "config.yaml")
    raw = root / "data" / "raw"
    ancient = _aged(sample_csv(raw, samples=300, seed=1, name="ancient.csv"), 60)
    older = _aged(sample_csv(raw, samples=300, seed=2, name="older.csv"), 10)
    newest = sample_csv(raw, samples=400, seed=3, name="newest.csv")

    report = run_cycle_for_file(settings, newest, evaluate=False)
    assert report["success"], report.get("errors")
    window = report["assets"]["training_dataset"]
    assert window["window"] == "since: 30d" and window["files"] == 2
    assert window["holdout_source"] == "newest.csv"
    assert "ancient.csv" not in window["data_files"] and "older.csv" in window["data_files"]

    lc = lifecycle_of(settings)
    version = report["assets"]["challenger_model"]["model_version"]
    mv = MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, version)
    assert mv.tags["data.files"] == "newest.csv,older.csv"
    assert mv.tags["data.sha256"] == f"{file_sha256(newest)},{file_sha256(older)}"
    assert mv.tags["data.window"] == "since: 30d"
    listed = manager.lineage(lc, version)
    assert listed["data_window"] == "since: 30d"
    assert [(f["file"], f["sha256"], f["rows"]) for f in listed["data_files"]] == [
        ("newest.csv", file_sha256(newest), 400),
        ("older.csv", file_sha256(older), 300),
    ]
    assert "ancient.csv" not in read_run_text(lc.client, mv.run_id, DATA_FILES_ARTIFACT)
    # The holdout is the newest file's rows only: 20% of its 400 rows, not of all 700.
    holdout = pd.read_csv(io.StringIO(read_run_text(lc.client, mv.run_id, HOLDOUT_ARTIFACT)))
    assert 75 <= len(holdout) <= 85
    assert set(holdout["__row_id"]) <= set(range(400))
    assert ancient.is_file()  # left out, never moved

    # Same data, same config: re-running reuses the version.
    again = run_cycle_for_file(settings, newest, evaluate=False)
    assert again["assets"]["challenger_model"]["reused_existing_version"] is True
    assert again["assets"]["challenger_model"]["model_version"] == version


def test_the_latest_window_trains_on_the_triggering_file_alone(make_project, sample_csv) -> None:
    root = make_project({"training": {"window": "latest"}})
    settings = load_settings(root / "config" / "config.yaml")
    raw = root / "data" / "raw"
    _aged(sample_csv(raw, samples=300, seed=1, name="before.csv"), 1)
    newest = sample_csv(raw, samples=300, seed=3, name="today.csv")

    report = run_cycle_for_file(settings, newest, evaluate=False)
    assert report["success"], report.get("errors")
    assert report["assets"]["training_dataset"]["files"] == 1
    version = report["assets"]["challenger_model"]["model_version"]
    mv = MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, version)
    assert mv.tags["data.files"] == "today.csv"
