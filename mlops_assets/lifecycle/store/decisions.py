"""Decisions (append-only records with a status) and the history of alias moves."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import Decision
from mlops_assets.lifecycle.store.base import StoreBase, dumps
from mlops_assets.lifecycle.store.engine import as_utc
from mlops_assets.lifecycle.store.errors import DecisionConflict, StoreError
from mlops_assets.lifecycle.store.models import AliasMove
from mlops_assets.lifecycle.store.tables import alias_history_table, decisions_table


def decision_content(rec: DecisionRecord) -> str:
    """A decision's content without its status, as canonical JSON (NaN-safe comparison)."""
    return dumps(rec.model_dump(mode="json", exclude={"status", "error"}))


class DecisionsMixin(StoreBase):
    """Decision records and alias history."""

    @staticmethod
    def _decision_from_row(row: sa.Row) -> DecisionRecord:
        rec = DecisionRecord.model_validate(json.loads(row.record))
        return rec.model_copy(
            update={"status": DecisionStatus(row.status), "error": row.error, "time": row.time}
        )

    def record_decision(self, rec: DecisionRecord) -> DecisionRecord:
        """Append a decision (idempotent for the same id and content); return it as stored."""
        rec = rec.model_copy(update={"time": as_utc(rec.time)})
        t = decisions_table
        try:
            with self._write() as conn:
                row = conn.execute(sa.select(t).where(t.c.id == rec.id)).first()
                if row is not None:
                    return self._same_decision(row, rec)
                conn.execute(
                    t.insert().values(
                        id=rec.id,
                        time=rec.time,
                        model_name=rec.model_name,
                        decision=rec.decision.value,
                        actor=rec.actor.value,
                        champion_version=rec.champion_version,
                        challenger_version=rec.challenger_version,
                        status=rec.status.value,
                        error=rec.error,
                        record=dumps(rec.model_dump(mode="json")),
                        updated_at=utcnow(),
                    )
                )
        except IntegrityError:  # the same id recorded concurrently (PostgreSQL)
            with self._read() as conn:
                return self._same_decision(
                    conn.execute(sa.select(t).where(t.c.id == rec.id)).one(), rec
                )
        return rec

    def _same_decision(self, row: sa.Row, rec: DecisionRecord) -> DecisionRecord:
        stored = self._decision_from_row(row)
        if decision_content(stored) != decision_content(rec):
            raise DecisionConflict(
                f"decision {rec.id} is already stored with different content; "
                "decision records are append-only"
            )
        return stored

    def set_status(
        self, decision_id: str, status: DecisionStatus, error: str | None = None
    ) -> DecisionRecord:
        """Move a decision from pending to applied or failed (the same status again is a no-op)."""
        status = DecisionStatus(status)
        t = decisions_table
        with self._write() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == decision_id).with_for_update()).first()
            if row is None:
                raise KeyError(f"no decision {decision_id}")
            current = DecisionStatus(row.status)
            if current == status:
                return self._decision_from_row(row)
            if current != DecisionStatus.PENDING or status not in (
                DecisionStatus.APPLIED,
                DecisionStatus.FAILED,
            ):
                raise StoreError(
                    f"decision {decision_id} is {current.value}; only pending -> applied|failed "
                    f"is allowed, not -> {status.value}"
                )
            conn.execute(
                t.update()
                .where(t.c.id == decision_id)
                .values(status=status.value, error=error, updated_at=utcnow())
            )
            row = conn.execute(sa.select(t).where(t.c.id == decision_id)).one()
        return self._decision_from_row(row)

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """One decision by id, or None."""
        t = decisions_table
        with self._read() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == decision_id)).first()
        return None if row is None else self._decision_from_row(row)

    def decisions(
        self,
        *,
        version: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        decision: Decision | None = None,
        model_name: str | None = None,
        status: DecisionStatus | None = None,
        limit: int | None = 50,
    ) -> list[DecisionRecord]:
        """Decisions, newest first; `version` matches the champion or the challenger version."""
        t = decisions_table
        q = sa.select(t).order_by(t.c.time.desc(), t.c.seq.desc())
        if version is not None:
            q = q.where(sa.or_(t.c.champion_version == version, t.c.challenger_version == version))
        if since is not None:
            q = q.where(t.c.time >= since)
        if until is not None:
            q = q.where(t.c.time <= until)
        if decision is not None:
            q = q.where(t.c.decision == Decision(decision).value)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        if status is not None:
            q = q.where(t.c.status == DecisionStatus(status).value)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._decision_from_row(r) for r in conn.execute(q)]

    def pending_decisions(self, model_name: str | None = None) -> list[DecisionRecord]:
        """Decisions not yet fully applied, oldest first (what reconcile rolls forward)."""
        t = decisions_table
        q = (
            sa.select(t)
            .where(t.c.status == DecisionStatus.PENDING.value)
            .order_by(t.c.time, t.c.seq)
        )
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        with self._read() as conn:
            return [self._decision_from_row(r) for r in conn.execute(q)]

    def decision_counts(self, model_name: str | None = None) -> dict[str, int]:
        """How many decision records each decision value has (every Decision, 0 when none)."""
        t = decisions_table
        q = sa.select(t.c.decision, sa.func.count()).group_by(t.c.decision)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        counts = {d.value: 0 for d in Decision}
        with self._read() as conn:
            counts.update({str(d): int(n) for d, n in conn.execute(q)})
        return counts

    # --- alias history -----------------------------------------------------------------------

    @staticmethod
    def _move_from_row(row: sa.Row) -> AliasMove:
        return AliasMove(
            model_name=row.model_name,
            alias=row.alias,
            from_version=row.from_version,
            to_version=row.to_version,
            actor=row.actor,
            decision_id=row.decision_id,
            time=row.time,
        )

    def record_alias_move(
        self,
        model_name: str,
        alias: str,
        from_version: str | None,
        to_version: str | None,
        actor: str,
        decision_id: str | None,
        time: datetime | None = None,
    ) -> AliasMove:
        """Append one alias move; for a decision that already moved this alias, return that move."""
        t = alias_history_table
        alias = str(alias)
        values = {
            "model_name": model_name,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "actor": str(actor),
            "decision_id": decision_id,
            "time": as_utc(time) if time else utcnow(),
        }
        existing_q = sa.select(t).where(
            t.c.decision_id == decision_id, t.c.model_name == model_name, t.c.alias == alias
        )
        try:
            with self._write() as conn:
                if decision_id is not None:
                    row = conn.execute(existing_q).first()
                    if row is not None:
                        return self._checked_move(row, to_version)
                conn.execute(t.insert().values(**values))
        except IntegrityError:  # a concurrent writer (PostgreSQL) recorded it first
            with self._read() as conn:
                return self._checked_move(conn.execute(existing_q).one(), to_version)
        return AliasMove(**values)

    def _checked_move(self, row: sa.Row, to_version: str | None) -> AliasMove:
        move = self._move_from_row(row)
        if move.to_version != to_version:
            raise StoreError(
                f"decision {move.decision_id} already moved alias {move.alias!r} to "
                f"{move.to_version!r}, not {to_version!r}"
            )
        return move

    def alias_history(
        self, model_name: str, alias: str | None = None, *, decision_id: str | None = None
    ) -> list[AliasMove]:
        """Alias moves of a model, oldest first (optionally one alias or one decision)."""
        t = alias_history_table
        q = sa.select(t).where(t.c.model_name == model_name).order_by(t.c.time, t.c.seq)
        if alias is not None:
            q = q.where(t.c.alias == str(alias))
        if decision_id is not None:
            q = q.where(t.c.decision_id == decision_id)
        with self._read() as conn:
            return [self._move_from_row(r) for r in conn.execute(q)]

    def version_at(self, model_name: str, alias: str, when: datetime) -> str | None:
        """Which version `alias` pointed at, at time `when` (None: it did not exist)."""
        t = alias_history_table
        q = (
            sa.select(t.c.to_version)
            .where(t.c.model_name == model_name, t.c.alias == str(alias), t.c.time <= when)
            .order_by(t.c.time.desc(), t.c.seq.desc())
            .limit(1)
        )
        with self._read() as conn:
            return conn.execute(q).scalar()
