"""Evaluation report: comparison plots of champion and challenger, and the decision in Markdown.

Plots are drawn on matplotlib `Figure` objects with the Agg canvas directly (no pyplot), so
rendering has no global state and works in threads, servers and Dagster steps alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.verdict import Check

logger = logging.getLogger(__name__)

PLOT_NAMES = ("roc", "precision_recall", "confusion", "calibration")
_DPI = 110
_CALIBRATION_BINS = 10


def _label_text(value: Any) -> str:
    """A class label as text; integral floats lose their `.0` so 1.0 matches class "1"."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def _labels(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.array([_label_text(v) for v in np.asarray(values, dtype=object).ravel()])


def _score_matrix(probs: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities as an [N, k] matrix; a 1-D array is P(positive) of a binary task."""
    array = np.asarray(probs, dtype=float)
    if array.ndim == 1:
        if n_classes != 2:
            raise ValueError("1-D probabilities need a binary task (two classes)")
        return np.column_stack([1.0 - array, array])
    if array.ndim == 2 and array.shape[1] == 1 and n_classes == 2:
        return np.column_stack([1.0 - array[:, 0], array[:, 0]])
    if array.ndim != 2 or array.shape[1] != n_classes:
        raise ValueError(f"probabilities of shape {array.shape} do not match {n_classes} classes")
    return array


def _new_figure(width: float = 6.4, height: float = 5.0) -> Figure:
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=_DPI)
    return path


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)


def _one_vs_rest(y: np.ndarray, classes: list[str]) -> np.ndarray:
    return np.column_stack([(y == c).astype(int) for c in classes])


def _plot_roc(ax: Axes, y: np.ndarray, scores: dict[str, np.ndarray], classes: list[str]) -> None:
    binary = len(classes) == 2
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    present = set(y)
    for label, matrix in scores.items():
        if binary:
            truth = (y == classes[-1]).astype(int)
            if len(set(truth)) < 2:
                continue
            fpr, tpr, _ = roc_curve(truth, matrix[:, 1])
            auc = roc_auc_score(truth, matrix[:, 1])
            name = f"{label} (AUC {auc:.3f})"
        else:
            usable = [i for i, c in enumerate(classes) if c in present]
            if len(usable) < 2:
                continue
            onehot = _one_vs_rest(y, classes)
            fpr, tpr, _ = roc_curve(onehot.ravel(), matrix.ravel())
            macro = np.mean([roc_auc_score(onehot[:, i], matrix[:, i]) for i in usable])
            name = f"{label} (micro curve, macro AUC {macro:.3f})"
        ax.plot(fpr, tpr, linewidth=2, label=name)
    if len(ax.lines) == 1:
        _note(ax, "ROC undefined: the holdout holds a single class")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="False positive rate", ylabel="True positive rate")
    positive = f" (positive class {classes[-1]!r})" if binary else " (one-vs-rest)"
    ax.set_title("ROC curve" + positive)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)


def _plot_pr(ax: Axes, y: np.ndarray, scores: dict[str, np.ndarray], classes: list[str]) -> None:
    binary = len(classes) == 2
    truth = (y == classes[-1]).astype(int)
    if binary:
        base_rate = float(truth.mean()) if len(truth) else 0.0
        ax.axhline(
            base_rate, linestyle="--", color="grey", linewidth=1, label=f"base rate {base_rate:.3f}"
        )
    for label, matrix in scores.items():
        if binary:
            if truth.sum() == 0:
                continue
            precision, recall, _ = precision_recall_curve(truth, matrix[:, 1])
            ap = average_precision_score(truth, matrix[:, 1])
            name = f"{label} (AP {ap:.3f})"
        else:
            onehot = _one_vs_rest(y, classes)
            if onehot.sum() == 0:
                continue
            precision, recall, _ = precision_recall_curve(onehot.ravel(), matrix.ravel())
            ap = average_precision_score(onehot, matrix, average="micro")
            name = f"{label} (micro AP {ap:.3f})"
        ax.plot(recall, precision, linewidth=2, label=name)
    if not [line for line in ax.lines if line.get_linestyle() != "--"]:
        _note(ax, "precision-recall undefined: no positive rows in the holdout")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall", ylabel="Precision")
    positive = f" (positive class {classes[-1]!r})" if binary else " (micro-averaged)"
    ax.set_title("Precision-recall curve" + positive)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)


def _plot_calibration(
    ax: Axes, y: np.ndarray, scores: dict[str, np.ndarray], classes: list[str]
) -> None:
    binary = len(classes) == 2
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, _CALIBRATION_BINS + 1)
    for label, matrix in scores.items():
        if binary:
            confidence = matrix[:, 1]
            outcome = (y == classes[-1]).astype(float)
        else:
            # Multiclass: reliability of the top-class probability.
            confidence = matrix.max(axis=1)
            predicted = np.array(classes)[matrix.argmax(axis=1)]
            outcome = (predicted == y).astype(float)
        bins = np.clip(np.digitize(confidence, edges[1:-1]), 0, _CALIBRATION_BINS - 1)
        xs, ys = [], []
        for b in range(_CALIBRATION_BINS):
            mask = bins == b
            if mask.any():
                xs.append(float(confidence[mask].mean()))
                ys.append(float(outcome[mask].mean()))
        brier = float(np.mean((confidence - outcome) ** 2)) if len(outcome) else float("nan")
        ax.plot(xs, ys, marker="o", linewidth=2, label=f"{label} (Brier {brier:.3f})")
    if binary:
        ax.set(xlabel=f"Mean predicted P({classes[-1]})", ylabel="Observed fraction positive")
        ax.set_title("Calibration (reliability diagram)")
    else:
        ax.set(xlabel="Mean top-class probability", ylabel="Observed accuracy")
        ax.set_title("Calibration of the top-class probability")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)


def _plot_confusions(
    figure: Figure, y: np.ndarray, predictions: dict[str, np.ndarray], classes: list[str]
) -> None:
    axes = figure.subplots(1, len(predictions), squeeze=False)[0]
    for ax, (label, predicted) in zip(axes, predictions.items(), strict=True):
        matrix = confusion_matrix(y, predicted, labels=classes)
        accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else float("nan")
        image = ax.imshow(matrix, cmap="Blues")
        peak = matrix.max() if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if peak and count > peak / 2 else "black",
                fontsize=12,
            )
        ticks = np.arange(len(classes))
        ax.set_xticks(ticks, labels=classes, rotation=45 if len(classes) > 4 else 0)
        ax.set_yticks(ticks, labels=classes)
        ax.set(xlabel="Predicted class", ylabel="True class")
        ax.set_title(f"{label}\naccuracy {accuracy:.3f}, n={int(matrix.sum())}")
        figure.colorbar(image, ax=ax, shrink=0.8)
    figure.suptitle("Confusion matrices (same holdout rows)")


def render_plots(
    y_true: np.ndarray,
    probabilities: dict[str, np.ndarray],
    predictions: dict[str, np.ndarray],
    classes: list[str],
    out_dir: Path,
) -> dict[str, Path]:
    """Draw ROC, precision-recall, confusion and calibration PNGs comparing the models."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = [_label_text(c) for c in classes]
    if len(class_names) < 2:
        raise ValueError(f"need at least two classes to plot, got {classes}")
    y = _labels(y_true)
    scores = {label: _score_matrix(p, len(class_names)) for label, p in probabilities.items()}
    for label, matrix in scores.items():
        if len(matrix) != len(y):
            raise ValueError(f"{label}: {len(matrix)} probabilities for {len(y)} rows")
    preds = {label: _labels(p) for label, p in predictions.items()}
    for label, predicted in preds.items():
        if len(predicted) != len(y):
            raise ValueError(f"{label}: {len(predicted)} predictions for {len(y)} rows")

    paths: dict[str, Path] = {}
    for name, draw in (
        ("roc", _plot_roc),
        ("precision_recall", _plot_pr),
        ("calibration", _plot_calibration),
    ):
        figure = _new_figure()
        ax = figure.add_subplot()
        if scores:
            draw(ax, y, scores, class_names)
        else:
            _note(ax, "no probabilities available")
        paths[name] = _save(figure, out_dir / f"{name}.png")

    if preds:
        width = 1.5 + 4.6 * len(preds) + 0.4 * max(0, len(class_names) - 3)
        figure = _new_figure(width=width, height=4.6 + 0.3 * max(0, len(class_names) - 3))
        _plot_confusions(figure, y, preds, class_names)
    else:
        figure = _new_figure()
        _note(figure.add_subplot(), "no predictions available")
    paths["confusion"] = _save(figure, out_dir / "confusion.png")
    logger.info("rendered %d evaluation plots into %s", len(paths), out_dir)
    return {name: paths[name] for name in PLOT_NAMES}


# --- decision markdown ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _fmt_delta(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.4f}"


def _fmt_p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt_value(v)}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _version(value: str | None) -> str:
    return f"v{value}" if value else "none"


