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
