"""Training and deciding against a real `mlflow server` on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests_support import free_port, start_mlflow_server

from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real tracking server (SQLite backend, served artifacts); stopped by process group."""
    port = free_port()
    proc = start_mlflow_server(tmp_path, port, tmp_path / "server.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_cycle_against_a_tracking_server(make_project, sample_csv, mlflow_server, monkeypatch):
    root = make_project()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = load_settings(root / "config" / "config.yaml")
    assert settings.tracking_uri == mlflow_server
    csv = sample_csv(root / "data" / "raw", samples=300, seed=3)

    report = run_cycle_for_file(settings, csv, evaluate=True)

    assert report["success"], report.get("errors")
    client = MlflowClient(mlflow_server)
    champ = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champ.tags["lifecycle.state"] == "champion"
    # Artifacts went through the server, not into a local ./mlruns.
    names = {a.path for a in client.list_artifacts(champ.run_id)}
    assert {"serving", "model", "holdout.csv", "schema.json"} <= names
    assert not (root / "mlruns").exists()