def _check_number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _checks_table(checks: Sequence[Check]) -> list[str]:
    """The checks the decision was derived from, one row each."""
    if not checks:
        return ["No checks were recorded (a record from before checks were stored)."]
    lines = ["| check | passed | value | limit |", "|---|---|---:|---:|"]
    for c in checks:
        name = f"{c.name.value} ({c.metric})" if c.metric else c.name.value
        passed = "skipped" if c.skipped else ("yes" if c.passed else "no")
        lines.append(
            f"| {_cell(name)} | {passed} | {_check_number(c.value)} | {_check_number(c.limit)} |"
        )
    return lines


def decision_markdown(record: DecisionRecord) -> str:
    """Render a decision record as a readable Markdown report."""
    lines = [
        f"# Decision: {record.decision.value}",
        "",
        f"- **Model:** {record.model_name}",
        f"- **Champion:** {_version(record.champion_version)}",
        f"- **Challenger:** {_version(record.challenger_version)}",
        f"- **Actor:** {record.actor.value}"
        + (f" (Dagster run `{record.dagster_run_id}`)" if record.dagster_run_id else ""),
        f"- **Time (UTC):** {record.time.isoformat(timespec='seconds')}",
        f"- **Status:** {record.status.value}",
        f"- **Record id:** `{record.id}`",
    ]
    if record.sample_size is not None:
        lines.append(f"- **Rows compared:** {record.sample_size}")
    if record.error:
        lines.append(f"- **Error:** {record.error}")

    lines += ["", "## Reasons", ""]
    lines += [f"- {reason}" for reason in record.reasons] or ["- (no reasons recorded)"]
    lines += ["", "## Checks", "", *_checks_table(record.checks)]

    lines += [
        "",
        "## Metrics",
        "",
        "| metric | champion | challenger | delta | 95% CI | p-value |",
        "|---|---:|---:|---:|---|---:|",
    ]
    if record.comparisons:
        for c in record.comparisons:
            ci = (
                f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
                if c.ci_low is not None and c.ci_high is not None
                else "—"
            )
            lines.append(
                f"| {_cell(c.metric)} | {_fmt(c.champion)} | {_fmt(c.challenger)} | "
                f"{_fmt_delta(c.delta)} | {ci} | {_fmt_p(c.p_value)} |"
            )
    else:
        names = list(dict.fromkeys([*record.challenger_metrics, *record.champion_metrics]))
        for name in names:
            champion = record.champion_metrics.get(name)
            challenger = record.challenger_metrics.get(name)
            delta = None if champion is None or challenger is None else challenger - champion
            lines.append(
                f"| {_cell(name)} | {_fmt(champion)} | {_fmt(challenger)} | "
                f"{_fmt_delta(delta)} | — | — |"
            )
        if not names:
            lines.append("| (no metrics recorded) | | | | | |")

    lines += ["", "## Significance test", ""]
    if record.test is not None:
        t = record.test
        lines += [
            f"- **Test:** {t.name}",
            f"- **Statistic:** {_fmt(t.statistic)}",
            f"- **p-value:** {_fmt_p(t.p_value)}",
            f"- **n:** {t.sample_size}",
        ]
        lines += [f"- {key}: {_fmt_value(value)}" for key, value in t.detail.items()]
    else:
        lines.append("No significance test was run for this decision.")

    lines += ["", "## Policy applied", ""]
    if record.policy:
        lines += ["| setting | value |", "|---|---|"]
        lines += [
            f"| {_cell(str(key))} | {_cell(_fmt_value(value))} |"
            for key, value in record.policy.items()
        ]
    else:
        lines.append("No policy values were recorded.")
    lines.append("")
    return "\n".join(lines)
