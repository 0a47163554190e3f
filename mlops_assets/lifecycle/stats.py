"""Paired significance tests for two models scored on the same rows.

- `mcnemar_exact`: the exact McNemar test on the discordant rows (champion right and challenger
  wrong = b, champion wrong and challenger right = c). Under H0 the discordant rows split
  Binomial(b + c, 1/2). `p_value` is two-sided (as `statsmodels` `mcnemar(table, exact=True)`),
  `p_value_challenger_better` is the one-sided P(X >= c), which the gate uses.
- `paired_bootstrap`: the Poisson bootstrap of every metric's delta. Each resample gives every
  row an independent Poisson(1) weight, the *same* weight for both models (paired), and the same
  weights serve every metric. The Poisson bootstrap is the scalable form of the classic
  (multinomial) bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): it is asymptotically
  equivalent, and independent row weights can be drawn in chunks with bounded memory.
  - Weights are drawn `CHUNK_ELEMENTS // rows` resamples at a time (about one million weights,
    4 MB, per chunk), so memory does not grow with `n_resamples`.
  - Label metrics (accuracy, balanced_accuracy, precision, recall, f1_score) depend on the rows
    only through the joint cells (true class, champion prediction, challenger prediction): one
    matrix product projects a chunk of weights onto the cells, and both models' confusion
    matrices, hence the metrics, follow for every resample at once.
  - `log_loss` is the weighted mean of per-row losses (one matrix product). `roc_auc` is the
    exact weighted Mann-Whitney statistic (ties count half): negatives are sorted by score once
    per model, their weights cumulated per resample, and read off at each positive's rank.
    Multiclass `roc_auc` averages the one-vs-rest AUCs defined in each resample.
  - The weights depend only on `seed` and the number of rows, so a metric's result does not
    depend on which other metrics were asked for, and a challenger that is right on more rows
    gets a resample-by-resample larger delta (the decisions are monotone).
  - The delta is oriented as an improvement: challenger - champion, or champion - challenger for
    `log_loss`. The interval is the percentile interval at level 1 - alpha. The p-value is
    one-sided for "no improvement": (1 + #{delta* <= 0}) / (1 + valid resamples); ties at zero
    count against the challenger. Resamples where a metric is undefined (NaN, e.g. no positives
    for roc_auc) are left out and counted in `n_valid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import sparse, stats

from mlops_assets.lifecycle.metrics import (
    HIGHER_IS_BETTER,
    LABEL_METRICS,
    check_metric_names,
    encode_labels,
    metric_from_confusion,
    metrics_from_indices,
    probability_matrix,
    row_log_losses,
)

# Rows x resamples drawn at once for the per-row weights (float32: about 4 MB per array).
CHUNK_ELEMENTS = 1_000_000
# Above this many rows, weighted counts may pass 2**24: compute in float64 instead of float32.
_FLOAT32_MAX_ROWS = 1 << 20
# Largest rows x cells for a dense one-hot projection of rows onto label cells (float32).
_DENSE_ONEHOT_MAX = 4_000_000


class McNemarResult(BaseModel):
    """Exact McNemar test of two paired classifiers."""

    model_config = ConfigDict(frozen=True)

    b: int  # champion right, challenger wrong
    c: int  # champion wrong, challenger right
    statistic: float  # min(b, c), as statsmodels reports for the exact test
    p_value: float  # two-sided
    p_value_challenger_better: float  # one-sided, H1: the challenger is right more often

    @property
    def n_discordant(self) -> int:
        """Rows where exactly one model is right."""
        return self.b + self.c


class BootstrapResult(BaseModel):
    """The paired bootstrap of one metric's improvement (positive = challenger better)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    champion: float
    challenger: float
    delta: float  # observed improvement, oriented
    ci_low: float
    ci_high: float
    p_value: float  # one-sided, H0: no improvement
    alpha: float
    n_resamples: int
    n_valid: int


