"""What is served is what was registered: a tampered bundle is refused, the old version serves.

Against the session's real MLflow registry and artifact store: a file of version 2's bundle is
changed in the artifact store, and a `ModelHost` (what the ingress and every shadow replica
run) asked to load it keeps its current version, says which file differs and reports the
mismatch for the `mlops_bundle_mismatch` metric. The per-model `bundle_server.py` refuses to
start on the same bundle (exit status 3, the file named).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import MODEL_NAME, REPO, Server, valid_features

from serving.config import SlotConfig
from serving.host import ModelHost
from serving.resolve import _client, resolve_alias

pytestmark = [pytest.mark.serving, pytest.mark.slow]


def _artifact(server: Server, run_key: str, name: str) -> Path:
    """A file of a run's bundle inside the artifact store (a local folder here)."""
    run = server.registry.client.get_run(server.registry.runs[run_key])
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    return root / "serving" / name


@pytest.fixture
def tampered(server: Server) -> Iterator[Path]:
    """Version 2's TorchScript file with one byte changed, restored afterwards."""
    path = _artifact(server, "b", "inference.pt")
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        yield path
    finally:
        path.write_bytes(original)


def test_a_tampered_bundle_is_refused_and_the_current_version_keeps_serving(
    server: Server, tampered: Path
) -> None:
    client = _client(server.settings.tracking_uri)
    v1 = resolve_alias(client, MODEL_NAME, "champion")
    v2 = resolve_alias(client, MODEL_NAME, "challenger")
    assert v1 is not None and v2 is not None
    assert v1.bundle_sha256 and v2.bundle_sha256  # registered with the version

    host = ModelHost("champion", server.settings.tracking_uri, MODEL_NAME)
    try:
        asyncio.run(host.reconfigure(SlotConfig(model=v1)))
        assert host.loaded is not None and host.loaded.ref.version == "1"
        assert host.info()["bundle_mismatch"] is None

        asyncio.run(host.reconfigure(SlotConfig(model=v2)))
        assert host.loaded is not None and host.loaded.ref.version == "1"  # still serving v1
        info = host.info()
        assert info["version"] == "1"
        assert info["bundle_mismatch"] == {"version": "2", "file": "inference.pt"}
        assert "bundle mismatch" in info["load_error"] and "inference.pt" in info["load_error"]
    finally:
        host.close()


def test_the_live_app_is_not_disturbed(server: Server, tampered: Path) -> None:
    """The running shadow loaded version 2 before the change: it keeps serving it, and the
    champion (version 1) keeps answering."""
    resp = server.client.get(f"{server.url}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["champion"]["version"] == "1"
    assert [s["version"] for s in body["shadows"]] == ["2"]
    answer = server.client.post(f"{server.url}/predict", json={"features": valid_features(1)})
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    assert server.metric("mlops_bundle_mismatch") == 0


def _bundle_server(bundle: Path, sha: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "MLOPS_BUNDLE_DIR": str(bundle),
        "MLOPS_BUNDLE_SHA256": sha,
        "MLOPS_SERVE_PORT": "1",  # never reached: the check comes first
    }
    return subprocess.run(
        [sys.executable, str(REPO / "docker" / "runtime" / "bundle_server.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_per_model_server_refuses_a_bundle_that_is_not_the_registered_one(
    server: Server, tmp_path: Path
) -> None:
    import shutil

    client = _client(server.settings.tracking_uri)
    v1 = resolve_alias(client, MODEL_NAME, "champion")
    assert v1 is not None and v1.bundle_sha256
    bundle = tmp_path / "bundle"
    shutil.copytree(_artifact(server, "a", "."), bundle)
    (bundle / "schema.json").write_text((bundle / "schema.json").read_text() + " ")
    proc = _bundle_server(bundle, v1.bundle_sha256)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "schema.json differs" in proc.stderr
