"""Feature drift results: one row per feature and method of a data file against a reference."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store.base import StoreBase
from mlops_assets.lifecycle.store.engine import as_utc
from mlops_assets.lifecycle.store.models import DriftRow
from mlops_assets.lifecycle.store.tables import drift_results_table


class DriftMixin(StoreBase):
    """Recording and reading drift results."""

    def record_drift(
        self,
        model_name: str,
        data_sha256: str,
        reference_version: str | None,
        results: Sequence[Any],
        dagster_run_id: str | None = None,
        *,
        computed_at: datetime | None = None,
    ) -> int:
        """Store one drift computation (`DriftResult`s); return how many rows were written.

        Idempotent: the results of the same data and reference replace the earlier ones in one
        transaction, so a re-run never duplicates rows.
        """
        t = drift_results_table
        when = as_utc(computed_at) if computed_at else utcnow()
        ref = None if reference_version is None else str(reference_version)
        rows = [
            {
                "model_name": model_name,
                "computed_at": when,
                "data_sha256": data_sha256,
                "reference_version": ref,
                "feature": r.feature,
                "method": r.method,
                "statistic": None if pd.isna(r.statistic) else float(r.statistic),
                "p_value": None if r.p_value is None or pd.isna(r.p_value) else float(r.p_value),
                "threshold": float(r.threshold),
                "drifted": bool(r.drifted),
                "dagster_run_id": dagster_run_id,
            }
            for r in results
        ]
        same = [
            t.c.model_name == model_name,
            t.c.data_sha256 == data_sha256,
            t.c.reference_version.is_(None) if ref is None else t.c.reference_version == ref,
        ]
        with self._write() as conn:
            if self.engine.dialect.name == "postgresql":
                # Serialise writers of the same computation (SQLite's BEGIN IMMEDIATE already
                # does); the unique constraint cannot, as a NULL reference never conflicts.
                key = f"drift:{model_name}:{data_sha256}:{ref}"
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
            conn.execute(sa.delete(t).where(*same))
            if rows:
                conn.execute(t.insert(), rows)
        return len(rows)

    @staticmethod
    def _drift_from_row(row: Any) -> DriftRow:
        data = dict(row._mapping)
        data.pop("rn", None)
        if data["statistic"] is None:
            data["statistic"] = float("nan")
        return DriftRow.model_validate(data)

    def latest_drift(self, model_name: str) -> list[DriftRow]:
        """The most recent result of each (feature, method) of a model, by feature and method."""
        t = drift_results_table
        rn = (
            sa.func.row_number()
            .over(
                partition_by=(t.c.feature, t.c.method),
                order_by=(t.c.computed_at.desc(), t.c.id.desc()),
            )
            .label("rn")
        )
        ranked = sa.select(t, rn).where(t.c.model_name == model_name).subquery()
        q = (
            sa.select(*(ranked.c[c.name] for c in t.columns))
            .where(ranked.c.rn == 1)
            .order_by(ranked.c.feature, ranked.c.method)
        )
        with self._read() as conn:
            return [self._drift_from_row(r) for r in conn.execute(q)]

    def drift_results(
        self, model_name: str, *, data_sha256: str | None = None, limit: int | None = None
    ) -> list[DriftRow]:
        """Stored drift results of a model, newest computation first (optionally one file)."""
        t = drift_results_table
        q = (
            sa.select(t)
            .where(t.c.model_name == model_name)
            .order_by(t.c.computed_at.desc(), t.c.id.desc())
        )
        if data_sha256 is not None:
            q = q.where(t.c.data_sha256 == data_sha256)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._drift_from_row(r) for r in conn.execute(q)]
