"""Prediction-log retention by age for every role, its keep windows, and the log's size."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.store import LifecycleStore, PredictionRow, RetentionWindow
from mlops_assets.settings import AppConfig

NOW = utcnow()
OLD = NOW - timedelta(days=40)
CUTOFF = NOW - timedelta(days=30)


@pytest.fixture
def store(store_url: str):
    with LifecycleStore(store_url) as s:
        yield s


def row(rid: str, role: str, version: str, when, model: str = "churn") -> PredictionRow:
    return PredictionRow(
        request_id=rid, time=when, role=role, model_name=model, model_version=version
    )


def left(store: LifecycleStore) -> set[tuple[str, str, str]]:
    return {(p.request_id, p.role, p.model_version) for p in store.predictions()}


def test_every_role_is_pruned_by_age_except_the_windows(store: LifecycleStore):
    shadow_start = OLD + timedelta(days=2)
    store.log_predictions(
        [
            # Before the shadow test: the champion's rows go, whatever version it is.
            row("c-before", "champion", "1", OLD),
            row("s-before", "shadow", "2", OLD),
            # Inside the open shadow test of v2 (started 38 days ago): both sides are kept.
            row("paired", "champion", "1", shadow_start + timedelta(hours=1)),
            row("paired", "shadow", "2", shadow_start + timedelta(hours=1)),
            # A closed shadow's rows (v3) age out like any other.
            row("paired", "shadow", "3", shadow_start + timedelta(hours=1)),
            # Recent rows are kept in every role.
            row("recent", "champion", "1", NOW - timedelta(days=1)),
            row("recent", "shadow", "3", NOW - timedelta(days=1)),
        ]
    )
    windows = [
        RetentionWindow(role="shadow", since=shadow_start, model_version="2", model_name="churn"),
        RetentionWindow(role="champion", since=shadow_start, model_name="churn"),
    ]
    assert store.prune_predictions(CUTOFF, keep=windows) == 3
    assert left(store) == {
        ("paired", "champion", "1"),
        ("paired", "shadow", "2"),
        ("recent", "champion", "1"),
        ("recent", "shadow", "3"),
    }
    # Once the test closes (no window), its old rows go too.
    assert store.prune_predictions(CUTOFF) == 2
    assert left(store) == {("recent", "champion", "1"), ("recent", "shadow", "3")}


def test_a_probation_window_keeps_only_that_champions_rows(store: LifecycleStore):
    promoted = OLD + timedelta(days=1)
    store.log_predictions(
        [
            row("before", "champion", "2", OLD),
            row("probation", "champion", "2", promoted + timedelta(hours=1)),
            row("old-champion", "champion", "1", promoted + timedelta(hours=1)),
        ]
    )
    window = RetentionWindow(role="champion", since=promoted, model_version="2")
    assert store.prune_predictions(CUTOFF, keep=[window]) == 2
    assert left(store) == {("probation", "champion", "2")}


def test_pruning_one_model_leaves_another_models_rows(store: LifecycleStore):
    store.log_predictions(
        [row("a", "champion", "1", OLD), row("b", "champion", "1", OLD, model="fraud")]
    )
    assert store.prune_predictions(CUTOFF, model_name="churn") == 1
    assert left(store) == {("b", "champion", "1")}


def test_pruning_in_batches_deletes_everything_due(store: LifecycleStore):
    store.log_predictions([row(f"r{i}", "champion", "1", OLD) for i in range(25)])
    store.log_predictions([row("new", "champion", "1", NOW)])
    assert store.prune_predictions(CUTOFF, batch_rows=4) == 25
    assert left(store) == {("new", "champion", "1")}


def test_keep_versions_still_protects_a_version(store: LifecycleStore):
    store.log_predictions([row("a", "champion", "1", OLD), row("b", "shadow", "2", OLD)])
    assert store.prune_predictions(CUTOFF, keep_versions={"1"}) == 1
    assert left(store) == {("a", "champion", "1")}


def test_pruning_drops_orphaned_labels_and_old_conflicts(store: LifecycleStore):
    store.log_predictions([row("gone", "champion", "1", OLD), row("kept", "champion", "1", NOW)])
    store.add_labels([("gone", "True"), ("kept", "True")], "file")
    store.add_labels([("gone", "False"), ("kept", "False")], "api")
    assert store.label_conflict_count() == 2
    # Labels and conflicts are aged by when they were received (now), not by the request:
    # "gone"'s prediction goes, its label and the conflicts stay while they are recent.
    assert store.prune_predictions(CUTOFF) == 1
    assert store.labels(["gone", "kept"]) == {"gone": "True", "kept": "True"}
    assert store.label_conflict_count() == 2
    # Once older than the cutoff, the orphaned label and every conflict go.
    assert store.prune_predictions(utcnow() + timedelta(seconds=1), keep_versions={"1"}) == 0
    assert store.labels(["gone", "kept"]) == {"kept": "True"}
    assert store.label_conflict_count() == 0


def test_prediction_log_stats_count_rows_and_bytes(store: LifecycleStore):
    empty = store.prediction_log_stats()
    assert (empty.rows, empty.rows_exact, empty.oldest) == (0, True, None)
    assert empty.approx_bytes is not None and empty.approx_bytes > 0
    store.log_predictions(
        [
            PredictionRow(
                request_id=f"r{i}",
                time=OLD + timedelta(minutes=i),
                role="champion",
                model_name="churn",
                model_version="1",
                inputs={"text": secrets.token_hex(1000)},  # 2,000 chars PostgreSQL cannot squeeze
            )
            for i in range(300)
        ]
    )
    stats = store.prediction_log_stats()
    assert (stats.rows, stats.rows_exact, stats.oldest) == (300, True, OLD)
    assert stats.approx_bytes - empty.approx_bytes > 300 * 2000
    expected_scope = "table" if store.engine.dialect.name == "postgresql" else "database"
    assert stats.bytes_scope == expected_scope
    estimate = store.prediction_log_stats(exact=False)
    if estimate.rows_exact:  # PostgreSQL before ANALYZE has no estimate: it counts
        assert estimate.rows == 300
    else:
        assert estimate.rows >= 300
    store.prune_predictions(OLD + timedelta(minutes=100))
    assert store.prediction_log_stats().rows == 200


def test_the_size_bound_setting_defaults_and_validates():
    assert AppConfig().serving.prediction_log_max_rows == 5_000_000
    assert AppConfig().automation.retention == timedelta(days=30)
    with pytest.raises(ValueError, match="prediction_log_max_rows"):
        AppConfig.model_validate({"serving": {"prediction_log_max_rows": 10}})
