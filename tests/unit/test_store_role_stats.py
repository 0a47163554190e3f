"""`LifecycleStore.role_stats`: requests, errors and p50 latency of one version in one role.

On SQLite, and on PostgreSQL when MLOPS_TEST_PG_URL is set (a schema of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from mlops_assets.lifecycle.store import LifecycleStore, PredictionRow, RoleStats

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[LifecycleStore]:
    with LifecycleStore(store_url) as s:
        yield s


def row(i: int, role: str, version: str, **kw) -> PredictionRow:
    """One logged prediction at T0 + i seconds."""
    return PredictionRow(
        request_id=f"r{i}",
        time=T0 + timedelta(seconds=i),
        role=role,
        model_name=kw.pop("model_name", "churn"),
        model_version=version,
        prediction=None if kw.get("error") else "True",
        **kw,
    )


def test_role_stats_counts_errors_and_takes_the_median_of_successful_latencies(
    store: LifecycleStore,
):
    store.log_predictions(
        [
            row(0, "shadow", "2", latency_ms=1000.0),  # before `since`: left out
            row(1, "shadow", "2", latency_ms=10.0),
            row(2, "shadow", "2", latency_ms=30.0),
            row(3, "shadow", "2", latency_ms=20.0),
            row(4, "shadow", "2", latency_ms=40.0),
            row(5, "shadow", "2", latency_ms=500.0, error="boom"),  # an error's latency: no
            row(6, "shadow", "2"),  # no latency logged
            row(7, "champion", "2", latency_ms=900.0),  # other role
            row(8, "shadow", "3", latency_ms=900.0),  # other version
            row(9, "shadow", "2", latency_ms=900.0, model_name="other"),  # other model
        ]
    )
    stats = store.role_stats("churn", "2", "shadow", T0 + timedelta(seconds=1))
    assert stats == RoleStats(requests=6, errors=1, p50_latency_ms=25.0)
    assert stats.error_rate == pytest.approx(1 / 6)
    # A naive `since` is UTC; an int version matches the text column.
    naive = (T0 + timedelta(seconds=5)).replace(tzinfo=None)
    assert store.role_stats("churn", 2, "shadow", naive) == RoleStats(requests=2, errors=1)


def test_role_stats_of_a_version_with_no_rows_is_empty(store: LifecycleStore):
    stats = store.role_stats("churn", "9", "champion", T0)
    assert stats == RoleStats()
    assert (stats.requests, stats.errors, stats.p50_latency_ms, stats.error_rate) == (
        0,
        0,
        None,
        0.0,
    )
    assert stats.model_dump()["error_rate"] == 0.0  # computed field, as the reports show it
