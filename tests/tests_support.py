"""Small helpers shared by test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import socket


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
