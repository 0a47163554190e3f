"""Shadow tests: one per version, opened, extended and closed by decisions."""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.base import StoreBase
from mlops_assets.lifecycle.store.engine import as_utc
from mlops_assets.lifecycle.store.errors import StoreError
from mlops_assets.lifecycle.store.models import ShadowTest
from mlops_assets.lifecycle.store.tables import shadow_tests_table

log = logging.getLogger(__name__)


class ShadowTestsMixin(StoreBase):
    """The shadow test of each version."""

    @staticmethod
    def _shadow_from_row(row: sa.Row) -> ShadowTest:
        data = dict(row._mapping)
        data.pop("seq", None)
        return ShadowTest.model_validate(data)

    def _shadow_rows(
        self, conn: Connection, version: str, model_name: str | None, *, lock: bool = False
    ) -> list[sa.Row]:
        t = shadow_tests_table
        q = sa.select(t).where(t.c.version == str(version))
        if lock:
            q = q.with_for_update()  # PostgreSQL row lock; SQLite's BEGIN IMMEDIATE suffices
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        rows = list(conn.execute(q))
        if len(rows) > 1:
            raise StoreError(
                f"version {version} has shadow tests under several models; pass model_name"
            )
        return rows

    def shadow_test(self, version: str, model_name: str | None = None) -> ShadowTest | None:
        """The shadow test of a version (open or closed), or None."""
        with self._read() as conn:
            rows = self._shadow_rows(conn, version, model_name)
        return self._shadow_from_row(rows[0]) if rows else None

    def open_shadow_test(
        self,
        model_name: str,
        version: str,
        expires_at: datetime,
        started_at: datetime | None = None,
        decision_id: str | None = None,
    ) -> ShadowTest:
        """Open the shadow test of a version; if it is already open, return it unchanged."""
        t = shadow_tests_table
        started = as_utc(started_at) if started_at else utcnow()
        try:
            with self._write() as conn:
                rows = self._shadow_rows(conn, version, model_name)
                if rows:
                    test = self._shadow_from_row(rows[0])
                    if test.status != "open":
                        raise StoreError(
                            f"the shadow test of {model_name} v{version} already ended "
                            f"(decision {test.decision_id}); a version is shadow-tested once"
                        )
                    return test
                conn.execute(
                    t.insert().values(
                        model_name=model_name,
                        version=str(version),
                        started_at=started,
                        expires_at=as_utc(expires_at),
                        extensions=0,
                        status="open",
                        opened_by=decision_id,
                    )
                )
        except IntegrityError:  # opened concurrently (PostgreSQL)
            found = self.shadow_test(version, model_name)
            assert found is not None
            return found
        return ShadowTest(
            model_name=model_name,
            version=str(version),
            started_at=started,
            expires_at=as_utc(expires_at),
            opened_by=decision_id,
        )

    def extend_shadow_test(
        self, version: str, new_expires_at: datetime, *, model_name: str | None = None
    ) -> ShadowTest:
        """Move an open test's expiry later and count the extension.

        Idempotent: a `new_expires_at` not later than the current expiry changes nothing, so
        re-running the same extension does not count it twice.
        """
        t = shadow_tests_table
        new_expires_at = as_utc(new_expires_at)
        with self._write() as conn:
            rows = self._shadow_rows(conn, version, model_name, lock=True)
            if not rows or rows[0].status != "open":
                raise StoreError(f"version {version} has no open shadow test to extend")
            row = rows[0]
            if new_expires_at > row.expires_at:
                conn.execute(
                    t.update()
                    .where(t.c.seq == row.seq)
                    .values(expires_at=new_expires_at, extensions=row.extensions + 1)
                )
            row = conn.execute(sa.select(t).where(t.c.seq == row.seq)).one()
        return self._shadow_from_row(row)

    def close_shadow_test(
        self, version: str, decision_id: str, *, model_name: str | None = None
    ) -> ShadowTest:
        """Close a version's shadow test with the decision that ended it (idempotent)."""
        t = shadow_tests_table
        with self._write() as conn:
            rows = self._shadow_rows(conn, version, model_name, lock=True)
            if not rows:
                raise StoreError(f"version {version} has no shadow test to close")
            row = rows[0]
            if row.status == "open":
                conn.execute(
                    t.update()
                    .where(t.c.seq == row.seq)
                    .values(status="closed", decision_id=decision_id, closed_at=utcnow())
                )
                row = conn.execute(sa.select(t).where(t.c.seq == row.seq)).one()
            elif row.decision_id != decision_id:
                log.warning(
                    "shadow test of v%s was already closed by decision %s, not %s",
                    version,
                    row.decision_id,
                    decision_id,
                )
        return self._shadow_from_row(row)

    def open_shadow_tests(self, model_name: str) -> list[ShadowTest]:
        """Open shadow tests of a model, soonest expiry first."""
        t = shadow_tests_table
        q = (
            sa.select(t)
            .where(t.c.model_name == model_name, t.c.status == "open")
            .order_by(t.c.expires_at, t.c.seq)
        )
        with self._read() as conn:
            return [self._shadow_from_row(r) for r in conn.execute(q)]

    def expired_shadow_tests(
        self, model_name: str, now: datetime | None = None
    ) -> list[ShadowTest]:
        """Open shadow tests whose expiry is at or before `now` (default: the database's time).

        The database's clock is the one every host sharing the store agrees on; `now` lets a
        caller (or a test) judge at another time.
        """
        t = shadow_tests_table
        with self._read() as conn:
            at = as_utc(now) if now else self._db_now(conn)
            q = (
                sa.select(t)
                .where(t.c.model_name == model_name, t.c.status == "open", t.c.expires_at <= at)
                .order_by(t.c.expires_at, t.c.seq)
            )
            return [self._shadow_from_row(r) for r in conn.execute(q)]
