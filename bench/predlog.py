"""Prediction-log insert cost, side by side. Prints; never asserts.

Run: `python bench/predlog.py [--batches N] [--rows R] [--pg-url URL]`.
Each round appends one `R`-row batch (the rows `/batch_predict` logs for one request, encoded
as the writer thread encodes them) to a v3 store and to a v4 store, in alternating order, so
both see the same machine load. v4 dropped the `request_id` index that the unique key
`(request_id, role, model_version)` already covers. SQLite always; PostgreSQL too when
`--pg-url` (or MLOPS_TEST_PG_URL) is given, each store in a throwaway schema; there the
portable SQLAlchemy executemany (the store's path before the psycopg2 fast path) is the
baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# tests_support.pg_schema_url: a throwaway PostgreSQL schema per store.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
from tests_support import pg_schema_url

from mlops_assets.lifecycle.store import (
    CURRENT_SCHEMA_VERSION,
    PREDICTION_LOG_COLUMNS,
    LifecycleStore,
    prediction_log_table,
)
from serving.predlog import LogEntry, encode_entries

OLD_VERSION = 3


def _batch(rows: int, rng: np.random.Generator) -> list[tuple]:
    """One logged batch: `rows` churn-like records with fresh request ids."""
    records = [
        {
            "age": int(a),
            "tenure_months": int(t),
            "monthly_charges": float(m),
            "contract": c,
            "has_support": bool(s),
        }
        for a, t, m, c, s in zip(
            rng.integers(18, 80, rows),
            rng.integers(0, 72, rows),
            rng.uniform(20, 120, rows).round(2),
            rng.choice(["month-to-month", "one-year", "two-year"], rows),
            rng.integers(0, 2, rows),
            strict=True,
        )
    ]
    p = rng.uniform(size=rows)
    entry = LogEntry(
        role="champion",
        version="7",
        time=datetime.now(UTC),
        request_ids=[uuid.uuid4().hex for _ in range(rows)],
        records=records,
        latency_ms=1.0,
        labels=np.where(p > 0.5, "True", "False").tolist(),
        probabilities=np.column_stack([1 - p, p]),
        classes=["False", "True"],
    )
    return encode_entries([entry], "churn")


def _generic_insert(store: LifecycleStore, rows: list[tuple]) -> None:
    """The portable SQLAlchemy path (psycopg2 executemany): the PostgreSQL baseline."""
    from sqlalchemy.dialects.postgresql import insert

    t = prediction_log_table
    stmt = insert(t).on_conflict_do_nothing(
        index_elements=[t.c.request_id, t.c.role, t.c.model_version]
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, [dict(zip(PREDICTION_LOG_COLUMNS, r, strict=True)) for r in rows])


def _compare(
    label: str, variants: dict[str, tuple[str, int, Callable]], args: argparse.Namespace
) -> None:
    """Alternate batches between the variants (URL, schema version, insert); print medians."""
    rng = np.random.default_rng(0)
    stores = {name: LifecycleStore(url, schema_version=v) for name, (url, v, _) in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    total = args.warmup + args.batches
    try:
        for i in range(total):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                rows = _batch(args.rows, rng)
                insert_rows = variants[name][2]
                start = time.perf_counter()
                insert_rows(stores[name], rows)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
            if (i + 1) % 20 == 0:
                print(f"  {label}: {i + 1}/{total} rounds", flush=True)
    finally:
        for store in stores.values():
            store.close()
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    base = next(iter(medians.values()))
    print(f"{label}: {args.rows}-row batch insert, median of {args.batches} interleaved rounds")
    for name, ms in medians.items():
        print(
            f"  {name:<34} {ms:7.1f} ms {args.rows / ms * 1000:10,.0f} rows/s"
            f"  ratio {ms / base:.2f}"
        )


def _append(store: LifecycleStore, rows: list[tuple]) -> None:
    store.append_prediction_rows(rows)


def main() -> None:
    """Parse arguments and run the comparison on SQLite (and PostgreSQL when given)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=60, help="measured rounds (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds first")
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch (default 1000)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("MLOPS_TEST_PG_URL"),
        help="a PostgreSQL database to compare on too (default: $MLOPS_TEST_PG_URL)",
    )
    args = parser.parse_args()
    if CURRENT_SCHEMA_VERSION <= OLD_VERSION:
        parser.error(f"this code's store schema is v{CURRENT_SCHEMA_VERSION}; nothing to compare")
    old, new = f"schema v{OLD_VERSION}", f"schema v{CURRENT_SCHEMA_VERSION}"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp)
        _compare(
            "sqlite",
            {
                old: (f"sqlite:///{db / 'old.db'}", OLD_VERSION, _append),
                new: (f"sqlite:///{db / 'new.db'}", CURRENT_SCHEMA_VERSION, _append),
            },
            args,
        )
    if args.pg_url:
        with (
            pg_schema_url(args.pg_url) as u1,
            pg_schema_url(args.pg_url) as u2,
            pg_schema_url(args.pg_url) as u3,
        ):
            _compare(
                "postgresql",
                {
                    f"{old}, SQLAlchemy executemany": (u1, OLD_VERSION, _generic_insert),
                    f"{old}, execute_values": (u2, OLD_VERSION, _append),
                    f"{new}, execute_values": (u3, CURRENT_SCHEMA_VERSION, _append),
                },
                args,
            )


if __name__ == "__main__":
    main()
