"""The lifecycle store's drift results and decision counts, on SQLite and PostgreSQL.

The PostgreSQL cases run when MLOPS_TEST_PG_URL is set (scripts/start_postgres.sh), each in
a schema of its own.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops_assets.lifecycle.drift import DriftResult
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import CURRENT_SCHEMA_VERSION, LifecycleStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str):
    with LifecycleStore(store_url) as s:
        yield s


def result(feature: str, method: str = "psi", statistic: float = 0.05, **kw) -> DriftResult:
    threshold = 0.2 if method == "psi" else 0.01
    p_value = None if method == "psi" else kw.pop("p_value", 0.5)
    drifted = kw.pop(
        "drifted", statistic > threshold if method == "psi" else (p_value or 1) < threshold
    )
    return DriftResult(
        feature=feature,
        method=method,
        statistic=statistic,
        p_value=p_value,
        threshold=threshold,
        drifted=drifted,
    )


RESULTS = [
    result("age"),
    result("age", "ks", 0.04, p_value=0.6),
    result("monthly_charges", statistic=0.45),
    result("monthly_charges", "ks", 0.3, p_value=1e-9),
    result("contract", "chi_square", 80.0, p_value=1e-15),
]


def test_a_v2_store_gains_the_drift_table_and_keeps_its_data(sqlite_url: str, tmp_path: Path):
    url = sqlite_url
    with LifecycleStore(url, schema_version=2) as old:
        rec = old.record_decision(
            DecisionRecord(
                decision=Decision.BOOTSTRAP, actor=Actor.CLI, model_name="churn", reasons=["x"]
            )
        )
    with LifecycleStore(url) as new:
        assert new.schema_version == CURRENT_SCHEMA_VERSION >= 3
        assert new.get_decision(rec.id) == rec
        assert new.record_drift("churn", "a" * 64, "1", RESULTS) == len(RESULTS)
    assert (tmp_path / "state" / "lifecycle.db.v2.bak").exists()
    con = sqlite3.connect(tmp_path / "state" / "lifecycle.db")
    try:
        described = con.execute(
            "SELECT description FROM schema_version WHERE version = 3"
        ).fetchone()
    finally:
        con.close()
    assert described == ("feature drift results",)


def test_record_and_read_back_one_computation(store: LifecycleStore):
    assert store.latest_drift("churn") == []
    n = store.record_drift("churn", "a" * 64, 1, RESULTS, dagster_run_id="run-1", computed_at=T0)
    assert n == 5
    rows = store.latest_drift("churn")
    assert [(r.feature, r.method) for r in rows] == [
        ("age", "ks"),
        ("age", "psi"),
        ("contract", "chi_square"),
        ("monthly_charges", "ks"),
        ("monthly_charges", "psi"),
    ]
    mc = next(r for r in rows if (r.feature, r.method) == ("monthly_charges", "psi"))
    assert mc.drifted and mc.statistic == pytest.approx(0.45) and mc.p_value is None
    assert mc.threshold == 0.2 and mc.reference_version == "1"  # versions are text
    assert mc.computed_at == T0 and mc.computed_at.utcoffset() == timedelta(0)
    assert mc.data_sha256 == "a" * 64 and mc.dagster_run_id == "run-1"
    contract = next(r for r in rows if r.feature == "contract")
    assert contract.p_value == pytest.approx(1e-15) and contract.drifted
    assert store.latest_drift("other-model") == []


def test_rerunning_the_same_computation_replaces_it(store: LifecycleStore):
    store.record_drift("churn", "a" * 64, "1", RESULTS, dagster_run_id="run-1", computed_at=T0)
    later = T0 + timedelta(minutes=5)
    changed = [*RESULTS[:4], result("contract", "chi_square", 1.0, p_value=0.6)]
    assert store.record_drift("churn", "a" * 64, "1", changed, "run-2", computed_at=later) == 5
    rows = store.drift_results("churn")
    assert len(rows) == 5
    assert {r.dagster_run_id for r in rows} == {"run-2"}
    assert {r.computed_at for r in rows} == {later}
    assert not next(r for r in rows if r.feature == "contract").drifted
    # Without a reference (NULL) the same holds: NULLs never conflict in a unique index.
    for _ in range(3):
        store.record_drift("churn", "b" * 64, None, RESULTS[:2])
    assert len(store.drift_results("churn", data_sha256="b" * 64)) == 2
    # Another reference version is another computation.
    store.record_drift("churn", "a" * 64, "2", RESULTS[:1])
    assert len(store.drift_results("churn", data_sha256="a" * 64)) == 6


def test_latest_is_per_feature_and_method(store: LifecycleStore):
    store.record_drift("churn", "a" * 64, "1", RESULTS, computed_at=T0)
    newer = [result("age", statistic=0.5), result("region", "chi_square", 3.0, p_value=0.4)]
    store.record_drift("churn", "b" * 64, "1", newer, computed_at=T0 + timedelta(hours=1))
    latest = {(r.feature, r.method): r for r in store.latest_drift("churn")}
    assert len(latest) == 6
    assert latest[("age", "psi")].data_sha256 == "b" * 64 and latest[("age", "psi")].drifted
    assert latest[("age", "ks")].data_sha256 == "a" * 64
    assert latest[("region", "chi_square")].data_sha256 == "b" * 64
    # An older computation recorded afterwards does not hide the newer one.
    store.record_drift("churn", "c" * 64, "1", RESULTS[:1], computed_at=T0 - timedelta(days=1))
    latest = {(r.feature, r.method): r for r in store.latest_drift("churn")}
    assert latest[("age", "psi")].data_sha256 == "b" * 64
    assert [r.data_sha256 for r in store.drift_results("churn", limit=2)] == ["b" * 64] * 2


def test_nan_statistics_round_trip(store: LifecycleStore):
    nan = DriftResult(
        feature="age", method="ks", statistic=math.nan, p_value=None, threshold=0.01, drifted=False
    )
    store.record_drift("churn", "a" * 64, "1", [nan])
    (row,) = store.latest_drift("churn")
    assert math.isnan(row.statistic) and row.p_value is None and not row.drifted


def test_concurrent_writers_of_one_computation_leave_one_copy(
    store_url: str, store: LifecycleStore
):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with LifecycleStore(store_url) as own:
                barrier.wait(30)
                own.record_drift("churn", "a" * 64, None, RESULTS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.drift_results("churn")) == len(RESULTS)


def test_decision_counts(store: LifecycleStore):
    assert store.decision_counts() == {d.value: 0 for d in Decision}

    def rec(kind: Decision, model: str = "churn") -> DecisionRecord:
        return DecisionRecord(
            decision=kind, actor=Actor.SENSOR, model_name=model, challenger_version="2"
        )

    for kind in (Decision.BOOTSTRAP, Decision.KEEP_CHAMPION, Decision.KEEP_CHAMPION):
        store.record_decision(rec(kind))
    failed = rec(Decision.PROMOTE).model_copy(update={"status": DecisionStatus.FAILED})
    store.record_decision(failed)
    store.record_decision(rec(Decision.ROLLBACK, model="other"))

    counts = store.decision_counts("churn")
    assert set(counts) == {d.value for d in Decision}
    assert (counts["BOOTSTRAP"], counts["KEEP_CHAMPION"], counts["PROMOTE"]) == (1, 2, 1)
    assert counts["ROLLBACK"] == 0 and sum(counts.values()) == 4
    assert store.decision_counts()["ROLLBACK"] == 1
    assert sum(store.decision_counts().values()) == 5
