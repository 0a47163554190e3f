"""Transition locks: one row per lock name, a lease on the database's clock, and its holder.

A holder inserts the row (or takes over a stale one), `transition_lock` keeps its lease alive
from a background thread while the block runs, and the row is deleted on exit. A row is stale
when its lease has expired by the database's clock, or at once when its holder ran on this
host (same host name and pid namespace) and that process is gone. Every takeover or break is
a conditional UPDATE/DELETE of the exact row that was read (its token), so of two waiters that
both see a stale row only one can win.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mlops_assets.lifecycle.store.base import StoreBase
from mlops_assets.lifecycle.store.errors import LockBusy, LockLost
from mlops_assets.lifecycle.store.models import LockInfo, StaleLock
from mlops_assets.lifecycle.store.tables import locks_table

log = logging.getLogger(__name__)

DEFAULT_LOCK_TTL = timedelta(minutes=10)


def _pid_namespace() -> str | None:
    # Containers may share the host's name (host networking) but not its pids.
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def holder_identity() -> dict[str, Any]:
    """The `host`, `pid` and `pid_namespace` columns for a lock taken by this process."""
    return {
        "host": socket.gethostname()[:255],
        "pid": os.getpid(),
        "pid_namespace": _pid_namespace(),
    }


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host (and pid namespace) still runs; zombies do not."""
    if pid <= 0:
        return True  # not a process id we can judge: never call it dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists and belongs to another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # it exited just now, unless there is no /proc at all
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    # The state follows the command name, which is parenthesised and may hold spaces.
    fields = stat.rpartition(")")[2].split()
    return not fields or fields[0] not in ("Z", "X")


def stale_reason(lock: LockInfo, now: datetime) -> str | None:
    """Why `lock` may be taken over at database time `now`, or None while its holder lives."""
    if lock.expires_at <= now:
        return f"its lease expired at {lock.expires_at.isoformat()}"
    me = holder_identity()
    if (
        lock.pid is not None
        and lock.host == me["host"]
        and lock.pid_namespace == me["pid_namespace"]
        and not pid_alive(lock.pid)
    ):
        return f"its process {lock.pid} on {lock.host} is gone"
    return None


def _lock_from_row(row: sa.Row | None) -> LockInfo | None:
    return None if row is None else LockInfo.model_validate(dict(row._mapping))


