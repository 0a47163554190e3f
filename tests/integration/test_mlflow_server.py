"""Training and deciding against a real `mlflow server` on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from tests_support import free_port

from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real tracking server (SQLite backend, served artifacts); stopped by process group."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start in 120 s")
        yield url
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
