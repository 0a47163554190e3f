"""Labels (ground truth by request id) and their joins with the prediction log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.base import StoreBase, chunks, loads
from mlops_assets.lifecycle.store.models import LabelResult, Role
from mlops_assets.lifecycle.store.tables import labels_table, prediction_log_table


class LabelsMixin(StoreBase):
    """Storing labels and reading labelled predictions."""

    def add_labels(self, items: Iterable[tuple[str, str]], source: str) -> LabelResult:
        """Store labels (upsert: the last label for a request wins).

        Every label is stored, even for a request not (yet) in the prediction log: the log
        writer flushes asynchronously, so labels may arrive first. Those ids are reported in
        `unknown_ids`; they join the evaluation once their predictions are logged.
        """
        latest: dict[str, str] = {}
        for request_id, label in items:
            request_id = str(request_id).strip()
            if not request_id:
                raise ValueError("a label needs a non-empty request_id")
            if label is None or str(label).strip() == "":
                raise ValueError(f"the label for request {request_id!r} is empty")
            latest.pop(request_id, None)  # keep input order of the last occurrence
            latest[request_id] = str(label).strip()
        if not latest:
            return LabelResult(accepted=0, unknown_ids=[])
        now = utcnow()
        t, p = labels_table, prediction_log_table
        values = [
            {"request_id": rid, "label": lab, "source": source, "time": now}
            for rid, lab in latest.items()
        ]
        stmt = self._insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.request_id],
            set_={
                "label": stmt.excluded.label,
                "source": stmt.excluded.source,
                "time": stmt.excluded.time,
            },
        )
        ids = list(latest)
        known: set[str] = set()
        with self._write() as conn:
            conn.execute(stmt, values)
            for chunk in chunks(ids):
                known.update(
                    conn.execute(
                        sa.select(p.c.request_id).distinct().where(p.c.request_id.in_(chunk))
                    ).scalars()
                )
        return LabelResult(accepted=len(ids), unknown_ids=[i for i in ids if i not in known])

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
