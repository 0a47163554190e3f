"""One `mlops serve` per project: a file lock, taken before anything else, by real processes.

No Ray here: the loser must fail before it starts one. tests/serving/test_serve_lock_runners.py
starts two real runners together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving import runner

REPO = Path(__file__).resolve().parents[2]

# Waits for the start signal (a file), takes the lock, reports, holds it for a while.
CONTENDER = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
from serving import runner

home, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
try:
    fd = runner.acquire_serve_lock(SimpleNamespace(home=home))
except runner.ServeLockBusy as exc:
    print("lost", exc.holder, exc, flush=True)
    sys.exit(3)
print("won", flush=True)
time.sleep(float(sys.argv[3]))
"""


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, MLOPS_HOME=str(home), PYTHONPATH=str(REPO))
    env.pop(runner.LOCK_FD_ENV, None)
    return env


def _contender(home: Path, go: Path, hold_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONTENDER, str(home), str(go), str(hold_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
        cwd=REPO,
    )


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_started_together_one_wins(tmp_path: Path, round_: int) -> None:
    home, go = tmp_path / ".mlops", tmp_path / "go"
    procs = [_contender(home, go, 1.5) for _ in range(2)]
    time.sleep(1.0)  # both imported and spinning on the start file
    go.touch()
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    (winner,) = [p for p, out in zip(procs, outs, strict=True) if out[0] == "won"]
    (lost,) = [out for out in outs if out[0] == "lost"]
    assert lost[1] == str(winner.pid), "the loser names the holder's pid"


def test_the_runner_refuses_while_another_holds_the_lock(tmp_path: Path) -> None:
    """`python -m serving.runner` (what `mlops serve` runs) exits at once with a clear message."""
    home, go = tmp_path / ".mlops", tmp_path / "go"
    go.touch()
    holder = _contender(home, go, 60)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "won"
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "serving.runner", "--config", str(REPO / "config/config.yaml")],
            capture_output=True,
            text=True,
            env=_env(home),
            cwd=REPO,
            timeout=120,
            check=False,
        )
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert f"already runs: pid {holder.pid} holds the serve lock" in proc.stderr
    assert "mlops serve --stop" in proc.stderr
    assert "ray" not in proc.stderr.lower().replace(str(tmp_path).lower(), "")  # no Ray started
    assert took < 60


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    home, go = tmp_path / ".mlops", tmp_path / "go"
    go.touch()
    holder = _contender(home, go, 60)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "won"
    settings = SimpleNamespace(home=home)
    with pytest.raises(runner.ServeLockBusy) as busy:
        runner.acquire_serve_lock(settings)
    assert busy.value.holder == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    fd = runner.acquire_serve_lock(settings)  # the kernel released it with the process
    try:
        assert (home / runner.LOCK_FILE).read_text().split()[0] == str(os.getpid())
        assert not os.get_inheritable(fd), "Ray's child processes must not inherit the lock"
    finally:
        runner.release_serve_lock(fd)
    runner.release_serve_lock(runner.acquire_serve_lock(settings))  # released means free
