"""The prediction log: rows appended by the server, read by shadow tests and probation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from mlops_assets.lifecycle.store.base import StoreBase, dumps, loads
from mlops_assets.lifecycle.store.engine import as_utc
from mlops_assets.lifecycle.store.models import (
    PredictionLogStats,
    PredictionRow,
    RetentionWindow,
    Role,
    RoleStats,
)
from mlops_assets.lifecycle.store.tables import (
    PREDICTION_LOG_COLUMNS,
    label_conflicts_table,
    labels_table,
    prediction_log_table,
)

log = logging.getLogger(__name__)


class PredictionLogMixin(StoreBase):
    """Appending, reading, summarising and pruning logged predictions."""

    def log_predictions(self, rows: Sequence[PredictionRow]) -> int:
        """Append prediction rows in one transaction; return how many were new."""
        return self.append_prediction_rows(
            [
                (
                    r.request_id,
                    r.time,
                    r.role,
                    r.model_name,
                    str(r.model_version),
                    dumps(r.inputs),
                    r.prediction,
                    None if r.probabilities is None else dumps(r.probabilities),
                    r.latency_ms,
                    r.error,
                )
                for r in rows
            ]
        )

    def append_prediction_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Append pre-encoded rows (`PREDICTION_LOG_COLUMNS` order, JSON as text); count new.

        The serving hot path: no per-row model objects. A row already logged (same request,
        role and version, e.g. a retried flush) is skipped, not doubled.
        """
        if not rows:
            return 0
        t = prediction_log_table
        if self.engine.dialect.name == "sqlite":
            # The driver's executemany is ~10x cheaper per row than SQLAlchemy's parameter
            # processing; times go in as the same naive-UTC text UTCDateTime writes.
            stamp: dict[datetime, str] = {}

            def text(when: datetime) -> str:
                if when not in stamp:
                    stamp[when] = as_utc(when).strftime("%Y-%m-%d %H:%M:%S.%f")
                return stamp[when]

            cols = ", ".join(PREDICTION_LOG_COLUMNS)
            marks = ", ".join("?" for _ in PREDICTION_LOG_COLUMNS)
            sql = f"INSERT OR IGNORE INTO {t.name} ({cols}) VALUES ({marks})"
            params = [(r[0], text(r[1]), *r[2:]) for r in rows]
            with self._write() as conn:
                count = conn.exec_driver_sql(sql, params).rowcount
        elif self.engine.dialect.driver == "psycopg2":
            # psycopg2's executemany is a round trip per row (~6k rows/s); execute_values
            # sends multi-row VALUES pages, and RETURNING counts the rows really inserted.
            from psycopg2.extras import execute_values

            cols = ", ".join(PREDICTION_LOG_COLUMNS)
            sql = (
                f"INSERT INTO {t.name} ({cols}) VALUES %s "
                "ON CONFLICT (request_id, role, model_version) DO NOTHING RETURNING 1"
            )
            params = [(r[0], as_utc(r[1]), r[2], r[3], str(r[4]), *r[5:]) for r in rows]
            with self._write() as conn:
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    count = len(execute_values(cursor, sql, params, page_size=1000, fetch=True))
                finally:
                    cursor.close()
        else:
            stmt = self._insert(t).on_conflict_do_nothing(
                index_elements=[t.c.request_id, t.c.role, t.c.model_version]
            )
            values = [dict(zip(PREDICTION_LOG_COLUMNS, r, strict=True)) for r in rows]
            with self._write() as conn:
                count = conn.execute(stmt, values).rowcount
        return len(rows) if count is None or count < 0 else count

    @staticmethod
    def _prediction_from_row(row: sa.Row) -> PredictionRow:
        return PredictionRow(
            request_id=row.request_id,
            time=row.time,
            role=row.role,
            model_name=row.model_name,
            model_version=row.model_version,
            inputs=loads(row.inputs) or {},
            prediction=row.prediction,
            probabilities=loads(row.probabilities),
            latency_ms=row.latency_ms,
            error=row.error,
        )

    def predictions(
        self,
        *,
        model_version: str | None = None,
        role: Role | None = None,
        since: datetime | None = None,
        model_name: str | None = None,
        request_ids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[PredictionRow]:
        """Logged predictions, newest first."""
        t = prediction_log_table
        q = sa.select(t).order_by(t.c.time.desc(), t.c.seq.desc())
        if model_version is not None:
            q = q.where(t.c.model_version == str(model_version))
        if role is not None:
            q = q.where(t.c.role == role)
        if since is not None:
            q = q.where(t.c.time >= since)
        if model_name is not None:
            q = q.where(t.c.model_name == model_name)
        if request_ids is not None:
            q = q.where(t.c.request_id.in_(list(request_ids)))
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [self._prediction_from_row(r) for r in conn.execute(q)]

    def prune_predictions(
        self,
        before: datetime,
        keep_versions: set[str] | None = None,
        *,
        keep: Sequence[RetentionWindow] = (),
        model_name: str | None = None,
        batch_rows: int = 20_000,
    ) -> int:
        """Delete predictions older than `before`, of every role, except what is still needed.

        Kept whatever their age: rows of `keep_versions` (any role), and rows inside a `keep`
        window (its role, since its time, of its version and model when it names them: an open
        shadow test or probation window). With `model_name`, only that model's rows are pruned
        (each model's retention knows its own windows; a shared store holds other models too).
        Deletes in transactions of at most `batch_rows` rows, so the server's log writer is
        never locked out for long. Labels received before `before` whose request no longer has
        any logged prediction go too, and so do label conflicts recorded before `before`.
        Returns the number of prediction rows deleted.
        """
        p, lab, conf = prediction_log_table, labels_table, label_conflicts_table
        before = as_utc(before)
        condition = [p.c.time < before]
        if model_name is not None:
            condition.append(p.c.model_name == model_name)
        if keep_versions:
            condition.append(p.c.model_version.not_in(sorted(str(v) for v in keep_versions)))
        for window in keep:
            inside = [p.c.role == window.role, p.c.time >= as_utc(window.since)]
            if window.model_version is not None:
                inside.append(p.c.model_version == str(window.model_version))
            if window.model_name is not None:
                inside.append(p.c.model_name == window.model_name)
            condition.append(sa.not_(sa.and_(*inside)))
        doomed = sa.select(p.c.seq).where(*condition).limit(batch_rows)
        deleted = 0
        while True:
            with self._write() as conn:
                count = conn.execute(sa.delete(p).where(p.c.seq.in_(doomed))).rowcount
            deleted += count
            if count < batch_rows:
                break
        with self._write() as conn:
            orphans = conn.execute(
                sa.delete(lab).where(
                    lab.c.time < before,
                    ~sa.exists().where(p.c.request_id == lab.c.request_id),
                )
            ).rowcount
            conflicts = conn.execute(sa.delete(conf).where(conf.c.time < before)).rowcount
        log.info(
            "pruned %d predictions, %d orphaned labels and %d label conflicts before %s",
            deleted,
            orphans,
            conflicts,
            before,
        )
        return deleted

    def prediction_log_stats(self, *, exact: bool = True) -> PredictionLogStats:
        """Rows, approximate bytes and oldest row time of the prediction log (a size metric).

        `exact=False` skips the row count (a scan of the log's smallest index) for an estimate:
        PostgreSQL's planner count (`reltuples`, fresh after ANALYZE), or SQLite's span of
        sequence numbers (an upper bound: retention deletes the oldest rows).
        """
        p = prediction_log_table
        postgres = self.engine.dialect.name == "postgresql"
        with self._read() as conn:
            oldest = conn.execute(sa.select(sa.func.min(p.c.time))).scalar()
            rows: int | None = None
            if not exact and postgres:
                estimate = conn.execute(
                    sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                    {"t": p.name},
                ).scalar()
                rows = int(estimate) if estimate is not None and estimate >= 0 else None
            elif not exact:
                span = sa.select(sa.func.min(p.c.seq), sa.func.max(p.c.seq))
                low, high = conn.execute(span).one()
                rows = 0 if low is None else int(high) - int(low) + 1
            if rows is None:
                rows = int(conn.execute(sa.select(sa.func.count()).select_from(p)).scalar() or 0)
                exact = True
            if postgres:
                size = conn.execute(
                    sa.text("SELECT pg_total_relation_size(to_regclass(:t))"), {"t": p.name}
                ).scalar()
                scope = "table"
            else:
                page_size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
                size = (pages - free) * page_size
                scope = "database"
        return PredictionLogStats(
            rows=rows,
            rows_exact=exact,
            approx_bytes=None if size is None else int(size),
            bytes_scope=scope,
            oldest=None if oldest is None else as_utc(oldest),
        )

    def role_stats(self, model_name: str, version: str, role: Role, since: datetime) -> RoleStats:
        """Requests, errors and p50 latency of a version's predictions in one role since `since`.

        Reads two columns in SQL rather than whole `PredictionRow`s, so a long test with
        millions of logged requests stays cheap.
        """
        p = prediction_log_table
        where = (
            p.c.model_name == model_name,
            p.c.model_version == str(version),
            p.c.role == role,
            p.c.time >= as_utc(since),
        )
        with self._read() as conn:
            requests, errors = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.case((p.c.error.is_not(None), 1), else_=0)), 0),
                ).where(*where)
            ).one()
            latencies = (
                conn.execute(
                    sa.select(p.c.latency_ms).where(
                        *where, p.c.error.is_(None), p.c.latency_ms.is_not(None)
                    )
                )
                .scalars()
                .all()
            )
        p50 = float(np.median(np.asarray(latencies, dtype=float))) if latencies else None
        return RoleStats(requests=int(requests), errors=int(errors or 0), p50_latency_ms=p50)
