"""Labels (ground truth by request id), their conflicts, and their joins with the prediction log.

Who may label what (`LabelsMixin.add_labels`):

- an API label (`/feedback`, source "api") is stored only for a request the prediction log
  holds; a label file (source "file" or "file:<name>", operator-controlled `data/labels/`) may
  label requests whose predictions are not logged yet (the log writer flushes asynchronously);
- the first label of a request wins. A label file outranks the API: a file label replaces an
  API label, an API label never replaces any label, and neither replaces a label of its own
  kind. Every differing second label is recorded in `label_conflicts`; an identical repeat is a
  duplicate (idempotent), not a conflict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.base import StoreBase, chunks, loads
from mlops_assets.lifecycle.store.models import LabelConflict, LabelResult, RejectedLabel, Role
from mlops_assets.lifecycle.store.tables import (
    label_conflicts_table,
    labels_table,
    prediction_log_table,
)

# The longest request id a label can name: the prediction log's (and the labels') column width.
MAX_REQUEST_ID_LENGTH = 128
_PG_LABELS_LOCK = 0x6D6C6F70736C  # pg_advisory_xact_lock key: one add_labels at a time ("mlopsl")


def is_file_source(source: str) -> bool:
    """Whether `source` names operator-controlled label files ("file" or "file:<name>")."""
    return source == "file" or source.startswith("file:")


def source_rank(source: str) -> int:
    """How much a label source is trusted: 2 for label files, 1 for anything else (the API)."""
    return 2 if is_file_source(source) else 1


def _storable_id(request_id: str) -> bool:
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        return False
    try:
        request_id.encode("utf-8")  # a lone surrogate cannot be stored (nor logged)
    except UnicodeEncodeError:
        return False
    return True


def _parse_items(items: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    parsed = []
    for request_id, label in items:
        rid = str(request_id).strip()
        if not rid:
            raise ValueError("a label needs a non-empty request_id")
        if label is None or str(label).strip() == "":
            raise ValueError(f"the label for request {rid!r} is empty")
        text = str(label).strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"the label for request {rid!r} is not valid text") from None
        parsed.append((rid, text))
    return parsed


class LabelsMixin(StoreBase):
    """Storing labels (first wins, file over API, conflicts recorded) and reading them."""

    def add_labels(
        self,
        items: Iterable[tuple[str, str]],
        source: str,
        *,
        require_known: bool | None = None,
    ) -> LabelResult:
        """Store labels: the first label of a request wins; a label file outranks the API.

        `require_known` (default: True unless `source` is a label file, "file" or "file:<name>")
        rejects, with reason `unknown_id`, labels for requests the prediction log does not
        hold (and ids that cannot be in it: over `MAX_REQUEST_ID_LENGTH`, or not valid text).
        Without it (label files) such labels are stored and join the evaluation once their
        predictions are logged; their ids are listed in `unknown_ids` either way.

        A differing label for a request that already has one replaces it only when `source`
        outranks the stored label's source (a file label over an API label); otherwise it is
        rejected with reason `conflict`. Both outcomes are recorded in `label_conflicts` (an
        offer already recorded against the same stored label is not recorded again). An equal
        label is a duplicate: nothing changes, except that a file repeating an API label takes
        the label over, so a later file cannot replace it. Within one call the first occurrence
        of an id counts, later ones are compared with it.

        One transaction (serialised with other `add_labels` calls), id lookups in chunks.
        Raises ValueError for an empty source, request id or label.
        """
        source = str(source).strip()
        if not source:
            raise ValueError("labels need a source")
        if require_known is None:
            require_known = not is_file_source(source)
        parsed = _parse_items(items)
        result = LabelResult(accepted=0)
        if not parsed:
            return result
        ids = list(dict.fromkeys(rid for rid, _ in parsed if _storable_id(rid)))
        rank = source_rank(source)
        now = utcnow()
        with self._write() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LABELS_LOCK)))
            stored = self._stored_labels(conn, ids)
            known = self._logged_ids(conn, ids)
            state = dict(stored)  # request_id -> (label, source), as this call leaves it
            writes: dict[str, tuple[str, str]] = {}
            conflicts: list[dict] = []
            unknown: dict[str, None] = {}
            for rid, label in parsed:
                if not _storable_id(rid) or rid not in known:
                    unknown[rid] = None
                    if require_known or not _storable_id(rid):
                        result.rejected.append(RejectedLabel(request_id=rid, reason="unknown_id"))
                        continue
                current = state.get(rid)
                if current is None:
                    state[rid] = writes[rid] = (label, source)
                    result.accepted += 1
                    continue
                old_label, old_source = current
                outranks = rank > source_rank(old_source)
                if old_label == label:
                    result.duplicates += 1
                    if outranks:  # the file vouches for it now: the API can no longer be undone
                        state[rid] = writes[rid] = (label, source)
                    continue
                result.conflicts += 1
                conflicts.append(
                    {
                        "request_id": rid,
                        "existing_label": old_label,
                        "existing_source": old_source,
                        "offered_label": label,
                        "offered_source": source,
                        "time": now,
                        "resolution": "replaced" if outranks else "kept",
                    }
                )
                if outranks:
                    state[rid] = writes[rid] = (label, source)
                    result.accepted += 1
                else:
                    result.rejected.append(RejectedLabel(request_id=rid, reason="conflict"))
            self._write_labels(conn, writes, stored, now)
            self._record_conflicts(conn, conflicts)
        result.unknown_ids = list(unknown)
        return result

    @staticmethod
    def _stored_labels(conn: Connection, ids: list[str]) -> dict[str, tuple[str, str]]:
        t = labels_table
        out: dict[str, tuple[str, str]] = {}
        for chunk in chunks(ids):
            rows = conn.execute(
                sa.select(t.c.request_id, t.c.label, t.c.source).where(t.c.request_id.in_(chunk))
            )
            out.update({r.request_id: (r.label, r.source) for r in rows})
        return out

    @staticmethod
    def _logged_ids(conn: Connection, ids: list[str]) -> set[str]:
        p = prediction_log_table
        known: set[str] = set()
        for chunk in chunks(ids):
            known.update(
                conn.execute(
                    sa.select(p.c.request_id).distinct().where(p.c.request_id.in_(chunk))
                ).scalars()
            )
        return known

    @staticmethod
    def _write_labels(
        conn: Connection,
        writes: dict[str, tuple[str, str]],
        stored: dict[str, tuple[str, str]],
        now: datetime,
    ) -> None:
        t = labels_table
        new = [
            {"request_id": rid, "label": lab, "source": src, "time": now}
            for rid, (lab, src) in writes.items()
            if rid not in stored
        ]
        changed = [
            {"rid": rid, "new_label": lab, "new_source": src, "new_time": now}
            for rid, (lab, src) in writes.items()
            if rid in stored
        ]
        if new:
            conn.execute(t.insert(), new)
        if changed:
            conn.execute(
                sa.update(t)
                .where(t.c.request_id == sa.bindparam("rid"))
                .values(
                    label=sa.bindparam("new_label"),
                    source=sa.bindparam("new_source"),
                    time=sa.bindparam("new_time"),
                ),
                changed,
            )

    @staticmethod
    def _record_conflicts(conn: Connection, conflicts: list[dict]) -> None:
        if not conflicts:
            return
        c = label_conflicts_table

        def key(row: dict) -> tuple[str, str, str, str]:
            return (
                row["request_id"],
                row["existing_label"],
                row["offered_label"],
                row["offered_source"],
            )

        seen: set[tuple[str, str, str, str]] = set()
        for chunk in chunks(list(dict.fromkeys(r["request_id"] for r in conflicts))):
            rows = conn.execute(
                sa.select(
                    c.c.request_id, c.c.existing_label, c.c.offered_label, c.c.offered_source
                ).where(c.c.request_id.in_(chunk))
            )
            seen.update(tuple(r) for r in rows)
        fresh = []
        for row in conflicts:
            if key(row) not in seen:
                seen.add(key(row))
                fresh.append(row)
        if fresh:
            conn.execute(c.insert(), fresh)

    def label_conflicts(
        self, limit: int | None = 100, *, request_id: str | None = None
    ) -> list[LabelConflict]:
        """Recorded label conflicts, newest first (of one request when `request_id` is given)."""
        c = label_conflicts_table
        q = sa.select(c).order_by(c.c.seq.desc())
        if request_id is not None:
            q = q.where(c.c.request_id == request_id)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [LabelConflict.model_validate(dict(r._mapping)) for r in conn.execute(q)]

    def label_conflict_count(self) -> int:
        """How many label conflicts are recorded (for a metric)."""
        with self._read() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(label_conflicts_table)).scalar()
                or 0
            )

    def labels(self, request_ids: Sequence[str]) -> dict[str, str]:
        """The stored label of each of `request_ids` that has one."""
        t = labels_table
        out: dict[str, str] = {}
        with self._read() as conn:
            for chunk in chunks(list(request_ids)):
                rows = conn.execute(
                    sa.select(t.c.request_id, t.c.label).where(t.c.request_id.in_(chunk))
                )
                out.update({r.request_id: r.label for r in rows})
        return out

    def labelled_pairs(
        self,
        champion_version: str,
        shadow_version: str,
        since: datetime | None = None,
        *,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Labelled requests answered by both the champion and the shadow (the same rows).

        Columns: request_id, label, champion_prediction, champion_probabilities,
        shadow_prediction, shadow_probabilities. A request where either model failed
        (error logged, no prediction) is left out for both, oldest request first.
        """
        c = prediction_log_table.alias("c")
        s = prediction_log_table.alias("s")
        lab = labels_table
        q = (
            sa.select(
                c.c.request_id,
                lab.c.label,
                c.c.prediction.label("champion_prediction"),
                c.c.probabilities.label("champion_probabilities"),
                s.c.prediction.label("shadow_prediction"),
                s.c.probabilities.label("shadow_probabilities"),
            )
            .select_from(
                c.join(s, s.c.request_id == c.c.request_id).join(
                    lab, lab.c.request_id == c.c.request_id
                )
            )
            .where(
                c.c.role == "champion",
                c.c.model_version == str(champion_version),
                s.c.role == "shadow",
                s.c.model_version == str(shadow_version),
                c.c.error.is_(None),
                s.c.error.is_(None),
                c.c.prediction.is_not(None),
                s.c.prediction.is_not(None),
            )
            .order_by(c.c.time, c.c.seq)
        )
        if since is not None:
            q = q.where(c.c.time >= since)
        if model_name is not None:
            q = q.where(c.c.model_name == model_name, s.c.model_name == model_name)
        columns = [
            "request_id",
            "label",
            "champion_prediction",
            "champion_probabilities",
            "shadow_prediction",
            "shadow_probabilities",
        ]
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for row in rows:
            row["champion_probabilities"] = loads(row["champion_probabilities"])
            row["shadow_probabilities"] = loads(row["shadow_probabilities"])
        return pd.DataFrame(rows, columns=columns)

    def labelled_predictions(
        self,
        model_version: str,
        since: datetime | None = None,
        *,
        role: Role | None = None,
        model_name: str | None = None,
    ) -> pd.DataFrame:
        """Labelled, successful predictions of one version (probation of a new champion).

        Columns: request_id, time, role, label, prediction, probabilities; oldest first.
        """
        p, lab = prediction_log_table, labels_table
        q = (
            sa.select(
                p.c.request_id, p.c.time, p.c.role, lab.c.label, p.c.prediction, p.c.probabilities
            )
            .select_from(p.join(lab, lab.c.request_id == p.c.request_id))
            .where(
                p.c.model_version == str(model_version),
                p.c.error.is_(None),
                p.c.prediction.is_not(None),
            )
            .order_by(p.c.time, p.c.seq)
        )
        if since is not None:
            q = q.where(p.c.time >= since)
        if role is not None:
            q = q.where(p.c.role == role)
        if model_name is not None:
            q = q.where(p.c.model_name == model_name)
        columns = ["request_id", "time", "role", "label", "prediction", "probabilities"]
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for row in rows:
            row["probabilities"] = loads(row["probabilities"])
        return pd.DataFrame(rows, columns=columns)
