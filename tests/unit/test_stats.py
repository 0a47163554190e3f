"""Paired tests: McNemar against statsmodels, the vectorised bootstrap against a plain loop."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from scipy import stats as sps
from sklearn import metrics as skm
from statsmodels.stats.contingency_tables import mcnemar

from mlops_assets.lifecycle.metrics import KNOWN_METRICS, LABEL_METRICS
from mlops_assets.lifecycle.stats import (
    mcnemar_exact,
    paired_bootstrap,
    poisson_weights,
    resampled_metric_values,
)


def _correctness(both: int, b: int, c: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row correctness with the given 2x2 table (champion right/wrong x challenger)."""
    champ = np.array([True] * both + [True] * b + [False] * c + [False] * neither)
    chall = np.array([True] * both + [False] * b + [True] * c + [False] * neither)
    return champ, chall


@pytest.mark.parametrize(
    "table",
    [(50, 10, 25, 15), (40, 5, 5, 10), (10, 0, 7, 3), (100, 30, 12, 8), (5, 0, 0, 5), (0, 1, 0, 0)],
)
def test_mcnemar_matches_statsmodels(table: tuple[int, int, int, int]) -> None:
    both, b, c, neither = table
    champ, chall = _correctness(both, b, c, neither)
    got = mcnemar_exact(champ, chall)
    ref = mcnemar(np.array([[both, b], [c, neither]]), exact=True)
    assert (got.b, got.c) == (b, c)
    assert got.statistic == pytest.approx(ref.statistic)
    assert got.p_value == pytest.approx(ref.pvalue)
    if b + c:
        one_sided = sps.binomtest(c, b + c, 0.5, alternative="greater").pvalue
        assert got.p_value_challenger_better == pytest.approx(one_sided)
    else:
        assert got.p_value_challenger_better == 1.0


def test_mcnemar_direction() -> None:
    better = mcnemar_exact(*_correctness(50, 2, 20, 10))
    worse = mcnemar_exact(*_correctness(50, 20, 2, 10))
    assert better.p_value == pytest.approx(worse.p_value)
    assert better.p_value_challenger_better < 0.001 < 0.99 < worse.p_value_challenger_better


def test_poisson_weights_are_poisson_one() -> None:
    rng = np.random.default_rng(0)
    w = poisson_weights(rng, 50, 4000)
    assert w.shape == (50, 4000)
    assert w.dtype == np.float32
    assert np.all(w == np.round(w))
    counts = np.bincount(w.astype(int).ravel())
    k = np.arange(len(counts))
    expected = sps.poisson.pmf(k, 1.0) * w.size
    keep = expected > 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(expected[keep], w.size - expected[keep].sum())
    assert sps.chisquare(observed, expected).pvalue > 1e-4
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert w.var() == pytest.approx(1.0, abs=0.02)


