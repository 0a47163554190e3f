"""Classification metrics for the lifecycle gate, in vectorised pieces the bootstrap reuses.

Conventions
-----------
- Labels are compared as strings: `y_true` and `y_pred` hold class labels, `classes` lists every
  class (sorted as strings, e.g. `["0", "1"]` or `["False", "True"]`).
- Binary problems (two classes): the positive class is `classes[-1]`. `precision`, `recall` and
  `f1_score` are those of the positive class; `roc_auc` scores P(positive).
- Multiclass problems: `precision`, `recall` and `f1_score` are macro averages over the classes
  present in `y_true` or `y_pred` (scikit-learn's default labels); `roc_auc` is the one-vs-rest
  macro average over the classes that have both positives and negatives in `y_true`.
- `probabilities` is `[N, k]` with one column per class in `classes` order, or, for a binary
  problem only, a 1-D array of P(positive).
- A ratio with a zero denominator is 0.0 (precision with no positive predictions, for example),
  as in scikit-learn's `zero_division` default.
- Undefined metrics are NaN: `roc_auc` when `y_true` holds a single class, and every metric on
  zero rows. The policy never relies on a NaN metric: it says so in the decision's reasons.
- `log_loss` clips probabilities to `[eps, 1 - eps]` (float64 machine epsilon), as scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

KNOWN_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1_score",
    "roc_auc",
    "log_loss",
)

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "balanced_accuracy": True,
    "precision": True,
    "recall": True,
    "f1_score": True,
    "roc_auc": True,
    "log_loss": False,
}

# Metrics that only need the confusion matrix, and those that need probabilities.
LABEL_METRICS: frozenset[str] = frozenset(
    {"accuracy", "balanced_accuracy", "precision", "recall", "f1_score"}
)
PROBABILITY_METRICS: frozenset[str] = frozenset({"roc_auc", "log_loss"})

_EPS = float(np.finfo(np.float64).eps)


def check_metric_names(metrics: Sequence[str]) -> list[str]:
    """Return the metric names as a list; raise ValueError naming any unknown one."""
    names = [str(m) for m in metrics]
    unknown = [m for m in names if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ValueError(
            f"unknown metric {', '.join(repr(m) for m in unknown)}; "
            f"known metrics: {', '.join(KNOWN_METRICS)}"
        )
    return names


def orient(metric: str, delta: float | np.ndarray) -> Any:
    """Turn a raw challenger - champion delta into an improvement (positive = challenger better)."""
    check_metric_names([metric])
    return delta if HIGHER_IS_BETTER[metric] else -delta


def as_labels(values: Any) -> np.ndarray:
    """Return labels as a 1-D array of Python-str-compatible numpy strings."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr.astype(str)


def encode_labels(values: Any, classes: Sequence[str], what: str = "labels") -> np.ndarray:
    """Map labels to their index in `classes`; raise ValueError for a label not in `classes`."""
    labels = as_labels(values)
    cls = np.asarray([str(c) for c in classes])
    order = np.argsort(cls)
    sorted_cls = cls[order]
    pos = np.searchsorted(sorted_cls, labels)
    pos = np.clip(pos, 0, len(cls) - 1)
    found = sorted_cls[pos] == labels if len(labels) else np.ones(0, dtype=bool)
    if not np.all(found):
        bad = sorted({str(v) for v in labels[~found]})[:5]
        raise ValueError(f"{what} contain values not in classes {list(cls)}: {bad}")
    return order[pos].astype(np.intp)


def probability_matrix(probabilities: Any, n_rows: int, n_classes: int) -> np.ndarray:
    """Return probabilities as float64 `[N, k]`; a 1-D binary input is P(positive)."""
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim == 1:
        if n_classes != 2:
            raise ValueError(
                f"1-D probabilities mean P(positive) and need 2 classes, not {n_classes}"
            )
        proba = np.column_stack([1.0 - proba, proba])
    if proba.ndim != 2 or proba.shape != (n_rows, n_classes):
        raise ValueError(
            f"probabilities must have shape ({n_rows}, {n_classes}) or ({n_rows},) for a "
            f"binary problem; got {np.asarray(probabilities).shape}"
        )
    if n_rows and (np.nanmin(proba) < -1e-9 or np.nanmax(proba) > 1 + 1e-9):
        raise ValueError("probabilities must lie in [0, 1]")
    if np.isnan(proba).any():
        raise ValueError("probabilities contain NaN")
    return proba


