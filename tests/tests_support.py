"""Small helpers shared by test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_HOLD_LOCK = """
import sys
from mlops_assets.lifecycle.store import LifecycleStore
store = LifecycleStore(sys.argv[1])
with store.transition_lock("churn", owner="other-process"):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def check_lock_exclusive_between_processes(url: str, store) -> None:
    """Another process holds the transition lock: we wait; once it lets go, we get it."""
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from mlops_assets.lifecycle.store import LockBusy

    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockBusy, match="other-process"):
            store.acquire_lock("transition:churn", "this-process", wait=0.3)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        with store.transition_lock("churn", owner="this-process", wait=10):
            pass
    finally:
        proc.kill()
        proc.wait(30)


def check_lock_serialises_threads(store, tmp_path) -> None:
    """Four threads increment a file counter under the transition lock: no update is lost."""
    import threading

    counter = tmp_path / "counter"
    counter.write_text("0")
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for _ in range(5):
                with store.transition_lock("churn", owner=name, wait=60):
                    value = int(counter.read_text())
                    threading.Event().wait(0.002)  # widen the race window
                    counter.write_text(str(value + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert counter.read_text() == "20"


@contextlib.contextmanager
def pg_schema_url(base_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped on exit."""
    import uuid

    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def project_env(root, **extra: str) -> dict[str, str]:
    """The environment for a subprocess working on the project at `root` (no shell URIs)."""
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB")
    }
    env.update(
        MLOPS_CONFIG=str(root / "config" / "config.yaml"),
        MLOPS_HOME=str(root / ".mlops"),
        DAGSTER_HOME=str(root / ".mlops" / "dagster"),
        RAY_USAGE_STATS_ENABLED="0",
        DAGSTER_DISABLE_TELEMETRY="1",
    )
    env.update(extra)
    return env


_LIFECYCLES: dict[tuple[str, str, str], object] = {}


def lifecycle_of(settings):
    """The lifecycle context of a test project (one per store and registry; reloads no server)."""
    from mlops_assets.lifecycle.context import Lifecycle

    key = (settings.tracking_uri, settings.lifecycle_db_url, settings.model_name)
    if key not in _LIFECYCLES:
        _LIFECYCLES[key] = Lifecycle.open(settings)
    return _LIFECYCLES[key]


def start_mlflow_server(root, port: int, log_path, wait_s: float = 120.0):
    """Start a real `mlflow server` on loopback (SQLite backend and artifacts under `root`).

    Returns the process (its own session: stop it with os.killpg) once /health answers; a
    server that exits or does not answer in `wait_s` raises RuntimeError with its log's tail.
    """
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

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
        f"sqlite:///{Path(root) / 'server.db'}",
        "--artifacts-destination",
        str(Path(root) / "artifacts"),
    ]
    with Path(log_path).open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(Path(log_path).read_text()[-3000:])
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    raise RuntimeError(f"mlflow server did not start in {wait_s:g} s")


class PostgresCluster:
    """A private PostgreSQL cluster in a tmp dir on a loopback port (initdb, pg_ctl).

    Started and stopped by the test that owns it, so restarting it disturbs no one else. As
    root, the server binaries run as the `postgres` user (initdb refuses root).
    """

    def __init__(self) -> None:
        import glob
        import os
        import tempfile
        from pathlib import Path

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(bins[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="mlops-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://mlops@127.0.0.1:{self.port}/postgres?connect_timeout=3"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            import shutil

            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        import subprocess

        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # No descriptor but stdio reaches the server (close_fds): it must hold no lock file.
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True, close_fds=True)

    def init(self) -> PostgresCluster:
        """initdb (trust auth on loopback for the role `mlops`), then start."""
        self._run("initdb", "-D", str(self.data), "-U", "mlops", "--auth=trust", "-E", "UTF8")
        self.start()
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: disconnect clients, roll back their transactions)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def kill_9(self) -> None:
        """SIGKILL the postmaster (its pid from postmaster.pid); wait until its backends exit."""
        import os
        import signal
        import time

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        # Orphaned backends notice the postmaster's death and exit; while one is left the old
        # shared memory is in use and a new postmaster would refuse to start.
        while time.monotonic() < deadline and self._server_processes():
            time.sleep(0.05)

    def _server_processes(self) -> list[int]:
        """Pids of processes still running this cluster's server binary (postmaster, backends)."""
        import os
        from pathlib import Path

        found = []
        postgres = str(self.bin / "postgres")
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.readlink(proc / "exe") == postgres and (proc / "cwd").resolve() == self.data:
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def destroy(self) -> None:
        """Stop the server if it runs and remove its files."""
        import contextlib
        import shutil
        import subprocess

        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def serving_tests(module: str):
    """A helper module of the serving tier (tests/serving: serving_support, test_hot_swap)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent / "serving")
    if folder not in sys.path:
        sys.path.append(folder)  # last: it must shadow nothing
    return importlib.import_module(module)


@contextlib.contextmanager
def detached_serving_app(
    root, monkeypatch, *, lifecycle_url: str | None = None, shadow: bool = False
) -> Iterator:
    """The serving tier's tmp registry (v1 champion, v2, v3) served by a real detached runner.

    `mlops serve --detach`'s path: its own process and Ray, so it never meets an app this
    process started. Its home is under `root`; its lifecycle store (the prediction log) is
    `lifecycle_url` when given. No challenger alias, so no shadow replica, unless `shadow`
    (v2 keeps the alias and is mirrored to). Yields
    (settings, registry, info) and stops the runner by its pid on exit.
    """
    import os
    from pathlib import Path

    import yaml

    from mlops_assets.settings import load_settings
    from serving import runner

    support = serving_tests("serving_support")
    repo = str(Path(__file__).resolve().parents[1])
    for name in ("MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB", "MLOPS_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(root / ".mlops"))
    monkeypatch.setenv(support.ADMIN_TOKEN_ENV, support.ADMIN_TOKEN)
    # The runner runs `-m serving.runner` from the project dir: it imports this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [repo, os.getenv("PYTHONPATH")])))
    config = support.write_project(root, free_port())
    if lifecycle_url is not None:
        cfg = yaml.safe_load(config.read_text())
        cfg["lifecycle_store"]["url"] = lifecycle_url
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = load_settings(config)
    # build_registry calls mlflow.set_tracking_uri, which also sets MLFLOW_TRACKING_URI in
    # os.environ; set it through monkeypatch first so the test's end removes it again (a
    # delenv of an absent name records nothing to undo, and the URI leaked into later tests).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    registry = support.build_registry(root, settings)
    if not shadow:
        registry.set_alias("challenger", None)
    info = runner.start_detached(settings)
    try:
        yield settings, registry, info
    finally:
        runner.stop(settings)


# Grafana's built-in variables, and what they stand for when the dashboard's PromQL is run
# outside Grafana (promtool offline, or a live Prometheus in the monitoring tier).
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "6h",
    "${__range}": "6h",
}


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel of a Grafana dashboard, those inside collapsed rows included."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def fill_grafana_variables(expr: str) -> str:
    """`expr` with Grafana's built-in variables replaced by GRAFANA_VARIABLES."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_targets(dashboard_file) -> list[tuple[str, str]]:
    """(panel title, raw PromQL) for every target of every panel of a dashboard file."""
    import json

    dashboard = json.loads(dashboard_file.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
