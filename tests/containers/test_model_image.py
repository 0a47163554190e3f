"""Per-model images (issue 13 §3): packaged automatically, verified, and equal to the host.

One project bootstraps a champion with `deployment.package_images: true`, so the BOOTSTRAP
decision itself builds `mlops/churn-classifier:v1` on a real engine. The container then
answers with the same probabilities as the same bundle loaded on the host (the Predictor the
Ray ingress runs), on 200 rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests_support import free_port, project_env

from tests.conftest import bootstrapped_project

IMAGE = "mlops/churn-classifier:v1"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, serving_runtime: str):
    """A project whose BOOTSTRAP packaged v1 (package_images on); yields settings and data."""
    config = {"deployment": {"package_images": True, "runtime_image": serving_runtime}}
    with bootstrapped_project(tmp_path_factory.mktemp("packaged"), config) as project:
        yield project


def _mlops(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", *args],
        env=project_env(settings.project_dir),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _tags(settings) -> dict[str, str]:
    from mlflow import MlflowClient

    mv = MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, "1")
    return dict(mv.tags)


def test_the_bootstrap_packaged_the_champion_and_tagged_it(packaged, engine) -> None:
    settings, _ = packaged
    tags = _tags(settings)
    assert tags["image.ref"] == IMAGE
    image = engine.images.get(IMAGE)
    assert tags["image.digest"] == image.id
    assert image.labels["io.mlops.bundle.sha256"] == tags["bundle.sha256"]
    lineage = _mlops(settings, "lineage", "1")
    assert lineage.returncode == 0, lineage.stderr
    assert f"image         {IMAGE}  {image.id}" in lineage.stdout


def test_packaging_again_reuses_the_image_and_force_rebuilds(packaged, engine) -> None:
    settings, _ = packaged
    again = _mlops(settings, "package", "1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"reused {IMAGE}")
    forced = _mlops(settings, "package", "1", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert '"reused": false' in forced.stdout
    assert _tags(settings)["image.digest"] == engine.images.get(IMAGE).id


def test_the_container_answers_like_the_host(packaged, run_container, tmp_path: Path) -> None:
    import mlflow.artifacts

    from mlops_assets.lifecycle.bundle import load_bundle

    settings, baseline = packaged
    port = free_port()
    started = time.monotonic()
    container = run_container(IMAGE, MLOPS_SERVE_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        container.reload()
        assert container.status != "exited", container.logs().decode()[-2000:]
        assert time.monotonic() < deadline, "no /health within 120 s"
        time.sleep(0.5)
    startup_s = time.monotonic() - started
    info = httpx.get(f"{url}/model/info", timeout=5).json()["champion"]
    assert info["version"] == "1" and info["name"] == settings.model_name, info
    assert info["bundle_sha256"] == _tags(settings)["bundle.sha256"], info

    frame = pd.read_csv(baseline).drop(columns=[settings.config.data.target_column]).head(200)
    # Missing values travel as JSON null, as a client sends them.
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    answer = httpx.post(f"{url}/batch_predict", json={"instances": records}, timeout=60)
    assert answer.status_code == 200, answer.text
    in_container = answer.json()["probabilities"]

    from mlflow import MlflowClient

    run_id = MlflowClient(settings.tracking_uri).get_model_version(settings.model_name, "1").run_id
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path="serving",
        dst_path=str(tmp_path),
        tracking_uri=settings.tracking_uri,
    )
    on_host = load_bundle(Path(local), mode="torchscript").predict(records).probability_dicts()
    assert len(in_container) == len(on_host) == 200
    for got, want in zip(in_container, on_host, strict=True):
        assert got.keys() == want.keys()
        for cls, p in want.items():
            assert got[cls] == pytest.approx(p, abs=1e-6)
    print(f"container /health after {startup_s:.1f} s")


def test_a_changed_bundle_in_the_image_refuses_to_start(packaged, run_container) -> None:
    # The image carries the registered digest: one byte added to a bundle file exits 3.
    container = run_container(
        IMAGE,
        MLOPS_SERVE_PORT=str(free_port()),
        user="0",
        command=[
            "sh",
            "-c",
            "printf ' ' >> /opt/mlops/bundle/schema.json"
            " && exec python /opt/mlops/bundle_server.py",
        ],
    )
    assert container.wait(timeout=120)["StatusCode"] == 3
    logs = container.logs().decode()
    assert "the bundle is not the registered one" in logs and "schema.json" in logs, logs[-2000:]


def test_clear_errors(packaged, tmp_path: Path) -> None:
    settings, _ = packaged
    unknown = _mlops(settings, "package", "99")
    assert unknown.returncode == 1
    assert "Traceback" not in unknown.stderr and "99" in unknown.stderr
    no_engine = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "package", "1"],
        env=project_env(settings.project_dir, DOCKER_HOST=f"unix://{tmp_path}/none.sock"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert no_engine.returncode == 1
    assert "no Docker engine answers" in no_engine.stderr
    assert "scripts/start_docker.sh" in no_engine.stderr
