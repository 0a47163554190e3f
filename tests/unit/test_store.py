"""The lifecycle store on SQLite: schema upgrades, decisions, history, predictions, locks."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests_support import check_lock_exclusive_between_processes, check_lock_serialises_threads

from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import (
    CURRENT_SCHEMA_VERSION,
    DecisionConflict,
    LifecycleStore,
    LockBusy,
    LockLost,
    PredictionRow,
    StoreError,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(sqlite_url: str):
    with LifecycleStore(sqlite_url) as s:
        yield s


def decision(kind: Decision = Decision.PROMOTE, **kw) -> DecisionRecord:
    base = {
        "decision": kind,
        "actor": Actor.SCHEDULE,
        "model_name": "churn",
        "champion_version": "1",
        "challenger_version": "2",
        "reasons": ["f1 improved by 0.06"],
    }
    return DecisionRecord(**{**base, **kw})


def pred(request_id: str, role: str = "champion", version: str = "1", **kw) -> PredictionRow:
    base = {
        "request_id": request_id,
        "role": role,
        "model_name": "churn",
        "model_version": version,
        "inputs": {"age": 40, "contract": "one-year"},
        "prediction": "True",
        "probabilities": {"False": 0.3, "True": 0.7},
        "latency_ms": 1.5,
    }
    return PredictionRow(**{**base, **kw})


# --- schema ----------------------------------------------------------------------------------


def test_new_store_creates_its_folder_uses_wal_and_records_the_schema(
    sqlite_url: str, tmp_path: Path
):
    with LifecycleStore(sqlite_url) as store:
        assert store.schema_version == CURRENT_SCHEMA_VERSION
    db = tmp_path / "state" / "lifecycle.db"
    assert db.exists()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY 1")]
    finally:
        con.close()
    assert versions == list(range(1, CURRENT_SCHEMA_VERSION + 1))


def test_opening_a_v1_store_upgrades_it_and_keeps_its_data(sqlite_url: str, tmp_path: Path):
    with LifecycleStore(sqlite_url, schema_version=1) as old:
        assert old.schema_version == 1
        assert not sa.inspect(old.engine).has_table("locks")
        rec = old.record_decision(decision())
        old.log_predictions([pred("r1")])
        old.add_labels([("r1", "True")], source="file")
        old.record_alias_move("churn", "champion", None, "1", "cli", rec.id, time=T0)

    with LifecycleStore(sqlite_url) as new:
        assert new.schema_version == CURRENT_SCHEMA_VERSION
        assert new.get_decision(rec.id) == rec
        assert new.version_at("churn", "champion", T0 + timedelta(seconds=1)) == "1"
        assert new.labelled_predictions("1")["label"].tolist() == ["True"]
        # The tables of v2 work.
        with new.transition_lock("churn", owner="test"):
            pass
        new.open_shadow_test("churn", "2", expires_at=T0 + timedelta(days=14), started_at=T0)
        assert [t.version for t in new.open_shadow_tests("churn")] == ["2"]
    # The upgrade kept a copy of the old file.
    assert (tmp_path / "state" / "lifecycle.db.v1.bak").exists()
    # Opening again is a no-op.
    assert LifecycleStore(sqlite_url).schema_version == CURRENT_SCHEMA_VERSION


def test_a_store_newer_than_the_code_is_refused(sqlite_url: str):
    with LifecycleStore(sqlite_url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO schema_version (version, description, applied_at) "
            "VALUES (99, 'future', '2030-01-01 00:00:00.000000')"
        )
    with pytest.raises(StoreError, match="newer than this code"):
        LifecycleStore(sqlite_url)


def test_unsupported_url_is_refused():
    with pytest.raises(StoreError, match="sqlite:/// or postgresql://"):
        LifecycleStore("mysql://u:p@localhost/db")


# --- decisions -------------------------------------------------------------------------------


def test_decisions_round_trip_with_utc_times(store: LifecycleStore):
    naive = datetime(2026, 3, 1, 10, 30)
    paris = timezone(timedelta(hours=1))
    a = store.record_decision(decision(time=naive))
    b = store.record_decision(decision(time=datetime(2026, 3, 1, 12, 0, tzinfo=paris)))
    assert a.time == datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    got = store.get_decision(b.id)
    assert got is not None
    assert got.time.tzinfo is not None and got.time.utcoffset() == timedelta(0)
    assert got.time == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert got.reasons == ["f1 improved by 0.06"]
    assert got.status == DecisionStatus.PENDING
    assert store.get_decision("nope") is None


def test_nan_metrics_survive_the_round_trip(store: LifecycleStore):
    rec = store.record_decision(
        decision(champion_metrics={"precision": float("nan"), "recall": 0.5})
    )
    got = store.get_decision(rec.id)
    assert math.isnan(got.champion_metrics["precision"])
    assert got.champion_metrics["recall"] == 0.5
    assert store.record_decision(rec).id == rec.id  # NaN != NaN must not look like a conflict


def test_record_decision_is_idempotent_and_append_only(store: LifecycleStore):
    rec = store.record_decision(decision())
    assert store.record_decision(rec) == rec
    assert len(store.decisions()) == 1
    with pytest.raises(DecisionConflict):
        store.record_decision(rec.model_copy(update={"challenger_version": "3"}))


def test_status_moves_only_from_pending(store: LifecycleStore):
    ok = store.record_decision(decision())
    bad = store.record_decision(decision())
    assert store.set_status(ok.id, DecisionStatus.APPLIED).status == DecisionStatus.APPLIED
    assert store.set_status(ok.id, DecisionStatus.APPLIED).status == DecisionStatus.APPLIED
    failed = store.set_status(bad.id, DecisionStatus.FAILED, error="champion moved")
    assert (failed.status, failed.error) == (DecisionStatus.FAILED, "champion moved")
    assert store.get_decision(bad.id).error == "champion moved"
    with pytest.raises(StoreError, match="only pending"):
        store.set_status(ok.id, DecisionStatus.PENDING)
    with pytest.raises(StoreError):
        store.set_status(bad.id, DecisionStatus.APPLIED)
    with pytest.raises(KeyError):
        store.set_status("missing", DecisionStatus.APPLIED)


def test_decisions_query_by_version_time_and_kind(store: LifecycleStore):
    recs = [
        store.record_decision(
            decision(Decision.BOOTSTRAP, champion_version=None, challenger_version="1", time=T0)
        ),
        store.record_decision(
            decision(Decision.START_SHADOW, challenger_version="2", time=T0 + timedelta(hours=1))
        ),
        store.record_decision(
            decision(Decision.PROMOTE, challenger_version="2", time=T0 + timedelta(hours=2))
        ),
        store.record_decision(
            decision(
                Decision.KEEP_CHAMPION,
                champion_version="2",
                challenger_version="3",
                time=T0 + timedelta(hours=3),
            )
        ),
    ]
    assert [r.id for r in store.decisions()] == [r.id for r in reversed(recs)]
    assert [r.decision for r in store.decisions(version="1")] == [
        Decision.PROMOTE,
        Decision.START_SHADOW,
        Decision.BOOTSTRAP,
    ]
    assert {r.id for r in store.decisions(version="2")} == {r.id for r in recs[1:]}
    window = store.decisions(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2))
    assert [r.id for r in window] == [recs[2].id, recs[1].id]
    assert [r.id for r in store.decisions(decision=Decision.PROMOTE)] == [recs[2].id]
    assert len(store.decisions(limit=2)) == 2
    assert len(store.decisions(limit=None)) == 4
    store.set_status(recs[0].id, DecisionStatus.APPLIED)
    store.set_status(recs[2].id, DecisionStatus.APPLIED)
    assert [r.id for r in store.pending_decisions()] == [recs[1].id, recs[3].id]
    assert store.pending_decisions(model_name="other") == []


# --- alias history ---------------------------------------------------------------------------


def test_alias_history_answers_which_version_was_champion_when(store: LifecycleStore):
    store.record_alias_move("churn", "champion", None, "1", "cli", "d1", time=T0)
    store.record_alias_move("churn", "champion", "1", "2", "sensor", "d2", time=T0 + timedelta(1))
    store.record_alias_move("churn", "champion", "2", "1", "cli", "d3", time=T0 + timedelta(2))
    store.record_alias_move("churn", "challenger", "3", None, "cli", "d3", time=T0 + timedelta(2))
    store.record_alias_move("other", "champion", None, "9", "cli", None, time=T0)

    assert store.version_at("churn", "champion", T0 - timedelta(seconds=1)) is None
    assert store.version_at("churn", "champion", T0) == "1"
    assert store.version_at("churn", "champion", T0 + timedelta(hours=30)) == "2"
    assert store.version_at("churn", "champion", T0 + timedelta(days=5)) == "1"
    assert store.version_at("churn", "challenger", T0 + timedelta(days=5)) is None
    history = store.alias_history("churn", "champion")
    assert [(m.from_version, m.to_version) for m in history] == [
        (None, "1"),
        ("1", "2"),
        ("2", "1"),
    ]
    assert all(m.time.tzinfo is not None for m in history)
    assert len(store.alias_history("churn")) == 4
    assert [m.alias for m in store.alias_history("churn", decision_id="d3")] == [
        "champion",
        "challenger",
    ]


def test_alias_move_is_recorded_once_per_decision(store: LifecycleStore):
    first = store.record_alias_move("churn", "champion", "1", "2", "cli", "d1")
    again = store.record_alias_move("churn", "champion", "1", "2", "cli", "d1")
    assert again == first
    assert len(store.alias_history("churn")) == 1
    with pytest.raises(StoreError, match="already moved"):
        store.record_alias_move("churn", "champion", "1", "3", "cli", "d1")
    # Moves without a decision (by hand) are all kept.
    store.record_alias_move("churn", "champion", "2", "1", "cli", None)
    store.record_alias_move("churn", "champion", "1", "2", "cli", None)
    assert len(store.alias_history("churn")) == 3


# --- prediction log and labels ---------------------------------------------------------------


def test_prediction_log_round_trip_and_retries(store: LifecycleStore):
    rows = [pred(f"r{i}", time=T0 + timedelta(minutes=i)) for i in range(5)]
    assert store.log_predictions(rows) == 5
    assert store.log_predictions(rows) == 0  # a retried flush adds nothing
    assert store.log_predictions([]) == 0
    store.log_predictions(
        [pred("r0", role="shadow", version="2", error="timeout", prediction=None)]
    )
    newest = store.predictions(model_version="1")
    assert [p.request_id for p in newest] == ["r4", "r3", "r2", "r1", "r0"]
    assert newest[0] == rows[4]
    assert newest[0].time.tzinfo is not None
    assert [p.error for p in store.predictions(role="shadow")] == ["timeout"]
    assert len(store.predictions(model_version="1", since=T0 + timedelta(minutes=3))) == 2
    assert len(store.predictions(limit=2)) == 2


def test_prediction_rows_store_labels_and_versions_as_text():
    row = PredictionRow(
        request_id="r", role="shadow", model_name="churn", model_version=3, prediction=True
    )
    assert (row.model_version, row.prediction) == ("3", "True")


def test_prune_keeps_named_versions_and_drops_orphan_labels(store: LifecycleStore):
    store.log_predictions([pred("old1", version="1", time=T0), pred("old2", version="2", time=T0)])
    store.log_predictions([pred("new", version="2", time=T0 + timedelta(days=10))])
    store.add_labels([("old1", "True"), ("old2", "False"), ("new", "True")], source="file")
    deleted = store.prune_predictions(T0 + timedelta(days=1), keep_versions={"1"})
    assert deleted == 1
    assert sorted(p.request_id for p in store.predictions()) == ["new", "old1"]
    # Labels are pruned by when they were received (now): an orphaned label goes once it is
    # older than `before`; labels of kept predictions stay.
    store.prune_predictions(utcnow() + timedelta(days=1), keep_versions={"1", "2"})
    assert store.labels(["old1", "old2", "new"]) == {"old1": "True", "new": "True"}


def test_api_labels_first_wins_and_unknown_ids_are_rejected(store: LifecycleStore):
    store.log_predictions([pred("a"), pred("b")])
    result = store.add_labels(
        [("a", "True"), ("zzz", "False"), ("a", "False"), ("b", " True ")], source="api"
    )
    assert result.accepted == 2
    assert result.unknown_ids == ["zzz"]
    assert [(r.request_id, r.reason) for r in result.rejected] == [
        ("zzz", "unknown_id"),
        ("a", "conflict"),
    ]
    assert (result.conflicts, result.duplicates) == (1, 0)
    assert store.labels(["a", "b", "zzz", "none"]) == {"a": "True", "b": "True"}
    # Idempotent: sending the same label again changes nothing and is no conflict.
    again = store.add_labels([("a", "True")], source="api")
    assert (again.accepted, again.duplicates, again.conflicts, again.rejected) == (0, 1, 0, [])
    assert store.labels(["a"]) == {"a": "True"}
    with pytest.raises(ValueError, match="request_id"):
        store.add_labels([("  ", "True")], source="api")
    with pytest.raises(ValueError, match="empty"):
        store.add_labels([("a", "")], source="api")


def test_labelled_pairs_uses_the_same_rows_for_both_models(store: LifecycleStore):
    store.log_predictions(
        [
            pred("both", time=T0),
            pred(
                "both",
                role="shadow",
                version="2",
                prediction="False",
                probabilities={"False": 0.9, "True": 0.1},
            ),
            pred("champion-only", time=T0),
            pred("shadow-failed", time=T0),
            pred("shadow-failed", role="shadow", version="2", error="boom", prediction=None),
            pred("unlabelled", time=T0),
            pred("unlabelled", role="shadow", version="2"),
            pred("later", time=T0 + timedelta(days=2)),
            pred("later", role="shadow", version="2"),
            pred("other-shadow", time=T0),
            pred("other-shadow", role="shadow", version="3"),
        ]
    )
    # The label arrives before... and after the predictions: both count.
    store.add_labels(
        [(r, "True") for r in ("both", "champion-only", "shadow-failed", "later", "other-shadow")],
        source="file",
    )
    pairs = store.labelled_pairs("1", "2")
    assert list(pairs.columns) == [
        "request_id",
        "label",
        "champion_prediction",
        "champion_probabilities",
        "shadow_prediction",
        "shadow_probabilities",
    ]
    assert pairs["request_id"].tolist() == ["both", "later"]
    first = pairs.iloc[0]
    assert (first.label, first.champion_prediction, first.shadow_prediction) == (
        "True",
        "True",
        "False",
    )
    assert first.shadow_probabilities == {"False": 0.9, "True": 0.1}
    assert store.labelled_pairs("1", "2", since=T0 + timedelta(days=1))["request_id"].tolist() == [
        "later"
    ]
    empty = store.labelled_pairs("1", "99")
    assert empty.empty and len(empty.columns) == 6


def test_file_labels_may_arrive_before_predictions(store: LifecycleStore):
    result = store.add_labels([("early", "True")], source="file")
    assert (result.accepted, result.unknown_ids, result.rejected) == (1, ["early"], [])
    assert store.labelled_predictions("1").empty
    store.log_predictions([pred("early")])
    frame = store.labelled_predictions("1")
    assert frame["request_id"].tolist() == ["early"]
    assert list(frame.columns) == [
        "request_id",
        "time",
        "role",
        "label",
        "prediction",
        "probabilities",
    ]
    assert frame.iloc[0].probabilities == {"False": 0.3, "True": 0.7}
    assert store.labelled_predictions("1", role="shadow").empty


# --- transition lock -------------------------------------------------------------------------


def test_lock_is_exclusive_between_threads(store: LifecycleStore):
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.transition_lock("churn", owner="cycle-a"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with (
            pytest.raises(LockBusy) as err,
            store.transition_lock("churn", owner="cycle-b", wait=0.2),
        ):
            pass
        assert "cycle-a" in str(err.value)
        # Another model's lock is independent.
        with store.transition_lock("other-model", owner="cycle-b", wait=0.2):
            pass
    finally:
        release.set()
        thread.join(30)
    with store.transition_lock("churn", owner="cycle-b", wait=5):
        assert "cycle-b" in store.lock_holder("transition:churn").owner
    assert store.lock_holder("transition:churn") is None


def test_lock_serialises_critical_sections(store: LifecycleStore, tmp_path: Path):
    check_lock_serialises_threads(store, tmp_path)


def test_expired_lock_is_taken_over_and_not_released_by_its_old_owner(store: LifecycleStore):
    stale = store.acquire_lock("transition:churn", "crashed-cycle", ttl=timedelta(0), wait=0)
    fresh = store.acquire_lock("transition:churn", "new-cycle", wait=0)
    assert "new-cycle" in fresh.owner
    assert store.release_lock(stale) is False  # must not free the new owner's lock
    assert store.lock_holder("transition:churn").token == fresh.token
    with pytest.raises(LockLost):
        store.refresh_lock(stale)
    refreshed = store.refresh_lock(fresh, ttl=timedelta(hours=1))
    assert refreshed.expires_at > fresh.expires_at
    assert store.release_lock(fresh) is True


def test_lock_is_exclusive_between_processes(sqlite_url: str, store: LifecycleStore):
    check_lock_exclusive_between_processes(sqlite_url, store)


_WRITER = """
import sys
from mlops_assets.lifecycle.store import LifecycleStore, PredictionRow
store = LifecycleStore(sys.argv[1])
for batch in range(40):
    rows = [PredictionRow(request_id=f"p{batch}-{i}", role="champion", model_name="churn",
                          model_version="1", prediction="True") for i in range(25)]
    store.log_predictions(rows)
