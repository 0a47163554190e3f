"""The lifecycle store on a real PostgreSQL (MLOPS_TEST_PG_URL; see scripts/start_postgres.sh).

Each test works in its own PostgreSQL schema, dropped afterwards, so runs never collide.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests_support import (
    check_lock_exclusive_between_processes,
    check_lock_serialises_threads,
    pg_schema_url,
)

from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import (
    CURRENT_SCHEMA_VERSION,
    LifecycleStore,
    LockBusy,
    PredictionRow,
)

PG_URL = os.environ.get("MLOPS_TEST_PG_URL")
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not PG_URL,
        reason='MLOPS_TEST_PG_URL is not set; run `eval "$(scripts/start_postgres.sh)"` first',
    ),
]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of its own."""
    assert PG_URL
    with pg_schema_url(PG_URL) as url:
        yield url


@pytest.fixture
def store(pg_url: str) -> Iterator[LifecycleStore]:
    with LifecycleStore(pg_url) as s:
        yield s


def decision(**kw) -> DecisionRecord:
    base = {
        "decision": Decision.PROMOTE,
        "actor": Actor.SENSOR,
        "model_name": "churn",
        "champion_version": "1",
        "challenger_version": "2",
    }
    return DecisionRecord(**{**base, **kw})


def pred(request_id: str, role: str = "champion", version: str = "1", **kw) -> PredictionRow:
    base = {
        "request_id": request_id,
        "role": role,
        "model_name": "churn",
        "model_version": version,
        "prediction": "True",
        "probabilities": [0.2, 0.8],
    }
    return PredictionRow(**{**base, **kw})


def test_a_v1_store_is_upgraded_in_place(pg_url: str):
    with LifecycleStore(pg_url, schema_version=1) as old:
        assert not sa.inspect(old.engine).has_table("locks")
        rec = old.record_decision(decision())
        old.log_predictions([pred("r1")])
    with LifecycleStore(pg_url) as new:
        assert new.schema_version == CURRENT_SCHEMA_VERSION
        assert new.get_decision(rec.id) == rec
        assert sa.inspect(new.engine).has_table("locks")
        assert [p.request_id for p in new.predictions()] == ["r1"]


def test_concurrent_first_opens_migrate_once(pg_url: str):
    versions: list[int] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            with LifecycleStore(pg_url) as s:
                versions.append(s.schema_version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert versions == [CURRENT_SCHEMA_VERSION] * 4
    with LifecycleStore(pg_url) as s, s.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY 1").scalars()
        assert list(rows) == list(range(1, CURRENT_SCHEMA_VERSION + 1))


def test_decisions_and_alias_history_keep_utc(store: LifecycleStore):
    tokyo = timezone(timedelta(hours=9))
    rec = store.record_decision(decision(time=datetime(2026, 5, 1, 9, 0, tzinfo=tokyo)))
    got = store.get_decision(rec.id)
    assert got.time == datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    assert got.time.utcoffset() == timedelta(0)
    assert store.record_decision(rec) == got
    assert store.set_status(rec.id, DecisionStatus.APPLIED).status == DecisionStatus.APPLIED
    assert store.decisions(version="2")[0].id == rec.id
    assert store.decisions(since=datetime(2026, 5, 1, 0, 0, 1, tzinfo=UTC)) == []

    store.record_alias_move("churn", "champion", None, "1", "cli", "d1", time=T0)
    store.record_alias_move("churn", "champion", "1", "2", "cli", "d2", time=T0 + timedelta(1))
    assert store.version_at("churn", "champion", T0 + timedelta(hours=1)) == "1"
    assert store.version_at("churn", "champion", T0 + timedelta(days=2)) == "2"
    assert store.version_at("churn", "champion", T0 - timedelta(hours=1)) is None


def test_racing_writers_record_one_alias_move_and_one_shadow_test(store: LifecycleStore):
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait(30)
            store.record_alias_move("churn", "champion", "1", "2", "sensor", "d-race")
            store.open_shadow_test("churn", "7", expires_at=T0, decision_id="d-race")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.alias_history("churn")) == 1
    assert [t.version for t in store.open_shadow_tests("churn")] == ["7"]


