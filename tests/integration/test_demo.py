"""The README's main command, `mlops demo`, end to end through the console script.

One subprocess runs the whole loop on a test-sized project: a champion from baseline data, a
challenger from drifted data judged on the same holdout, a real Ray Serve app serving the
champion and mirroring live traffic to the shadow, labels by file and by POST /feedback, the
shadow test's expiry and its decision, and the server stopped again. A second run must change
nothing (identical data is not retrained, decisions are not re-applied).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests_support import free_port, lifecycle_of, project_env

from mlops_assets.lifecycle.states import Decision
from mlops_assets.settings import load_settings
from tests.conftest import build_project, isolate_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MLOPS = Path(sys.executable).parent / "mlops"
SHADOW_DECISIONS = {Decision.PROMOTE.value, Decision.REJECT.value, Decision.EXTEND_SHADOW.value}


def _demo(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = ["demo", "--samples", "1500", "--shadow-duration", "30s", "--requests", "200"]
    proc = subprocess.run(
        [str(MLOPS), *args], cwd=root, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, (
        f"mlops demo exited {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_runs_the_whole_lifecycle_and_is_safe_to_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    config = {
        # A generous shadow timeout: a cold shadow replica on a loaded CI machine is slow.
        "serving": {"port": port, "shadow_timeout_s": 15.0},
        # This test is about the demo's moving parts, not the gate's statistical power (the
        # policy tests cover that): at 300 holdout rows a lenient gate lets the drifted data's
        # challenger into a shadow test, and 200 labelled requests are enough to judge it.
        "champion_challenger": {
            "champion_threshold": 0.01,
            "significance_alpha": 0.5,
            "max_metric_degradation": 0.5,
            "shadow_min_labelled_samples": 50,
        },
    }
    trainer = {"epochs": 12, "batch_size": 32, "learning_rate": 0.01}
    root = build_project(tmp_path / "demo", config, {"trainer": trainer})
    env = project_env(root)

    first = _demo(root, env)
    out = first.stdout
    (tmp_path / "demo-stdout.txt").write_text(out)  # kept for a failing run's post-mortem
    assert "decision: BOOTSTRAP (applied)" in out, out
    # The drifted data's challenger went to a shadow test, and the server served it.
    assert "[4/7] serving champion + shadow" in out, out
    answered = re.search(r"(\d+)/(\d+) answered 200", out)
    assert answered and answered.group(1) == answered.group(2) == "200", out
    assert re.search(r"(\d+) through POST /feedback", out)
    decided = re.search(r"decision: ([A-Z_]+)\n", out.split("[6/7]", 1)[1])
    assert decided and decided.group(1) in SHADOW_DECISIONS, out
    assert "server stopped" in out and "[7/7] status" in out
    assert not _listening(port), "the demo left its server running"

    isolate_env(monkeypatch, root)  # read this demo's stores, whatever the process env holds
    settings = load_settings(root / "config" / "config.yaml")
    store = lifecycle_of(settings).store
    decisions = store.decisions(model_name=settings.model_name, limit=None)
    assert decisions[0].decision.value == decided.group(1)
    assert decisions[-1].decision == Decision.BOOTSTRAP
    # Both roles were logged for the live traffic, and the labels joined them.
    champion, challenger = decisions[-1].challenger_version, decisions[0].challenger_version
    assert len(store.labelled_predictions(champion)) == 200
    # A mirrored copy may time out on a loaded machine (logged as an error row, which has
    # no prediction to judge); enough must succeed for the shadow test to be decided.
    assert 50 <= len(store.labelled_predictions(challenger)) <= 200
    client = MlflowClient(settings.tracking_uri)
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == 2

    # Again: nothing is retrained and nothing is decided twice.
    second = _demo(root, env)
    assert second.stdout.count("(reused: identical data and config)") == 2, second.stdout
    assert "decided earlier, not re-applied" in second.stdout, second.stdout
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 2
    assert len(store.decisions(model_name=settings.model_name, limit=None)) == len(decisions)
    assert not _listening(port)
