"""Metrics against scikit-learn, for binary and multiclass problems, and their degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from mlops_assets.lifecycle.metrics import (
    HIGHER_IS_BETTER,
    KNOWN_METRICS,
    compute_metrics,
    confusion_counts,
    encode_labels,
    orient,
)

ALL = list(KNOWN_METRICS)


def _binary(n: int, seed: int, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    labels = np.asarray(classes)
    return labels[y], labels[(p > 0.5).astype(int)], p


def _sk_binary(y: np.ndarray, pred: np.ndarray, p: np.ndarray, pos: str) -> dict[str, float]:
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, pos_label=pos, zero_division=0),
        "recall": skm.recall_score(y, pred, pos_label=pos, zero_division=0),
        "f1_score": skm.f1_score(y, pred, pos_label=pos, zero_division=0),
        "roc_auc": skm.roc_auc_score(y == pos, p),
        "log_loss": skm.log_loss(y == pos, p, labels=[False, True]),
    }


@pytest.mark.parametrize("classes", [["0", "1"], ["False", "True"], ["no", "yes"]])
def test_binary_matches_sklearn_with_1d_and_2d_probabilities(classes: list[str]) -> None:
    y, pred, p = _binary(400, 1, classes)
    expected = _sk_binary(y, pred, p, classes[-1])
    one_d = compute_metrics(y, pred, p, classes, ALL)
    two_d = compute_metrics(y, pred, np.column_stack([1 - p, p]), classes, ALL)
    for name in ALL:
        assert one_d[name] == pytest.approx(expected[name], abs=1e-12), name
        assert two_d[name] == pytest.approx(expected[name], abs=1e-12), name


def test_positive_class_is_the_last_class() -> None:
    y = np.array(["0", "0", "1", "1", "1"])
    pred = np.array(["0", "1", "1", "1", "0"])
    got = compute_metrics(y, pred, None, ["0", "1"], ["precision", "recall"])
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    # Booleans are labels "False"/"True": the positive class is "True".
    got = compute_metrics(
        [False, True, True], [False, True, False], None, ["False", "True"], ["recall"]
    )
    assert got["recall"] == pytest.approx(0.5)


def test_multiclass_matches_sklearn_macro_and_ovr() -> None:
    rng = np.random.default_rng(3)
    n, classes = 600, ["a", "b", "c"]
    y = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.asarray(classes)
    yt, yp = labels[y], labels[proba.argmax(1)]
    got = compute_metrics(yt, yp, proba, classes, ALL)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yt, yp))
    assert got["precision"] == pytest.approx(skm.precision_score(yt, yp, average="macro"))
    assert got["recall"] == pytest.approx(skm.recall_score(yt, yp, average="macro"))
    assert got["f1_score"] == pytest.approx(skm.f1_score(yt, yp, average="macro"))
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(yt, proba, multi_class="ovr", average="macro", labels=classes)
    )
    assert got["log_loss"] == pytest.approx(skm.log_loss(yt, proba, labels=classes))


def test_multiclass_macro_uses_the_classes_present_like_sklearn() -> None:
    # Class "c" never appears: sklearn averages over the labels seen in y_true or y_pred.
    yt = np.array(["a", "a", "b", "b", "b"])
    yp = np.array(["a", "b", "b", "b", "a"])
    got = compute_metrics(yt, yp, None, ["a", "b", "c"], ["precision", "recall", "f1_score"])
    assert got["precision"] == pytest.approx(skm.precision_score(yt, yp, average="macro"))
    assert got["recall"] == pytest.approx(skm.recall_score(yt, yp, average="macro"))
    assert got["f1_score"] == pytest.approx(skm.f1_score(yt, yp, average="macro"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=60
    )
)
def test_binary_property_matches_sklearn(rows: list[tuple[int, int, float]]) -> None:
    y = np.array([str(r[0]) for r in rows])
    pred = np.array([str(r[1]) for r in rows])
    p = np.array([r[2] for r in rows])
    got = compute_metrics(y, pred, p, ["0", "1"], ALL)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    for name, fn in (
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1_score", skm.f1_score),
    ):
        assert got[name] == pytest.approx(fn(y, pred, pos_label="1", zero_division=0)), name
    assert got["log_loss"] == pytest.approx(skm.log_loss(y == "1", p, labels=[False, True]))
    if len(set(y)) == 2:
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == "1", p))
    else:
        assert math.isnan(got["roc_auc"])


def test_no_positive_predictions_gives_zero_not_nan() -> None:
    y = np.array(["0", "1", "1", "0"])
    pred = np.array(["0", "0", "0", "0"])
    got = compute_metrics(y, pred, None, ["0", "1"], ["precision", "recall", "f1_score"])
    assert got == {"precision": 0.0, "recall": 0.0, "f1_score": 0.0}


def test_single_class_in_y_true_makes_roc_auc_nan_only() -> None:
    y = np.array(["1"] * 10)
    pred = np.array(["1"] * 8 + ["0"] * 2)
    p = np.linspace(0.1, 0.9, 10)
    got = compute_metrics(y, pred, p, ["0", "1"], ALL)
    assert math.isnan(got["roc_auc"])
    assert got["accuracy"] == pytest.approx(0.8)
    assert math.isfinite(got["log_loss"])


def test_zero_rows_give_nan() -> None:
    got = compute_metrics([], [], np.zeros((0, 2)), ["0", "1"], ["accuracy", "roc_auc"])
    assert all(math.isnan(v) for v in got.values())


def test_unknown_metric_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'auc_pr'.*known metrics: accuracy.*log_loss"):
        compute_metrics(["0"], ["0"], None, ["0", "1"], ["accuracy", "auc_pr"])


def test_label_outside_classes_is_rejected() -> None:
    with pytest.raises(ValueError, match="not in classes"):
        encode_labels(["0", "2"], ["0", "1"])


def test_probabilities_needed_and_checked() -> None:
    with pytest.raises(ValueError, match="need probabilities"):
        compute_metrics(["0", "1"], ["0", "1"], None, ["0", "1"], ["roc_auc"])
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(["0", "1"], ["0", "1"], np.ones((2, 3)) / 3, ["0", "1"], ["log_loss"])
    with pytest.raises(ValueError, match="need 2 classes"):
        compute_metrics(["a", "b"], ["a", "b"], [0.2, 0.3], ["a", "b", "c"], ["log_loss"])


def test_orientation() -> None:
    assert HIGHER_IS_BETTER["log_loss"] is False
    assert all(HIGHER_IS_BETTER[m] for m in KNOWN_METRICS if m != "log_loss")
    assert orient("log_loss", -0.1) == pytest.approx(0.1)
    assert orient("f1_score", 0.1) == pytest.approx(0.1)


def test_weighted_confusion_equals_repeated_rows() -> None:
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    w = rng.poisson(1.0, size=(4, 50))
    got = confusion_counts(t, p, 3, weights=w)
    for r in range(4):
        idx = np.repeat(np.arange(50), w[r])
        np.testing.assert_array_equal(
            got[r], skm.confusion_matrix(t[idx], p[idx], labels=[0, 1, 2])
        )