def _pair(n: int, k: int, seed: int, decimals: int | None = None) -> tuple:
    """Labels, two models' predictions and probabilities; optional rounding makes score ties."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    pa = np.exp(logits + rng.normal(scale=0.8, size=(n, k)))
    pz = np.exp(logits + rng.normal(scale=0.4, size=(n, k)))
    pa /= pa.sum(1, keepdims=True)
    pz /= pz.sum(1, keepdims=True)
    if decimals is not None:
        pa, pz = np.round(pa, decimals), np.round(pz, decimals)
    classes = [f"c{i}" for i in range(k)]
    labels = np.asarray(classes)
    return labels[y], labels[pa.argmax(1)], labels[pz.argmax(1)], pa, pz, classes


def _reference(metric: str, y, pred, proba, classes) -> float:
    """The metric on one expanded resample, by scikit-learn (NaN where it is undefined)."""
    binary = len(classes) == 2
    kw = {"pos_label": classes[-1], "zero_division": 0} if binary else {"average": "macro"}
    if metric == "accuracy":
        return skm.accuracy_score(y, pred)
    if metric == "balanced_accuracy":
        return skm.balanced_accuracy_score(y, pred)
    if metric == "precision":
        return skm.precision_score(y, pred, **kw)
    if metric == "recall":
        return skm.recall_score(y, pred, **kw)
    if metric == "f1_score":
        return skm.f1_score(y, pred, **kw)
    if metric == "log_loss":
        return skm.log_loss(y, proba, labels=classes)
    aucs = []
    for i, c in enumerate(classes[1:] if binary else classes, start=1 if binary else 0):
        pos = y == c
        if pos.any() and not pos.all():
            aucs.append(skm.roc_auc_score(pos, proba[:, i]))
    return float(np.mean(aucs)) if aucs else math.nan


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("metric", KNOWN_METRICS)
@pytest.mark.parametrize(("k", "decimals"), [(2, None), (2, 1), (3, None), (3, 1)])
def test_vectorised_engine_equals_a_plain_loop(metric: str, k: int, decimals: int | None) -> None:
    y, a, z, pa, pz, classes = _pair(40, k, seed=k * 10 + (decimals or 0), decimals=decimals)
    if metric == "log_loss" and decimals is not None:
        pa, pz = np.clip(pa, 1e-3, 1), np.clip(pz, 1e-3, 1)
    weights = poisson_weights(np.random.default_rng(7), 25, len(y))
    got_a, got_z = resampled_metric_values(weights, y, a, z, pa, pz, classes, metric)
    for r in range(len(weights)):
        idx = np.repeat(np.arange(len(y)), weights[r].astype(int))
        ref_a = _reference(metric, y[idx], a[idx], pa[idx], classes)
        ref_z = _reference(metric, y[idx], z[idx], pz[idx], classes)
        np.testing.assert_allclose([got_a[r], got_z[r]], [ref_a, ref_z], rtol=1e-6, atol=1e-9)


def test_bootstrap_is_seeded_and_paired() -> None:
    y, a, z, pa, pz, classes = _pair(300, 2, seed=1)
    metrics = list(KNOWN_METRICS)
    first = paired_bootstrap(y, a, z, pa, pz, classes, metrics, n_resamples=300, seed=5)
    again = paired_bootstrap(y, a, z, pa, pz, classes, metrics, n_resamples=300, seed=5)
    other = paired_bootstrap(y, a, z, pa, pz, classes, metrics, n_resamples=300, seed=6)
    assert first == again
    assert first["f1_score"].ci_low != other["f1_score"].ci_low
    # A metric's result does not depend on which other metrics were asked for.
    alone = paired_bootstrap(y, a, z, pa, pz, classes, ["roc_auc"], n_resamples=300, seed=5)
    assert alone["roc_auc"] == first["roc_auc"]
    # Paired: the same model against itself never moves.
    same = paired_bootstrap(y, a, a, pa, pa, classes, metrics, n_resamples=200, seed=0)
    for res in same.values():
        assert (res.delta, res.ci_low, res.ci_high, res.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_orients_log_loss_as_improvement() -> None:
    y, a, z, pa, pz, classes = _pair(1000, 2, seed=2)
    res = paired_bootstrap(y, a, z, pa, pz, classes, ["log_loss", "roc_auc"], n_resamples=300)
    ll = res["log_loss"]
    assert ll.challenger < ll.champion  # the less noisy model
    assert ll.delta == pytest.approx(ll.champion - ll.challenger)
    assert ll.ci_low <= ll.delta <= ll.ci_high
    assert ll.delta > 0 and ll.p_value < 0.01


def test_bootstrap_ci_contains_the_true_delta() -> None:
    # Champion right with probability 0.70, challenger 0.78; their errors are independent,
    # so the true accuracy delta is 0.08.
    rng = np.random.default_rng(11)
    n = 4000
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.70, y, 1 - y)
    z = np.where(rng.random(n) < 0.78, y, 1 - y)
    labels = np.array(["0", "1"])
    res = paired_bootstrap(
        labels[y],
        labels[a],
        labels[z],
        None,
        None,
        ["0", "1"],
        ["accuracy"],
        n_resamples=1000,
        seed=3,
    )["accuracy"]
    assert res.ci_low < 0.08 < res.ci_high
    assert res.ci_high - res.ci_low < 0.06
    assert res.p_value < 0.01


def test_bootstrap_interval_coverage_is_close_to_nominal() -> None:
    # 120 independent data sets with a known accuracy delta of 0.05: a 90% interval should
    # cover it about 108 times; allow generous Monte Carlo slack.
    rng = np.random.default_rng(0)
    labels = np.array(["0", "1"])
    covered = 0
    for rep in range(120):
        n = 400
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < 0.75, y, 1 - y)
        z = np.where(rng.random(n) < 0.80, y, 1 - y)
        res = paired_bootstrap(
            labels[y],
            labels[a],
            labels[z],
            None,
            None,
            ["0", "1"],
            ["accuracy"],
            n_resamples=400,
            seed=rep,
            alpha=0.10,
        )["accuracy"]
        covered += res.ci_low <= 0.05 <= res.ci_high
    assert 94 <= covered <= 120


def test_bootstrap_memory_is_bounded_by_chunks() -> None:
    y, a, z, pa, pz, classes = _pair(100_000, 2, seed=4)
    tracemalloc.start()
    try:
        paired_bootstrap(y, a, z, pa, pz, classes, list(KNOWN_METRICS), n_resamples=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Chunks hold about a million weights; the rest is O(rows).
    assert peak < 200 * 2**20


def test_bootstrap_rejects_bad_input() -> None:
    y, a, z, _, _, classes = _pair(50, 2, seed=0)
    with pytest.raises(ValueError, match="need probabilities"):
        paired_bootstrap(y, a, z, None, None, classes, ["roc_auc"])
    with pytest.raises(ValueError, match="paired rows differ"):
        paired_bootstrap(y, a[:-1], z, None, None, classes, ["accuracy"])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(y, a, z, None, None, classes, ["kappa"])


def test_undefined_metric_resamples_are_left_out() -> None:
    # Two positives in 40 rows: some resamples have none, where roc_auc is undefined.
    y = np.array(["1", "1"] + ["0"] * 38)
    p = np.linspace(0.05, 0.95, 40)
    pred = np.where(p > 0.5, "1", "0")
    res = paired_bootstrap(
        y, pred, pred, p, p[::-1], ["0", "1"], ["roc_auc", *sorted(LABEL_METRICS)], n_resamples=500
    )
    assert 0 < res["roc_auc"].n_valid < 500
    assert res["accuracy"].n_valid == 500
