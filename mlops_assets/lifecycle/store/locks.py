"""Transition locks: one row per lock name, with an owner token and an expiry."""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.base import StoreBase
from mlops_assets.lifecycle.store.errors import LockBusy, LockLost
from mlops_assets.lifecycle.store.models import LockInfo
from mlops_assets.lifecycle.store.tables import locks_table

log = logging.getLogger(__name__)


class LocksMixin(StoreBase):
    """Taking, refreshing and releasing transition locks across processes and hosts."""

    def lock_holder(self, name: str) -> LockInfo | None:
        """Who holds lock `name` (even if expired), or None."""
        t = locks_table
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).first()
        return None if row is None else LockInfo.model_validate(dict(row._mapping))

    def acquire_lock(
        self,
        name: str,
        owner: str,
        ttl: timedelta = timedelta(minutes=10),
        wait: float = 30.0,
    ) -> LockInfo:
        """Take lock `name` (a row in `locks`), taking over an expired one; LockBusy after `wait`.

        The lock works across processes and hosts sharing the store. Expiry uses this host's
        clock, so hosts sharing a PostgreSQL store need synchronised clocks.
        """
        t = locks_table
        token = uuid.uuid4().hex
        owner = f"{owner} ({socket.gethostname()}:{os.getpid()})"
        start = time.monotonic()
        delay = 0.02
        while True:
            now = utcnow()
            values = {
                "name": name,
                "owner": owner,
                "token": token,
                "acquired_at": now,
                "expires_at": now + ttl,
            }
            with self._write() as conn:
                inserted = conn.execute(
                    self._insert(t)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=[t.c.name])
                ).rowcount
                if inserted == 1:
                    return LockInfo(**values)
                held = conn.execute(sa.select(t).where(t.c.name == name)).first()
                taken = conn.execute(
                    t.update().where(t.c.name == name, t.c.expires_at <= now).values(**values)
                ).rowcount
            if taken == 1:
                log.warning(
                    "took over expired transition lock %r from %s",
                    name,
                    held.owner if held else "?",
                )
                return LockInfo(**values)
            waited = time.monotonic() - start
            if waited >= wait:
                raise LockBusy(
                    name, held.owner if held else None, held.expires_at if held else None, waited
                )
            time.sleep(min(delay * random.uniform(0.5, 1.5), max(wait - waited, 0.0)))
            delay = min(delay * 2, 0.5)

    def refresh_lock(self, lock: LockInfo, ttl: timedelta = timedelta(minutes=10)) -> LockInfo:
        """Push the expiry of a held lock forward; LockLost if it was taken over."""
        t = locks_table
        expires = utcnow() + ttl
        with self._write() as conn:
            n = conn.execute(
                t.update()
                .where(t.c.name == lock.name, t.c.token == lock.token)
                .values(expires_at=expires)
            ).rowcount
        if n != 1:
            raise LockLost(f"transition lock {lock.name!r} expired and was taken over")
        return lock.model_copy(update={"expires_at": expires})

    def release_lock(self, lock: LockInfo) -> bool:
        """Release a held lock; False (and a warning) when it had expired and was taken over."""
        t = locks_table
        with self._write() as conn:
            n = conn.execute(
                sa.delete(t).where(t.c.name == lock.name, t.c.token == lock.token)
            ).rowcount
        if n != 1:
            log.warning(
                "transition lock %r expired while %s held it and was taken over; "
                "raise its ttl if this cycle is legitimately long",
                lock.name,
                lock.owner,
            )
        return n == 1

    @contextmanager
    def transition_lock(
        self,
        model_name: str,
        owner: str,
        ttl: timedelta = timedelta(minutes=10),
        wait: float = 30.0,
    ) -> Iterator[LockInfo]:
        """Hold the per-model transition lock for the block (see `acquire_lock`)."""
        lock = self.acquire_lock(f"transition:{model_name}", owner, ttl=ttl, wait=wait)
        try:
            yield lock
        finally:
            self.release_lock(lock)