print("done", flush=True)
"""


def test_another_process_can_write_the_log_while_we_use_the_store(sqlite_url: str, store):
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, sqlite_url], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        for i in range(40):
            rec = store.record_decision(decision())
            store.set_status(rec.id, DecisionStatus.APPLIED)
            store.add_labels([(f"p{i}-0", "True")], source="file")
            store.decisions(limit=5)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "done"
    assert len(store.predictions()) == 1000
    assert len(store.decisions(limit=None)) == 40


# --- shadow tests ----------------------------------------------------------------------------


def test_shadow_test_lifecycle(store: LifecycleStore):
    end = T0 + timedelta(days=14)
    opened = store.open_shadow_test("churn", "2", expires_at=end, started_at=T0, decision_id="d1")
    assert (opened.status, opened.extensions, opened.opened_by) == ("open", 0, "d1")
    # Opening again returns the open test unchanged.
    again = store.open_shadow_test("churn", "2", expires_at=end + timedelta(days=1))
    assert again.expires_at == end
    assert store.expired_shadow_tests("churn", now=end - timedelta(seconds=1)) == []
    assert [t.version for t in store.expired_shadow_tests("churn", now=end)] == ["2"]

    extended = store.extend_shadow_test("2", end + timedelta(days=3))
    assert (extended.extensions, extended.expires_at) == (1, end + timedelta(days=3))
    # The same extension again (a retried cycle) is not counted twice.
    assert store.extend_shadow_test("2", end + timedelta(days=3)).extensions == 1
    assert store.expired_shadow_tests("churn", now=end + timedelta(days=1)) == []

    closed = store.close_shadow_test("2", "d2")
    assert (closed.status, closed.decision_id) == ("closed", "d2")
    assert closed.closed_at is not None and closed.closed_at.tzinfo is not None
    assert store.close_shadow_test("2", "d2") == closed
    assert store.open_shadow_tests("churn") == []
    with pytest.raises(StoreError, match="shadow-tested once"):
        store.open_shadow_test("churn", "2", expires_at=end)
    with pytest.raises(StoreError, match="no open shadow test"):
        store.extend_shadow_test("2", end + timedelta(days=30))


def test_shadow_tests_are_per_model(store: LifecycleStore):
    store.open_shadow_test("churn", "2", expires_at=T0)
    store.open_shadow_test("fraud", "2", expires_at=T0)
    assert [t.model_name for t in store.open_shadow_tests("churn")] == ["churn"]
    with pytest.raises(StoreError, match="pass model_name"):
        store.close_shadow_test("2", "d")
    assert store.close_shadow_test("2", "d", model_name="fraud").status == "closed"
    assert store.shadow_test("2", "churn").status == "open"
