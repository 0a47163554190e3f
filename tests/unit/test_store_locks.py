"""Transition locks under faults: leases refreshed while held, dead holders taken over at once,
live holders elsewhere waited for, one winner per takeover, `break_stale_lock`, and the
database's clock (on SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mlops_assets.lifecycle.store import (
    LifecycleStore,
    LockBusy,
    LockInfo,
    LockLost,
    holder_identity,
    locks_table,
    pid_alive,
    stale_reason,
)
from mlops_assets.lifecycle.store.base import StoreBase

REPO = Path(__file__).resolve().parents[2]
NAME = "transition:churn"

_HOLDER = """
import sys, time
from mlops_assets.lifecycle.store import LifecycleStore
store = LifecycleStore(sys.argv[1])
with store.transition_lock("churn", owner="doomed-cycle"):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def store(store_url: str) -> Iterator[LifecycleStore]:
    with LifecycleStore(store_url) as s:
        yield s


@pytest.fixture
def holder(store_url: str, store: LifecycleStore) -> Iterator[subprocess.Popen]:
    """Another process of this host holding the churn transition lock (default lease)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, store_url], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    return proc.pid


def plant_lock(store: LifecycleStore, lease: timedelta, **holder) -> LockInfo:
    """Write a lock row as another holder would (by default: a live one on another host)."""
    now = store.database_now()
    values = {
        "name": NAME,
        "owner": "foreign-cycle",
        "token": f"t{time.monotonic_ns()}",
        "acquired_at": now,
        "expires_at": now + lease,
        "host": "elsewhere",
        "pid": 4242,
        "pid_namespace": None,
        **holder,
    }
    with store.engine.begin() as conn:
        conn.execute(locks_table.delete().where(locks_table.c.name == NAME))
        conn.execute(locks_table.insert().values(**values))
    return LockInfo(**values)


def test_the_lock_row_names_its_holder(store: LifecycleStore):
    with store.transition_lock("churn", owner="cycle-7") as lock:
        held = store.lock_holder(NAME)
        assert held == lock
        assert (held.owner, held.host, held.pid) == ("cycle-7", socket.gethostname(), os.getpid())
        assert held.holder == f"cycle-7 ({socket.gethostname()}:{os.getpid()})"
    assert store.lock_holder(NAME) is None


def test_the_lease_is_refreshed_while_held_past_its_ttl(store: LifecycleStore):
    ttl = timedelta(seconds=1.2)
    with store.transition_lock("churn", owner="long-cycle", ttl=ttl) as lock:
        time.sleep(3 * ttl.total_seconds())  # the lease would have lapsed twice over
        now = store.database_now()
        held = store.lock_holder(NAME)
        assert held.token == lock.token and held.expires_at > now
        assert held.expires_at > lock.expires_at + ttl
        with pytest.raises(LockBusy, match="long-cycle"):
            store.acquire_lock(NAME, "impatient", wait=0)
        store.ensure_lock_held(lock)
    assert store.lock_holder(NAME) is None


def test_a_killed_holder_on_this_host_is_taken_over_at_once(
    store: LifecycleStore, holder: subprocess.Popen, caplog: pytest.LogCaptureFixture
):
    with pytest.raises(LockBusy, match="doomed-cycle"):  # alive: its 10-minute lease holds
        store.acquire_lock(NAME, "next-cycle", wait=0.2)
    kill_9(holder)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), store.transition_lock("churn", "next-cycle", wait=0):
        assert store.lock_holder(NAME).owner == "next-cycle"
    assert time.monotonic() - started < 5
    assert f"from doomed-cycle ({socket.gethostname()}:{holder.pid})" in caplog.text
    assert f"its process {holder.pid} on {socket.gethostname()} is gone" in caplog.text


def test_break_stale_lock_refuses_a_live_holder_and_breaks_a_dead_one(
    store: LifecycleStore, holder: subprocess.Popen
):
    assert store.break_stale_lock(NAME) is None
    assert store.stale_locks() == []
    assert store.lock_holder(NAME).owner == "doomed-cycle"
    kill_9(holder)
    [stale] = store.stale_locks()
    assert stale.lock.name == NAME and "is gone" in stale.reason
    broken = store.break_stale_lock(NAME)
    assert (broken.owner, broken.host, broken.pid) == (
        "doomed-cycle",
        socket.gethostname(),
        holder.pid,
    )
    assert store.lock_holder(NAME) is None
    assert store.break_stale_lock(NAME) is None
    assert store.break_stale_lock("transition:no-such-model") is None


def test_a_live_holder_on_another_host_blocks_until_its_lease_expires(store: LifecycleStore):
    # Its pid is gone here, but it is another host's pid: only the lease counts.
    lease = timedelta(seconds=2)
    planted = plant_lock(store, lease, pid=dead_pid())
    started = time.monotonic()
    with pytest.raises(LockBusy, match=r"foreign-cycle \(elsewhere:"):
        store.acquire_lock(NAME, "next-cycle", wait=0.3)
    assert store.break_stale_lock(NAME) is None
    lock = store.acquire_lock(NAME, "next-cycle", wait=30)
    assert time.monotonic() - started >= lease.total_seconds() - 0.5
    assert store.database_now() >= planted.expires_at
    assert store.lock_holder(NAME).token == lock.token
    store.release_lock(lock)


def test_a_holder_in_another_pid_namespace_of_this_host_is_not_judged_by_its_pid(
    store: LifecycleStore,
):
    me = holder_identity()
    plant_lock(store, timedelta(hours=1), host=me["host"], pid=dead_pid(), pid_namespace="pid:[1]")
    assert store.stale_locks() == []
    plant_lock(store, timedelta(hours=1), **{**me, "pid": dead_pid()})
    assert [s.lock.owner for s in store.stale_locks()] == ["foreign-cycle"]


def test_a_lock_from_before_v5_is_judged_by_its_lease_only(store: LifecycleStore):
    plant_lock(store, timedelta(hours=1), host=None, pid=None)
    with pytest.raises(LockBusy, match=r"foreign-cycle \(host unknown\)"):
        store.acquire_lock(NAME, "next-cycle", wait=0)
    plant_lock(store, timedelta(seconds=-1), host=None, pid=None)
    store.release_lock(store.acquire_lock(NAME, "next-cycle", wait=0))


@pytest.mark.parametrize("stale", ["lease", "dead-pid"])
def test_two_concurrent_takeovers_give_exactly_one_winner(store: LifecycleStore, stale: str):
    contenders = 4
    for _ in range(3):
        if stale == "lease":
            plant_lock(store, timedelta(seconds=-1))
        else:
            plant_lock(store, timedelta(hours=1), **{**holder_identity(), "pid": dead_pid()})
        barrier = threading.Barrier(contenders)
        won: list[LockInfo] = []
        busy: list[LockBusy] = []

        def contend(i: int, barrier: threading.Barrier = barrier, won=won, busy=busy) -> None:
            barrier.wait(30)
            try:
                won.append(store.acquire_lock(NAME, f"waiter-{i}", wait=0))
            except LockBusy as exc:
                busy.append(exc)

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(won) == 1 and len(busy) == contenders - 1
        assert store.lock_holder(NAME).token == won[0].token


def test_concurrent_breaks_break_once(store: LifecycleStore):
    plant_lock(store, timedelta(seconds=-1))
    barrier = threading.Barrier(4)
    results: list[LockInfo | None] = []

    def breaker() -> None:
        barrier.wait(30)
        results.append(store.break_stale_lock(NAME))

    threads = [threading.Thread(target=breaker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r is None for r in results) == [False, True, True, True]
    assert [r.owner for r in results if r] == ["foreign-cycle"]


def test_a_lost_lease_fails_the_holder_loudly(store: LifecycleStore):
    ttl = timedelta(seconds=0.6)
    with (
        pytest.raises(LockLost, match="taken over"),
        store.transition_lock("churn", owner="slow-cycle", ttl=ttl) as lock,
    ):
        thief = plant_lock(store, timedelta(hours=1))  # another host took it over
        with pytest.raises(LockLost):
            store.ensure_lock_held(lock)
        time.sleep(ttl.total_seconds())  # the next refresh finds the lock gone
    assert store.lock_holder(NAME).token == thief.token  # the thief's lock is left alone


def test_a_lost_lease_does_not_mask_the_blocks_own_error(store: LifecycleStore):
    with (
        pytest.raises(ValueError, match="boom"),
        store.transition_lock("churn", owner="slow-cycle", ttl=timedelta(seconds=0.3)),
    ):
        plant_lock(store, timedelta(hours=1))
        time.sleep(0.5)
        raise ValueError("boom")


def test_the_database_clock_is_utc_and_current(store: LifecycleStore):
    from mlops_assets.lifecycle.records import utcnow

    now = store.database_now()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - utcnow()) < timedelta(seconds=5)


def test_expiry_follows_the_database_clock_not_the_callers(
    store: LifecycleStore, monkeypatch: pytest.MonkeyPatch
):
    db_now = store.database_now()
    store.open_shadow_test("churn", "2", expires_at=db_now + timedelta(hours=1))
    store.open_shadow_test("churn", "3", expires_at=db_now - timedelta(seconds=1))
    assert [t.version for t in store.expired_shadow_tests("churn")] == ["3"]
    # An explicit `now` still wins (tests and callers move the clock with it).
    later = db_now + timedelta(hours=2)
    assert [t.version for t in store.expired_shadow_tests("churn", now=later)] == ["3", "2"]

    # The database's clock runs two hours ahead of ours: the shadow test and a foreign lock's
    # 30-minute lease have expired by it, whatever this host's clock says.
    plant_lock(store, timedelta(minutes=30))
    real = StoreBase._db_now

    def ahead(self: StoreBase, conn) -> datetime:
        return real(self, conn) + timedelta(hours=2)

    monkeypatch.setattr(StoreBase, "_db_now", ahead)
    assert [t.version for t in store.expired_shadow_tests("churn")] == ["3", "2"]
    lock = store.acquire_lock(NAME, "next-cycle", wait=0)
    assert lock.expires_at > db_now + timedelta(hours=2)


def test_pid_alive_sees_running_dead_and_zombie_processes():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while pid_alive(proc.pid) and time.monotonic() < deadline:  # exits, unreaped: a zombie
            time.sleep(0.05)
        assert not pid_alive(proc.pid)
    finally:
        proc.wait(30)


def test_stale_reason():
    now = datetime.fromisoformat("2026-01-01T12:00:00+00:00")
    me = holder_identity()
    base = {"name": NAME, "owner": "o", "token": "t", "acquired_at": now}
    live_here = LockInfo(**base, expires_at=now + timedelta(minutes=5), **me)
    assert stale_reason(live_here, now) is None
    assert "expired" in stale_reason(live_here, now + timedelta(minutes=5))
    dead_here = live_here.model_copy(update={"pid": dead_pid()})
    assert "is gone" in stale_reason(dead_here, now)
    assert stale_reason(dead_here.model_copy(update={"host": "elsewhere"}), now) is None