def confusion_counts(
    true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrix `[k, k]` (rows true); row weights `[R, N]` give one per resample."""
    codes = np.asarray(true_idx) * n_classes + np.asarray(pred_idx)
    cells = n_classes * n_classes
    if weights is None:
        return np.bincount(codes, minlength=cells).reshape(n_classes, n_classes).astype(float)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    counts = np.stack([np.bincount(codes, weights=w, minlength=cells) for w in weights])
    return counts.reshape(len(weights), n_classes, n_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where den == 0 (scikit-learn's zero_division default)."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def metric_from_confusion(conf: np.ndarray, metric: str) -> np.ndarray:
    """A label metric from confusion matrices `[..., k, k]` (rows true, columns predicted).

    Vectorised over the leading axes, so one call scores every bootstrap resample.
    """
    conf = np.asarray(conf, dtype=np.float64)
    k = conf.shape[-1]
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    true_sum = conf.sum(axis=-1)
    pred_sum = conf.sum(axis=-2)
    total = true_sum.sum(axis=-1)
    if metric == "accuracy":
        out = np.full(total.shape, np.nan)
        np.divide(tp.sum(axis=-1), total, out=out, where=total > 0)
        return out
    if metric == "balanced_accuracy":
        present = true_sum > 0
        recall = _ratio(tp, true_sum)
        n_present = present.sum(axis=-1)
        out = np.full(total.shape, np.nan)
        np.divide((recall * present).sum(axis=-1), n_present, out=out, where=n_present > 0)
        return out
    if metric not in ("precision", "recall", "f1_score"):
        raise ValueError(f"{metric!r} is not a label metric")
    if metric == "precision":
        per_class = _ratio(tp, pred_sum)
    elif metric == "recall":
        per_class = _ratio(tp, true_sum)
    else:
        per_class = _ratio(2 * tp, true_sum + pred_sum)
    if k == 2:
        out = per_class[..., 1].copy()
    else:
        present = (true_sum + pred_sum) > 0
        n_present = present.sum(axis=-1)
        out = np.zeros(total.shape)
        np.divide((per_class * present).sum(axis=-1), n_present, out=out, where=n_present > 0)
    return np.where(total > 0, out, np.nan)


def row_log_losses(true_idx: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Per-row log loss `-log p(true class)`, clipped like scikit-learn."""
    p = proba[np.arange(len(true_idx)), true_idx]
    return -np.log(np.clip(p, _EPS, 1 - _EPS))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC AUC (ties count half); NaN without both positives and negatives."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_scores = np.sort(scores[~positive])
    pos_scores = scores[positive]
    below = np.searchsorted(neg_scores, pos_scores, side="left")
    at_or_below = np.searchsorted(neg_scores, pos_scores, side="right")
    return float((below + at_or_below).sum() / (2.0 * n_pos * n_neg))


def roc_auc(true_idx: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC of the last class, or one-vs-rest macro AUC over classes with both outcomes."""
    k = proba.shape[1]
    if k == 2:
        return binary_auc(true_idx == 1, proba[:, 1])
    aucs = [binary_auc(true_idx == c, proba[:, c]) for c in range(k)]
    defined = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def compute_metrics(
    y_true: Any,
    y_pred: Any,
    probabilities: Any,
    classes: Sequence[str],
    metrics: Sequence[str],
) -> dict[str, float]:
    """Score one model's predictions; see the module docstring for conventions and NaN cases."""
    names = check_metric_names(metrics)
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes}")
    true_idx = encode_labels(y_true, classes, "y_true")
    pred_idx = encode_labels(y_pred, classes, "y_pred")
    if len(true_idx) != len(pred_idx):
        raise ValueError(f"y_true has {len(true_idx)} rows but y_pred has {len(pred_idx)}")
    proba = None
    needs_proba = [m for m in names if m in PROBABILITY_METRICS]
    if needs_proba:
        if probabilities is None:
            raise ValueError(f"{', '.join(needs_proba)} need probabilities")
        proba = probability_matrix(probabilities, len(true_idx), len(classes))
    return metrics_from_indices(true_idx, pred_idx, proba, len(classes), names)


def metrics_from_indices(
    true_idx: np.ndarray,
    pred_idx: np.ndarray,
    proba: np.ndarray | None,
    n_classes: int,
    metrics: Sequence[str],
) -> dict[str, float]:
    """`compute_metrics` on class indices and a validated `[N, k]` probability matrix."""
    n = len(true_idx)
    conf = confusion_counts(true_idx, pred_idx, n_classes) if n else None
    out: dict[str, float] = {}
    for name in check_metric_names(metrics):
        if n == 0:
            out[name] = float("nan")
        elif name in LABEL_METRICS:
            out[name] = float(metric_from_confusion(conf, name))
        elif proba is None:
            raise ValueError(f"{name} needs probabilities")
        elif name == "log_loss":
            out[name] = float(row_log_losses(true_idx, proba).mean())
        else:
            out[name] = roc_auc(true_idx, proba)
    return out