class _LeaseKeeper:
    """Refreshes a held lock's lease every ttl/3 from a daemon thread until stopped."""

    def __init__(self, store: LocksMixin, lock: LockInfo, ttl: timedelta) -> None:
        self.lock = lock
        self.lost: LockLost | None = None
        self._store = store
        self._ttl = ttl
        self._interval = max(ttl.total_seconds() / 3, 0.05)
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"mlops-lease:{lock.name}", daemon=True
        )

    def start(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.lock = self._store.refresh_lock(self.lock, self._ttl)
            except LockLost as exc:
                self.lost = exc
                log.error("%s; its holder carries on unprotected until the block ends", exc)
                return
            except Exception:
                # The store may be briefly down: two more tries fit in the lease.
                log.warning("could not refresh the lease of %r", self.lock.name, exc_info=True)


class LocksMixin(StoreBase):
    """Taking, refreshing, releasing and breaking transition locks across processes and hosts."""

    def lock_holder(self, name: str) -> LockInfo | None:
        """Who holds lock `name` (even if expired), or None."""
        t = locks_table
        with self._read() as conn:
            return _lock_from_row(conn.execute(sa.select(t).where(t.c.name == name)).first())

    def locks(self) -> list[LockInfo]:
        """Every lock row, live or stale, by name."""
        t = locks_table
        with self._read() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.name)).all()
        return [LockInfo.model_validate(dict(r._mapping)) for r in rows]

    def stale_locks(self) -> list[StaleLock]:
        """The locks whose holder is gone (see `stale_reason`), judged by the database's clock."""
        t = locks_table
        with self._read() as conn:
            now = self._db_now(conn)
            rows = conn.execute(sa.select(t).order_by(t.c.name)).all()
        found = [(LockInfo.model_validate(dict(r._mapping))) for r in rows]
        return [
            StaleLock(lock=lock, reason=reason)
            for lock in found
            if (reason := stale_reason(lock, now)) is not None
        ]

    def break_stale_lock(self, name: str) -> LockInfo | None:
        """Delete lock `name` if it is stale and return whose it was; None if absent or live."""
        t = locks_table
        with self._write() as conn:
            now = self._db_now(conn)
            held = _lock_from_row(conn.execute(sa.select(t).where(t.c.name == name)).first())
            reason = None if held is None else stale_reason(held, now)
            if held is None or reason is None:
                return None
            broken = conn.execute(
                sa.delete(t).where(t.c.name == name, t.c.token == held.token)
            ).rowcount
        if broken != 1:
            return None
        log.warning("broke transition lock %r of %s: %s", name, held.holder, reason)
        return held

    def acquire_lock(
        self,
        name: str,
        owner: str,
        ttl: timedelta = DEFAULT_LOCK_TTL,
        wait: float = 30.0,
    ) -> LockInfo:
        """Take lock `name` (a row in `locks`), taking over a stale one; LockBusy after `wait`.

        The lock works across processes and hosts sharing the store. The lease is measured by
        the database's clock; a holder on this host whose process is gone is stale at once.
        """
        t = locks_table
        token = uuid.uuid4().hex
        start = time.monotonic()
        delay = 0.02
        while True:
            with self._write() as conn:
                now = self._db_now(conn)
                values = {
                    "name": name,
                    "owner": owner,
                    "token": token,
                    "acquired_at": now,
                    "expires_at": now + ttl,
                    **holder_identity(),
                }
                inserted = conn.execute(
                    self._insert(t)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=[t.c.name])
                ).rowcount
                if inserted == 1:
                    return LockInfo(**values)
                held = _lock_from_row(conn.execute(sa.select(t).where(t.c.name == name)).first())
                reason = None if held is None else stale_reason(held, now)
                taken = (
                    held is not None
                    and reason is not None
                    and conn.execute(
                        t.update().where(t.c.name == name, t.c.token == held.token).values(**values)
                    ).rowcount
                    == 1
                )
            if taken:
                log.warning("took over transition lock %r from %s: %s", name, held.holder, reason)
                return LockInfo(**values)
            if held is None:
                continue  # released between our insert and our read: try again at once
            waited = time.monotonic() - start
            if waited >= wait:
                raise LockBusy(name, held.holder, held.expires_at, waited)
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(wait - waited, 0.0)))
            delay = min(delay * 2, 0.5)

    def refresh_lock(self, lock: LockInfo, ttl: timedelta = DEFAULT_LOCK_TTL) -> LockInfo:
        """Push the lease of a held lock to `ttl` from now; LockLost if it was taken over."""
        t = locks_table
        with self._write() as conn:
            expires = self._db_now(conn) + ttl
            n = conn.execute(
                t.update()
                .where(t.c.name == lock.name, t.c.token == lock.token)
                .values(expires_at=expires)
            ).rowcount
        if n != 1:
            raise LockLost(
                f"transition lock {lock.name!r} of {lock.holder} was taken over "
                "(its lease lapsed, or its holder looked dead)"
            )
        return lock.model_copy(update={"expires_at": expires})

    def ensure_lock_held(self, lock: LockInfo) -> None:
        """Raise LockLost unless `lock` is still ours and its lease runs (check before acting)."""
        t = locks_table
        with self._read() as conn:
            now = self._db_now(conn)
            row = conn.execute(
                sa.select(t.c.expires_at).where(t.c.name == lock.name, t.c.token == lock.token)
            ).first()
        if row is None or row.expires_at <= now:
            state = "was taken over" if row is None else "lease lapsed"
            raise LockLost(f"transition lock {lock.name!r} of {lock.holder} {state}")

    def release_lock(self, lock: LockInfo) -> bool:
        """Release a held lock; False (and a warning) when it had expired and was taken over."""
        t = locks_table
        with self._write() as conn:
            n = conn.execute(
                sa.delete(t).where(t.c.name == lock.name, t.c.token == lock.token)
            ).rowcount
        if n != 1:
            log.warning(
                "transition lock %r was taken over while %s held it; "
                "its lease could not be refreshed (was the store unreachable?)",
                lock.name,
                lock.holder,
            )
        return n == 1

    @contextmanager
    def transition_lock(
        self,
        model_name: str,
        owner: str,
        ttl: timedelta = DEFAULT_LOCK_TTL,
        wait: float = 30.0,
    ) -> Iterator[LockInfo]:
        """Hold the per-model transition lock for the block, refreshing its lease every ttl/3.

        If the lease was lost meanwhile (taken over after refreshes failed for a whole ttl),
        the block's end raises LockLost: another holder may have acted at the same time. An
        exception from the block itself is not masked (the loss is logged).
        """
        lock = self.acquire_lock(f"transition:{model_name}", owner, ttl=ttl, wait=wait)
        keeper = _LeaseKeeper(self, lock, ttl).start()
        try:
            yield lock
        finally:
            keeper.stop()
            released = self.release_lock(keeper.lock)
        if keeper.lost is not None:
            raise keeper.lost
        if not released:
            raise LockLost(f"transition lock {lock.name!r} of {lock.holder} was taken over")