def mcnemar_exact(champion_correct: Any, challenger_correct: Any) -> McNemarResult:
    """Exact McNemar test from per-row correctness of the champion and the challenger."""
    a = np.asarray(champion_correct, dtype=bool)
    z = np.asarray(challenger_correct, dtype=bool)
    if a.shape != z.shape:
        raise ValueError(f"champion has {a.shape} rows, challenger {z.shape}")
    b = int(np.count_nonzero(a & ~z))
    c = int(np.count_nonzero(~a & z))
    n = b + c
    if n == 0:
        return McNemarResult(b=0, c=0, statistic=0.0, p_value=1.0, p_value_challenger_better=1.0)
    two_sided = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), n, 0.5)))
    one_sided = float(stats.binom.sf(c - 1, n, 0.5))
    return McNemarResult(
        b=b,
        c=c,
        statistic=float(min(b, c)),
        p_value=two_sided,
        p_value_challenger_better=one_sided,
    )


# --- Poisson(1) weights ---------------------------------------------------------------------

_POISSON_MAX = 24
_POISSON_CDF = np.cumsum(
    [math.exp(-1.0) / math.factorial(j) for j in range(_POISSON_MAX + 1)], dtype=np.float64
)
_BUCKETS = 1 << 16


def _poisson_table() -> np.ndarray:
    """Inverse-CDF value per 16-bit bucket, or -1 where the bucket straddles a CDF step."""
    starts = np.arange(_BUCKETS, dtype=np.float64) / _BUCKETS
    ends = np.nextafter((np.arange(_BUCKETS, dtype=np.float64) + 1) / _BUCKETS, 0.0)
    lo = np.searchsorted(_POISSON_CDF, starts, side="right")
    hi = np.searchsorted(_POISSON_CDF, ends, side="right")
    return np.where(lo == hi, lo, -1).astype(np.float32)


_POISSON_LUT = _poisson_table()