def test_prediction_log_labels_and_pairs(store: LifecycleStore):
    rows = [pred(f"r{i}", time=T0 + timedelta(minutes=i)) for i in range(4)]
    assert store.log_predictions(rows) == 4
    assert store.log_predictions([*rows, pred("r9")]) == 1
    store.log_predictions(
        [pred("r0", role="shadow", version="2", prediction="False"), pred("r1", "shadow", "2")]
    )
    result = store.add_labels([("r0", "True"), ("r1", "False"), ("x", "True")], source="api")
    assert (result.accepted, result.unknown_ids) == (2, ["x"])  # an API label needs a request
    store.add_labels([("r1", "True")], source="file")  # a label file outranks the API
    assert store.add_labels([("r1", "False")], source="api").rejected[0].reason == "conflict"
    pairs = store.labelled_pairs("1", "2")
    assert pairs["request_id"].tolist() == ["r0", "r1"]
    assert pairs["label"].tolist() == ["True", "True"]
    assert pairs["shadow_prediction"].tolist() == ["False", "True"]
    assert pairs.iloc[0].champion_probabilities == [0.2, 0.8]
    assert store.labelled_predictions("1")["request_id"].tolist() == ["r0", "r1"]
    assert store.prune_predictions(T0 + timedelta(minutes=2), keep_versions={"2"}) == 2
    assert sorted(p.request_id for p in store.predictions(model_version="1")) == ["r2", "r3", "r9"]


def test_lock_between_threads_with_expiry_takeover(store: LifecycleStore, tmp_path: Path):
    check_lock_serialises_threads(store, tmp_path)

    stale = store.acquire_lock("transition:churn", "crashed", ttl=timedelta(0), wait=0)
    fresh = store.acquire_lock("transition:churn", "next", wait=0)
    assert store.release_lock(stale) is False
    with pytest.raises(LockBusy, match="next"):
        store.acquire_lock("transition:churn", "third", wait=0.2)
    assert store.release_lock(fresh) is True


def test_lock_between_processes(pg_url: str, store: LifecycleStore):
    check_lock_exclusive_between_processes(pg_url, store)


def test_registry_moves_with_a_postgres_store(store: LifecycleStore, tmp_path: Path):
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.registry import Registry

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("pg", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp)
    client.create_registered_model("churn")
    v1, v2 = (
        str(client.create_model_version("churn", run.info.artifact_uri, run.info.run_id).version)
        for _ in range(2)
    )

    def crash_after_aliases(step: str) -> None:
        if step == "after_aliases":
            raise RuntimeError("crash")

    def rec(kind: Decision, **kw) -> DecisionRecord:
        return DecisionRecord(decision=kind, actor=Actor.CLI, model_name="churn", **kw)

    Registry(client, "churn", store).apply(rec(Decision.BOOTSTRAP, challenger_version=v1))
    promote = rec(Decision.PROMOTE, champion_version=v1, challenger_version=v2)
    with pytest.raises(RuntimeError):
        Registry(client, "churn", store, fault=crash_after_aliases).apply(promote)
    repaired = Registry(client, "churn", store).reconcile()
    assert [r.id for r in repaired] == [promote.id]
    assert {k: str(v) for k, v in client.get_registered_model("churn").aliases.items()} == {
        "champion": v2,
        "previous-champion": v1,
    }
    assert [(m.alias, m.to_version) for m in store.alias_history("churn")] == [
        ("champion", v1),
        ("previous-champion", v1),
        ("champion", v2),
    ]


def test_versions_given_as_ints_are_compared_as_text(store: LifecycleStore):
    # MLflow's ModelVersion.version is an int; PostgreSQL has no varchar = integer operator.
    store.record_decision(decision(champion_version="1", challenger_version="2"))
    assert len(store.decisions(version=2)) == 1
    assert len(store.decisions(version=1)) == 1
    assert store.decisions(version=3) == []
    store.log_predictions([pred("r1", version="2")])
    assert len(store.predictions(model_version=2)) == 1
