"""Two `mlops serve` of one project started together: one serves, the other exits and says why.

Real runners (`python -m serving.runner`, what `mlops serve` runs in the foreground, and
`runner.start_detached`, what `--detach` runs) on an empty registry: each winner starts its
own local Ray and Serve, so this is `integration` as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving_support import ADMIN_TOKEN, ADMIN_TOKEN_ENV, free_port, write_project

from serving import runner

pytestmark = [pytest.mark.serving, pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlops_assets.settings import load_settings

    config = write_project(tmp_path, free_port())
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / ".mlops"))
    monkeypatch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLOPS_LIFECYCLE_DB", raising=False)
    return load_settings(config)


def _wait_serving(settings: Any, pid: int, timeout_s: float = 300) -> runner.ServeHandleInfo:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = runner.read_state(settings)
        if info is not None and info.pid == pid:
            return info
        time.sleep(0.5)
    raise AssertionError(f"runner {pid} did not serve in {timeout_s}s")


def test_two_foreground_runners_started_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch)
    cmd = [sys.executable, "-m", "serving.runner", "--config", str(settings.config_path)]
    logs = [tmp_path / f"runner-{i}.log" for i in range(2)]
    procs: list[subprocess.Popen[bytes]] = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(os.environ),
                    cwd=REPO,
                    start_new_session=True,  # its own group: the cleanup reaches only it
                )
            )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        (loser,) = [p for p in procs if p.poll() is not None]
        (winner,) = [p for p in procs if p is not loser]
        text = logs[procs.index(loser)].read_text(errors="replace")
        assert loser.returncode == 3, text[-3000:]
        assert f"already runs: pid {winner.pid} holds the serve lock" in text
        info = _wait_serving(settings, winner.pid)
        assert httpx.get(f"{info.url}/health", timeout=30).status_code in (200, 503)
        assert winner.poll() is None
    finally:
        stopped = runner.stop(settings)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
    assert stopped is True
    assert winner.returncode == 0, "the winner stopped cleanly on SIGTERM"


def test_two_detached_starts_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is taken before the spawn and handed to the runner: one start gets to Ray."""
    settings = _settings(tmp_path, monkeypatch)
    results: dict[int, Any] = {}
    go = threading.Barrier(2)

    def start(i: int) -> None:
        go.wait()
        try:
            results[i] = runner.start_detached(settings)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(timeout=400)
        busy = [r for r in results.values() if isinstance(r, runner.ServeLockBusy)]
        served = [r for r in results.values() if isinstance(r, runner.ServeHandleInfo)]
        assert len(busy) == 1 and len(served) == 1, results
        info = served[0]
        # The runner owns the lock now (the starting parent only held it until the spawn).
        assert (settings.home / runner.LOCK_FILE).read_text().split()[0] == str(info.pid)
        with pytest.raises(runner.ServeLockBusy, match=f"pid {info.pid}"):
            runner.acquire_serve_lock(settings)
    finally:
        stopped = runner.stop(settings)
    assert stopped is True
    runner.release_serve_lock(runner.acquire_serve_lock(settings))  # free once it stopped