def poisson_weights(rng: np.random.Generator, n_resamples: int, n_rows: int) -> np.ndarray:
    """Exact Poisson(1) weights `[n_resamples, n_rows]` as float32.

    A 16-bit uniform picks the bucket of the inverse CDF; the few buckets that straddle a CDF
    step (about 20 of 65,536) are resolved with a fresh float64 uniform.
    """
    size = n_resamples * n_rows
    raw = rng.bit_generator.random_raw((size + 3) // 4)
    u16 = np.ascontiguousarray(raw).view(np.uint16)[:size]
    weights = _POISSON_LUT.take(u16)
    fix = np.flatnonzero(weights < 0)
    if fix.size:
        u = (u16[fix] + rng.random(fix.size)) / _BUCKETS
        weights[fix] = np.searchsorted(_POISSON_CDF, u, side="right")
    return weights.reshape(n_resamples, n_rows)


# --- vectorised per-resample metric values --------------------------------------------------


@dataclass(frozen=True)
class _AucPlan:
    """One model, one class, in engine row order: where positives and sorted negatives are.

    `neg` is a slice when the negatives already sit in score order (no gather needed).
    """

    pos: slice
    neg: slice | np.ndarray
    below: np.ndarray  # negatives scored strictly lower than each positive
    at_or_below: np.ndarray | None  # negatives scored lower or equal; None when no ties


def _auc_plan(pos: slice, neg_rows: np.ndarray, scores: np.ndarray) -> _AucPlan:
    """Plan for positives `pos` (a slice) against negatives `neg_rows` (engine row order)."""
    neg_sorted = neg_rows[np.argsort(scores[neg_rows], kind="stable")]
    neg_scores = scores[neg_sorted]
    pos_scores = scores[pos]
    below = np.searchsorted(neg_scores, pos_scores, side="left")
    at_or_below = np.searchsorted(neg_scores, pos_scores, side="right")
    ties = bool(np.any(below != at_or_below))
    neg: slice | np.ndarray = neg_sorted
    if len(neg_sorted) and np.array_equal(
        neg_sorted, np.arange(neg_sorted[0], neg_sorted[0] + len(neg_sorted))
    ):
        neg = slice(int(neg_sorted[0]), int(neg_sorted[0]) + len(neg_sorted))
    return _AucPlan(pos, neg, below, at_or_below if ties else None)


def _weighted_auc(weights: np.ndarray, plan: _AucPlan) -> np.ndarray:
    """Weighted Mann-Whitney AUC per resample; NaN when a resample lacks a class."""
    c = weights.shape[0]
    w_neg = weights[:, plan.neg] if isinstance(plan.neg, slice) else weights.take(plan.neg, 1)
    w_pos = weights[:, plan.pos]
    cum = np.zeros((c, w_neg.shape[1] + 1), dtype=weights.dtype)
    np.cumsum(w_neg, axis=1, out=cum[:, 1:])
    hits = cum.take(plan.below, axis=1)
    if plan.at_or_below is not None:
        hits += cum.take(plan.at_or_below, axis=1)
        hits *= 0.5
    # Weighted counts are exact integers in float32 up to _FLOAT32_MAX_ROWS rows (float64
    # beyond); the final sum is in float64.
    hits *= w_pos
    num = hits.sum(axis=1, dtype=np.float64)
    den = w_pos.sum(axis=1, dtype=np.float64) * cum[:, -1].astype(np.float64)
    out = np.full(c, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(values)
    n = ok.sum(axis=1)
    out = np.full(values.shape[0], np.nan)
    np.divide(np.where(ok, values, 0.0).sum(axis=1), n, out=out, where=n > 0)
    return out


class _Engine:
    """Every metric of both models under row weights `[R, N]`, vectorised over resamples.

    Rows are held in an engine order `perm`: grouped by true class (for a binary problem the
    positives first), and, when the champion's probabilities are given for a binary problem,
    the negatives sorted by the champion's score, so its AUC needs no gather. The order depends
    on `y_true` and the champion only. Bootstrap weights are i.i.d., so `paired_bootstrap` draws
    them directly in this order; weights given in row order are permuted with `perm` first.
    """

    def __init__(
        self,
        true_idx: np.ndarray,
        champ_idx: np.ndarray,
        chall_idx: np.ndarray,
        proba_a: np.ndarray | None,
        proba_z: np.ndarray | None,
        k: int,
    ) -> None:
        self.k = k
        n = len(true_idx)
        if k == 2:
            pos_rows = np.flatnonzero(true_idx == 1)
            neg_rows = np.flatnonzero(true_idx != 1)
            if proba_a is not None:
                neg_rows = neg_rows[np.argsort(proba_a[neg_rows, 1], kind="stable")]
            self.perm = np.concatenate([pos_rows, neg_rows])
        else:
            self.perm = np.argsort(true_idx, kind="stable")
        t = true_idx[self.perm]
        # Label metrics: rows -> joint cells (true, champion, challenger) -> confusion matrices.
        code = (t * k + champ_idx[self.perm]) * k + chall_idx[self.perm]
        uniq, row_cell = np.unique(code, return_inverse=True)
        m = len(uniq)
        row_cell = row_cell.reshape(-1)
        self.row_to_cell: np.ndarray | sparse.csr_matrix
        if n * m <= _DENSE_ONEHOT_MAX:
            # A dense one-hot matrix lets BLAS do the projection; counts stay exact integers.
            dtype = np.float32 if n <= _FLOAT32_MAX_ROWS else np.float64
            self.row_to_cell = np.zeros((n, m), dtype=dtype)
            self.row_to_cell[np.arange(n), row_cell] = 1
        else:
            self.row_to_cell = sparse.csr_matrix(
                (np.ones(n), (np.arange(n), row_cell)), shape=(n, m)
            )
        cell_true, rest = np.divmod(uniq, k * k)
        cell_a, cell_z = np.divmod(rest, k)
        ones = np.ones(m)
        self.cell_to_conf_a = sparse.csr_matrix(
            (ones, (np.arange(m), cell_true * k + cell_a)), shape=(m, k * k)
        )
        self.cell_to_conf_z = sparse.csr_matrix(
            (ones, (np.arange(m), cell_true * k + cell_z)), shape=(m, k * k)
        )
        # Probability metrics.
        self.losses: np.ndarray | None = None
        self.plans: list[tuple[_AucPlan, _AucPlan]] = []
        if proba_a is None or proba_z is None:
            return
        pa = proba_a[self.perm]
        pz = proba_z[self.perm]
        self.losses = np.column_stack([row_log_losses(t, pa), row_log_losses(t, pz)])
        for c in [1] if k == 2 else range(k):
            start, end = (0, len(pos_rows)) if k == 2 else np.searchsorted(t, [c, c + 1])
            pos = slice(int(start), int(end))
            neg = np.concatenate([np.arange(0, start), np.arange(end, n)])
            self.plans.append((_auc_plan(pos, neg, pa[:, c]), _auc_plan(pos, neg, pz[:, c])))

    def cell_counts(self, weights: np.ndarray) -> np.ndarray:
        """Weighted row counts of every joint cell, `[R, cells]`."""
        if isinstance(self.row_to_cell, np.ndarray):
            return (weights @ self.row_to_cell).astype(np.float64)
        return np.asarray(self.row_to_cell.T @ weights.T.astype(np.float64), dtype=np.float64).T

    def label_values(self, counts: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Champion and challenger values of a label metric from cell counts `[R, cells]`."""
        k = self.k
        conf_a = np.asarray(self.cell_to_conf_a.T @ counts.T).T.reshape(-1, k, k)
        conf_z = np.asarray(self.cell_to_conf_z.T @ counts.T).T.reshape(-1, k, k)
        return metric_from_confusion(conf_a, metric), metric_from_confusion(conf_z, metric)

    def proba_values(self, weights: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Champion and challenger values of roc_auc or log_loss for weights in engine order."""
        if self.losses is None:
            raise ValueError(f"{metric} needs probabilities from both models")
        if metric == "log_loss":
            total = weights.sum(axis=1, dtype=np.float64)
            sums = weights.astype(np.float64) @ self.losses
            out = np.full((len(total), 2), np.nan)
            np.divide(sums, total[:, None], out=out, where=total[:, None] > 0)
            return out[:, 0], out[:, 1]
        if metric != "roc_auc":
            raise ValueError(f"{metric!r} is not a probability metric")
        per_a = [_weighted_auc(weights, plan_a) for plan_a, _ in self.plans]
        per_z = [_weighted_auc(weights, plan_z) for _, plan_z in self.plans]
        if len(per_a) == 1:
            return per_a[0], per_z[0]
        return _nanmean_rows(np.column_stack(per_a)), _nanmean_rows(np.column_stack(per_z))

    def values(
        self, weights: np.ndarray, metrics: Sequence[str]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Champion and challenger values of each metric for weights `[R, N]` in engine order."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        labels = [m for m in metrics if m in LABEL_METRICS]
        if labels:
            counts = self.cell_counts(weights)
            for m in labels:
                out[m] = self.label_values(counts, m)
        for m in metrics:
            if m not in LABEL_METRICS:
                out[m] = self.proba_values(weights, m)
        return out


@dataclass(frozen=True)
class _Prepared:
    classes: list[str]
    metrics: list[str]
    true_idx: np.ndarray
    champ_idx: np.ndarray
    chall_idx: np.ndarray
    proba_a: np.ndarray | None
    proba_z: np.ndarray | None

    def engine(self) -> _Engine:
        """The vectorised engine for these rows."""
        return _Engine(
            self.true_idx,
            self.champ_idx,
            self.chall_idx,
            self.proba_a,
            self.proba_z,
            len(self.classes),
        )


def _prepare(
    y_true: Any,
    champion_pred: Any,
    challenger_pred: Any,
    champion_proba: Any,
    challenger_proba: Any,
    classes: Sequence[str],
    metrics: Sequence[str],
) -> _Prepared:
    names = check_metric_names(metrics)
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes}")
    true_idx = encode_labels(y_true, classes, "y_true")
    champ_idx = encode_labels(champion_pred, classes, "champion predictions")
    chall_idx = encode_labels(challenger_pred, classes, "challenger predictions")
    n = len(true_idx)
    if len(champ_idx) != n or len(chall_idx) != n:
        raise ValueError(
            f"paired rows differ: y_true {n}, champion {len(champ_idx)}, "
            f"challenger {len(chall_idx)}"
        )
    needs = [m for m in names if m not in LABEL_METRICS]
    if needs and (champion_proba is None or challenger_proba is None):
        raise ValueError(f"{', '.join(needs)} need probabilities from both models")
    # The engine order depends on the champion's probabilities whenever they are given, so a
    # metric's bootstrap does not depend on which other metrics were asked for.
    proba_a = proba_z = None
    if champion_proba is not None and challenger_proba is not None:
        proba_a = probability_matrix(champion_proba, n, len(classes))
        proba_z = probability_matrix(challenger_proba, n, len(classes))
    return _Prepared(classes, names, true_idx, champ_idx, chall_idx, proba_a, proba_z)


def resampled_metric_values(
    weights: np.ndarray,
    y_true: Any,
    champion_pred: Any,
    challenger_pred: Any,
    champion_proba: Any,
    challenger_proba: Any,
    classes: Sequence[str],
    metric: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Champion and challenger values of `metric` under row weights `[R, N]` (in row order).

    The vectorised engine of `paired_bootstrap`, exposed so it can be checked against a plain
    loop over resamples. Weights are resample counts (or any non-negative weights).
    """
    p = _prepare(
        y_true,
        champion_pred,
        challenger_pred,
        champion_proba,
        challenger_proba,
        classes,
        [metric],
    )
    engine = p.engine()
    dtype = np.float32 if len(p.true_idx) <= _FLOAT32_MAX_ROWS else np.float64
    weights = np.atleast_2d(np.asarray(weights, dtype=dtype))
    return engine.values(np.ascontiguousarray(weights[:, engine.perm]), [metric])[metric]


def _summarise(
    metric: str,
    observed_a: float,
    observed_z: float,
    boot_a: np.ndarray,
    boot_z: np.ndarray,
    alpha: float,
    n_resamples: int,
) -> BootstrapResult:
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    delta = sign * (observed_z - observed_a)
    deltas = sign * (boot_z - boot_a)
    valid = deltas[~np.isnan(deltas)]
    if valid.size and not np.isnan(delta):
        lo, hi = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
        p_value = (1.0 + np.count_nonzero(valid <= 0)) / (1.0 + valid.size)
    else:
        lo = hi = p_value = float("nan")
    return BootstrapResult(
        metric=metric,
        champion=float(observed_a),
        challenger=float(observed_z),
        delta=float(delta),
        ci_low=float(lo),
        ci_high=float(hi),
        p_value=float(p_value),
        alpha=alpha,
        n_resamples=n_resamples,
        n_valid=int(valid.size),
    )


def paired_bootstrap(
    y_true: Any,
    champion_pred: Any,
    challenger_pred: Any,
    champion_proba: Any,
    challenger_proba: Any,
    classes: Sequence[str],
    metrics: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, BootstrapResult]:
    """Paired Poisson bootstrap of each metric's improvement; see the module docstring."""
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    p = _prepare(
        y_true,
        champion_pred,
        challenger_pred,
        champion_proba,
        challenger_proba,
        classes,
        metrics,
    )
    k = len(p.classes)
    n_rows = len(p.true_idx)
    observed_a = metrics_from_indices(p.true_idx, p.champ_idx, p.proba_a, k, p.metrics)
    observed_z = metrics_from_indices(p.true_idx, p.chall_idx, p.proba_z, k, p.metrics)
    boot: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if n_rows:
        engine = p.engine()
        rng = np.random.default_rng(seed)
        chunk = max(1, CHUNK_ELEMENTS // n_rows)
        parts: list[dict[str, tuple[np.ndarray, np.ndarray]]] = []
        for start in range(0, n_resamples, chunk):
            weights = poisson_weights(rng, min(chunk, n_resamples - start), n_rows)
            if n_rows > _FLOAT32_MAX_ROWS:
                weights = weights.astype(np.float64)
            parts.append(engine.values(weights, p.metrics))
        for m in p.metrics:
            boot[m] = (
                np.concatenate([part[m][0] for part in parts]),
                np.concatenate([part[m][1] for part in parts]),
            )
    empty = (np.full(n_resamples, np.nan), np.full(n_resamples, np.nan))
    return {
        m: _summarise(m, observed_a[m], observed_z[m], *boot.get(m, empty), alpha, n_resamples)
        for m in p.metrics
    }
