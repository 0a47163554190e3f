"""A real `mlflow server` killed mid-cycle, then restarted on the same backend (issue 12, §4).

"MLflow is down" must never read as "not found": no bootstrap over a champion nobody could
see, no file validated without the champion's schema, no identical data trained again. The
step fails with TrackingUnreachable naming the tracking URI; once the server is back (same
port, same backend store, same artifacts) the retry succeeds and nothing is registered twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests_support import free_port, start_mlflow_server

from mlops_assets.lifecycle import manager, training
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.schema import InputSchema
from mlops_assets.lifecycle.states import Actor, Alias, Decision
from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.lifecycle.tracking import TrackingUnreachable
from mlops_assets.settings import load_settings

pytestmark = pytest.mark.faults


class MlflowServer:
    """A real tracking server on a loopback port; killed and restarted on the same stores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        self.proc = start_mlflow_server(self.root, self.port, log)

    def kill_9(self) -> None:
        """SIGKILL the server's whole process group (the one this test started)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.kill_9()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowServer]:
    # MLflow's own HTTP retries (7, exponential) would take minutes to give up on a dead
    # server; one quick try keeps the test short. The product keeps MLflow's defaults.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    s = MlflowServer(tmp_path / "mlflow-server")
    s.root.mkdir()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def lc(make_project: Callable[..., Path], server: MlflowServer) -> Iterator[Lifecycle]:
    name = f"churn-{uuid.uuid4().hex[:8]}"
    root = make_project({"mlflow": {"tracking_uri": server.url, "registered_model_name": name}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    ctx = Lifecycle(settings, client, LifecycleStore(settings.lifecycle_db_url))
    yield ctx
    ctx.store.close()


def stub_version(lc: Lifecycle, schema: InputSchema) -> str:
    """Register a version with a stored schema.json and a stub model (no training)."""
    client = lc.client
    exp = training.ensure_experiment(lc.settings, client)
    run = client.create_run(exp)
    src = lc.settings.home / "src" / run.info.run_id
    (src / "model").mkdir(parents=True)
    (src / "model" / "MLmodel").write_text("flavors: {}\n")
    (src / "schema.json").write_text(schema.to_json())
    client.log_artifacts(run.info.run_id, str(src / "model"), "model")
    client.log_artifact(run.info.run_id, str(src / "schema.json"))
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{lc.model_name}'"):
        client.create_registered_model(lc.model_name)
    mv = client.create_model_version(
        lc.model_name, f"runs:/{run.info.run_id}/model", run.info.run_id
    )
    lc.registry.set_candidate(str(mv.version), {})
    return str(mv.version)


def versions(lc: Lifecycle) -> list[str]:
    return sorted(
        str(mv.version) for mv in lc.client.search_model_versions(f"name = '{lc.model_name}'")
    )


def test_a_dead_server_is_not_an_empty_registry(lc: Lifecycle, server: MlflowServer, sample_csv):
    """Every question a cycle asks MLflow fails loudly while it is down, then answers again."""
    csv = sample_csv(lc.settings.raw_dir, samples=120, seed=5)
    first, _ = manager.validate_file(lc, csv)  # no champion yet: the schema is inferred
    assert first.ok, first.problems
    schema = training.resolve_ludwig_config(lc.settings, first.frame)[1]
    v1 = stub_version(lc, schema)
    manager.manual_decision(lc, Decision.PROMOTE, v1, actor=Actor.CLI)  # bootstrap
    v2 = stub_version(lc, schema)

    server.kill_9()
    started = time.monotonic()
    checks: list[tuple[str, Callable[[], object]]] = [
        ("champion alias", lambda: lc.alias_version(Alias.CHAMPION)),
        ("champion schema", lambda: manager.champion_schema(lc)),
        ("validation", lambda: manager.validate_file(lc, csv)),
        (
            "earlier training",
            lambda: training.find_existing_version(lc.client, lc.model_name, "sha", "cfg", 1),
        ),
        ("promotion", lambda: manager.manual_decision(lc, Decision.PROMOTE, v2, actor=Actor.CLI)),
    ]
    for what, call in checks:
        with pytest.raises(TrackingUnreachable, match=f"tracking server at {server.url}") as err:
            call()
        assert "is unreachable while" in str(err.value), what
    assert time.monotonic() - started < 60
    assert csv.exists()  # not quarantined for want of the champion's schema
    assert not list(lc.settings.quarantine_dir.glob("*.csv"))

    server.start()  # same port, same backend store and artifacts
    assert lc.alias_version(Alias.CHAMPION) == v1
    assert manager.champion_schema(lc) == schema
    result, moved = manager.validate_file(lc, csv)  # against the champion's schema now
    assert result.ok and moved is None, result.problems
    assert versions(lc) == sorted([v1, v2])
    decisions = lc.store.decisions(model_name=lc.model_name, limit=None)
    assert [(d.decision, d.challenger_version) for d in decisions] == [(Decision.BOOTSTRAP, v1)]


def test_registration_outlives_a_server_restart_and_registers_once(
    lc: Lifecycle, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
):
    """The server dies just before a trained run is registered and comes back meanwhile."""
    monkeypatch.setattr(training, "REGISTER_WAIT_S", 1.0)
    monkeypatch.setattr(training, "REGISTER_ATTEMPTS", 90)
    client = lc.client
    exp = training.ensure_experiment(lc.settings, client)
    run_id = client.create_run(exp).info.run_id
    client.set_terminated(run_id)

    server.kill_9()
    restart = threading.Thread(target=lambda: (time.sleep(2), server.start()))
    restart.start()
    try:
        mv = training.register_version(
            client, lc.model_name, run_id, tags={"k": "v"}, description="d"
        )
    finally:
        restart.join()
    again = training.register_version(
        client, lc.model_name, run_id, tags={"k": "v"}, description="d"
    )
    assert again.version == mv.version
    assert versions(lc) == [str(mv.version)]
    assert client.get_model_version(lc.model_name, mv.version).tags["k"] == "v"


def test_registration_fails_clearly_when_the_server_stays_down(
    lc: Lifecycle, server: MlflowServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(training, "REGISTER_WAIT_S", 0.2)
    monkeypatch.setattr(training, "REGISTER_ATTEMPTS", 3)
    exp = training.ensure_experiment(lc.settings, lc.client)
    run_id = lc.client.create_run(exp).info.run_id
    server.kill_9()
    with pytest.raises(TrackingUnreachable, match=f"{server.url} is unreachable while registering"):
        training.register_version(lc.client, lc.model_name, run_id, tags={}, description="d")


@pytest.mark.slow
def test_a_server_killed_mid_training_fails_the_step_and_the_retry_registers_once(
    lc: Lifecycle, server: MlflowServer, sample_csv
):
    """Killed while the run logs its results: a clear failure, then one version on retry."""
    csv = sample_csv(lc.settings.raw_dir, samples=300, seed=3)
    result, _ = manager.validate_file(lc, csv)
    assert result.ok, result.problems
    files = [training.DataFile(path=str(csv), sha256=result.sha256, rows=result.rows)]

    def kill_after_fitting(message: str) -> None:
        if message.startswith("training done"):
            server.kill_9()

    with pytest.raises(TrackingUnreachable, match=f"{server.url} is unreachable while training"):
        training.train_challenger(lc, result.frame, files, progress=kill_after_fitting)

    server.start()
    assert versions(lc) == []  # nothing half-registered
    first = manager.train(lc, result)
    assert not first.reused
    second = manager.train(lc, result)  # a rerun of the same step
    assert second.reused and second.version == first.version
    assert versions(lc) == [first.version]
