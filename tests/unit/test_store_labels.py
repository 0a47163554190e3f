"""Labels that cannot be forged: first label wins, a label file outranks the API, API labels
need a logged request, and every differing second label is recorded (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from mlops_assets.lifecycle.comparison import ModelEvaluation
from mlops_assets.lifecycle.policy import decide_shadow
from mlops_assets.lifecycle.records import utcnow
from mlops_assets.lifecycle.shadow import usable_rows
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import (
    MAX_REQUEST_ID_LENGTH,
    LifecycleStore,
    PredictionRow,
    label_conflicts_table,
)
from mlops_assets.settings import ChampionChallengerPolicy

T0 = utcnow() - timedelta(hours=1)
CLASSES = ["False", "True"]


@pytest.fixture
def store(store_url: str):
    with LifecycleStore(store_url) as s:
        yield s


def logged(store: LifecycleStore, *ids: str) -> None:
    store.log_predictions(
        [
            PredictionRow(
                request_id=i, role="champion", model_name="churn", model_version="1", time=T0
            )
            for i in ids
        ]
    )


def reasons(result) -> list[tuple[str, str]]:
    return [(r.request_id, r.reason) for r in result.rejected]


# --- who may label what ------------------------------------------------------------------------


def test_api_labels_for_unknown_requests_are_rejected_not_stored(store: LifecycleStore):
    logged(store, "a")
    result = store.add_labels([("a", "True"), ("ghost", "True"), ("ghost", "False")], "api")
    assert result.accepted == 1
    assert result.unknown_ids == ["ghost"]
    assert reasons(result) == [("ghost", "unknown_id"), ("ghost", "unknown_id")]
    assert store.labels(["a", "ghost"]) == {"a": "True"}
    # The id is still unknown once the other label arrived: the log, not labels, decides.
    assert reasons(store.add_labels([("ghost", "True")], "api")) == [("ghost", "unknown_id")]


def test_file_labels_may_precede_their_predictions_and_are_reported(store: LifecycleStore):
    logged(store, "a")
    result = store.add_labels([("a", "True"), ("later", "False")], "file:batch.csv")
    assert (result.accepted, result.unknown_ids, result.rejected) == (2, ["later"], [])
    assert store.labels(["a", "later"]) == {"a": "True", "later": "False"}


def test_require_known_overrides_the_source_default(store: LifecycleStore):
    strict = store.add_labels([("x", "True")], "file", require_known=True)
    assert (strict.accepted, reasons(strict)) == (0, [("x", "unknown_id")])
    lax = store.add_labels([("y", "True")], "api", require_known=False)
    assert (lax.accepted, lax.unknown_ids, lax.rejected) == (1, ["y"], [])
    assert store.labels(["x", "y"]) == {"y": "True"}


def test_ids_that_cannot_be_logged_are_rejected_even_from_files(store: LifecycleStore):
    too_long = "r" * (MAX_REQUEST_ID_LENGTH + 1)
    surrogate = "bad\ud800id"
    result = store.add_labels([(too_long, "True"), (surrogate, "True"), ("ok", "True")], "file")
    assert reasons(result) == [(too_long, "unknown_id"), (surrogate, "unknown_id")]
    assert result.accepted == 1
    assert store.labels(["ok", too_long]) == {"ok": "True"}
    with pytest.raises(ValueError, match="not valid text"):
        store.add_labels([("ok", "\udcff")], "file")
    with pytest.raises(ValueError, match="source"):
        store.add_labels([("ok", "True")], " ")


# --- precedence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "kept", "resolution"),
    [
        ("api", "api", "True", "kept"),  # first wins within a source
        ("file:a.csv", "file:b.csv", "True", "kept"),
        ("file:a.csv", "api", "True", "kept"),  # the API never replaces a label
        ("api", "file:a.csv", "False", "replaced"),  # a label file outranks the API
    ],
)
def test_a_second_different_label_follows_the_precedence_and_is_recorded(
    store: LifecycleStore, first: str, second: str, kept: str, resolution: str
):
    logged(store, "r")
    assert store.add_labels([("r", "True")], first).accepted == 1
    result = store.add_labels([("r", "False")], second)
    assert result.conflicts == 1
    if resolution == "replaced":
        assert (result.accepted, result.rejected) == (1, [])
    else:
        assert (result.accepted, reasons(result)) == (0, [("r", "conflict")])
    assert store.labels(["r"]) == {"r": kept}
    (conflict,) = store.label_conflicts()
    assert (conflict.request_id, conflict.resolution) == ("r", resolution)
    assert (conflict.existing_label, conflict.existing_source) == ("True", first)
    assert (conflict.offered_label, conflict.offered_source) == ("False", second)
    assert conflict.time.tzinfo is not None


def test_identical_repeats_are_duplicates_not_conflicts(store: LifecycleStore):
    logged(store, "r", "s")
    store.add_labels([("r", "True")], "api")
    again = store.add_labels([("r", "True"), ("s", "False"), ("s", "False")], "api")
    assert (again.accepted, again.duplicates, again.conflicts, again.rejected) == (1, 2, 0, [])
    assert store.label_conflicts() == []


def test_a_file_confirming_an_api_label_takes_it_over(store: LifecycleStore):
    logged(store, "r")
    store.add_labels([("r", "True")], "api")
    confirm = store.add_labels([("r", "True")], "file:a.csv")
    assert (confirm.accepted, confirm.duplicates, confirm.conflicts) == (0, 1, 0)
    # Now a file label: a second file cannot replace it.
    later = store.add_labels([("r", "False")], "file:b.csv")
    assert reasons(later) == [("r", "conflict")]
    assert store.labels(["r"]) == {"r": "True"}
    assert [c.existing_source for c in store.label_conflicts()] == ["file:a.csv"]


def test_within_one_call_the_first_occurrence_wins(store: LifecycleStore):
    logged(store, "r")
    result = store.add_labels([("r", "True"), ("r", "False"), ("r", "True")], "file")
    assert (result.accepted, result.duplicates, result.conflicts) == (1, 1, 1)
    assert reasons(result) == [("r", "conflict")]
    assert store.labels(["r"]) == {"r": "True"}


def test_a_repeated_offer_is_recorded_once(store: LifecycleStore):
    logged(store, "r", "s")
    store.add_labels([("r", "True"), ("s", "True")], "file")
    for _ in range(3):
        result = store.add_labels([("r", "False"), ("s", "False")], "api")
        assert result.conflicts == 2
    store.add_labels([("r", "maybe")], "api")
    conflicts = store.label_conflicts()
    assert [(c.request_id, c.offered_label) for c in conflicts] == [
        ("r", "maybe"),
        ("s", "False"),
        ("r", "False"),
    ]
    assert store.label_conflict_count() == 3
    assert [c.offered_label for c in store.label_conflicts(limit=1)] == ["maybe"]
    assert len(store.label_conflicts(request_id="r", limit=None)) == 2


# --- a forged relabelling cannot flip a shadow test ------------------------------------------


POLICY = ChampionChallengerPolicy(shadow_min_labelled_samples=50, bootstrap_resamples=200)


def mirrored(store: LifecycleStore, n: int) -> tuple[list[str], list[str]]:
    """n requests answered by champion v1 (90 % right) and shadow v2 (60 % right)."""
    rng = np.random.default_rng(7)
    ids = [f"req-{i}" for i in range(n)]
    truth = ["True" if i % 2 else "False" for i in range(n)]
    rows = []
    for rid, label in zip(ids, truth, strict=True):
        for role, version, accuracy in (("champion", "1", 0.9), ("shadow", "2", 0.6)):
            right = rng.random() < accuracy
            guess = label if right else ("False" if label == "True" else "True")
            p_true = 0.8 if guess == "True" else 0.2
            rows.append(
                PredictionRow(
                    request_id=rid,
                    time=T0,
                    role=role,
                    model_name="churn",
                    model_version=version,
                    prediction=guess,
                    probabilities={"False": 1 - p_true, "True": p_true},
                    latency_ms=5.0,
                )
            )
    store.log_predictions(rows)
    return ids, truth


def shadow_verdict(store: LifecycleStore, forged: dict[str, str] | None = None) -> Decision:
    """The shadow decision on the stored labels (or on `forged` ones, had they been stored)."""
    pairs = store.labelled_pairs("1", "2", since=T0, model_name="churn")
    if forged is not None:
        pairs = pairs.assign(label=pairs["request_id"].map(forged))
    pairs, probas, _ = usable_rows(
        pairs,
        CLASSES,
        ["champion_prediction", "shadow_prediction"],
        ["champion_probabilities", "shadow_probabilities"],
    )

    def evaluation(version: str, role: str) -> ModelEvaluation:
        return ModelEvaluation(
            version=version,
            y_true=pairs["label"].astype(str).to_numpy(),
            y_pred=pairs[f"{role}_prediction"].astype(str).to_numpy(),
            probabilities=probas[f"{role}_probabilities"],
            classes=CLASSES,
            row_ids=pairs["request_id"].astype(str).to_numpy(),
        )

    record = decide_shadow(
        evaluation("1", "champion"),
        evaluation("2", "shadow"),
        POLICY,
        extensions_so_far=0,
        champion_error_rate=0.0,
        shadow_error_rate=0.0,
        champion_p50_latency_ms=5.0,
        shadow_p50_latency_ms=5.0,
        model_name="churn",
        actor=Actor.SCHEDULE,
    )
    return record.decision


@pytest.mark.parametrize("truth_source", ["api", "file:truth.csv"])
def test_a_forged_api_relabelling_cannot_flip_a_shadow_decision(
    store: LifecycleStore, truth_source: str
):
    ids, truth = mirrored(store, 120)
    assert store.add_labels(list(zip(ids, truth, strict=True)), truth_source).accepted == 120
    honest = shadow_verdict(store)
    assert honest == Decision.REJECT
    # The forger labels every request with the shadow's own answer: stored, that would promote.
    shadow_answers = {p.request_id: p.prediction for p in store.predictions(role="shadow")}
    assert shadow_verdict(store, forged=shadow_answers) == Decision.PROMOTE

    result = store.add_labels(list(shadow_answers.items()), "api")
    flipped = sum(shadow_answers[i] != t for i, t in zip(ids, truth, strict=True))
    assert flipped > 20
    assert (result.accepted, result.conflicts, result.duplicates) == (0, flipped, 120 - flipped)
    assert {r.reason for r in result.rejected} == {"conflict"}
    assert store.labels(ids) == dict(zip(ids, truth, strict=True))
    assert shadow_verdict(store) == honest
    assert len(store.label_conflicts(limit=None)) == flipped


# --- size --------------------------------------------------------------------------------------


def test_fifty_thousand_labels_in_one_call_are_one_transaction_of_chunked_queries(
    store: LifecycleStore,
):
    n = 50_000
    ids = [f"bulk-{i}" for i in range(n)]
    stamp = T0
    store.append_prediction_rows(
        [(i, stamp, "champion", "churn", "1", "{}", "True", None, 1.0, None) for i in ids]
    )
    statements: list[str] = []
    begins: list[int] = []

    def on_execute(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", on_execute)
    sa.event.listen(store.engine, "begin", lambda conn: begins.append(1))
    try:
        started = time.perf_counter()
        stored = store.add_labels([(i, "True") for i in ids], "file:bulk.csv")
        file_s = time.perf_counter() - started
        begins_file, statements_file = len(begins), len(statements)

        started = time.perf_counter()
        forged = store.add_labels([(i, "False") for i in ids], "api")
        api_s = time.perf_counter() - started

        started = time.perf_counter()
        unknown = store.add_labels([(f"nope-{i}", "True") for i in range(n)], "api")
        unknown_s = time.perf_counter() - started
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", on_execute)
    assert (stored.accepted, stored.unknown_ids, stored.rejected) == (n, [], [])
    assert (forged.accepted, forged.conflicts, len(forged.rejected)) == (0, n, n)
    assert (unknown.accepted, len(unknown.unknown_ids), len(unknown.rejected)) == (0, n, n)
    assert unknown.rejected[0].reason == "unknown_id"
    # One transaction per call; lookups in IN chunks (2 x 100 for 50,000 ids) and one batched
    # insert (one executemany on SQLite, pages of 1,000 rows on PostgreSQL), not a row at a time.
    assert begins_file == 1
    assert statements_file <= 2 * (n // 500) + n // 1000 + 10, statements_file
    assert len(begins) == 3
    # Loose bounds for a shared 2-core machine; a row-at-a-time path takes minutes.
    assert max(file_s, api_s, unknown_s) < 30, (file_s, api_s, unknown_s)
    assert store.label_conflict_count() == n
    with store.engine.connect() as conn:
        labels = conn.execute(sa.text("SELECT count(*) FROM labels")).scalar()
        conflicts = conn.execute(
            sa.select(sa.func.count()).select_from(label_conflicts_table)
        ).scalar()
    assert (labels, conflicts) == (n, n)
