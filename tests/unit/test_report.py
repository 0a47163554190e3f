"""Evaluation report rendering: comparison PNGs and the decision Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops_assets.lifecycle.records import (
    DecisionRecord,
    MetricComparison,
    SignificanceTest,
)
from mlops_assets.lifecycle.report import PLOT_NAMES, decision_markdown, render_plots
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.verdict import CheckName, check

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_pngs(paths: dict[str, Path], out_dir: Path) -> None:
    assert set(paths) == set(PLOT_NAMES)
    for name, path in paths.items():
        assert path.parent == out_dir, name
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 5000, name  # a drawn figure, not an empty canvas


@pytest.fixture
def binary_holdout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' P(positive) on the same 300 rows."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    weak = np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)
    strong = np.clip(0.55 * y + 0.45 * rng.random(300), 0, 1)
    return y, weak, strong


def test_binary_plots_for_two_models(
    tmp_path: Path, binary_holdout: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    y, weak, strong = binary_holdout
    paths = render_plots(
        y,
        # 1-D P(positive) for one model, an [N, 2] matrix for the other.
        {"champion v3": weak, "challenger v4": np.column_stack([1 - strong, strong])},
        {"champion v3": (weak > 0.5).astype(int), "challenger v4": (strong > 0.5).astype(int)},
        ["0", "1"],
        tmp_path,
    )
    _assert_pngs(paths, tmp_path)


def test_single_model_bootstrap(
    tmp_path: Path, binary_holdout: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    y, _, strong = binary_holdout
    labels = np.where(y == 1, "True", "False")
    predicted = np.where(strong > 0.5, "True", "False")
    paths = render_plots(
        labels,
        {"challenger v1": strong},
        {"challenger v1": predicted},
        ["False", "True"],
        tmp_path / "out",
    )
    _assert_pngs(paths, tmp_path / "out")


def test_boolean_labels_match_text_classes(tmp_path: Path) -> None:
    y = np.array([True, False] * 50)
    probs = np.where(y, 0.8, 0.3)
    paths = render_plots(y, {"m": probs}, {"m": probs > 0.5}, ["False", "True"], tmp_path)
    _assert_pngs(paths, tmp_path)


def test_multiclass_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    classes = ["bronze", "silver", "gold"]
    y = rng.choice(classes, 240)
    probs = rng.dirichlet([1, 1, 1], 240)
    probs[np.arange(240), [classes.index(v) for v in y]] += 0.8
    probs /= probs.sum(axis=1, keepdims=True)
    predicted = np.array(classes)[probs.argmax(axis=1)]
    paths = render_plots(
        y,
        {"champion v1": rng.dirichlet([1, 1, 1], 240), "challenger v2": probs},
        {"champion v1": rng.choice(classes, 240), "challenger v2": predicted},
        classes,
        tmp_path,
    )
    _assert_pngs(paths, tmp_path)


def test_single_class_holdout_does_not_crash(tmp_path: Path) -> None:
    y = np.ones(40, dtype=int)
    probs = np.linspace(0.1, 0.9, 40)
    paths = render_plots(y, {"m": probs}, {"m": (probs > 0.5).astype(int)}, [0, 1], tmp_path)
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths.values())


def test_mismatched_lengths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows"):
        render_plots(np.zeros(10), {"m": np.zeros(9)}, {}, ["0", "1"], tmp_path)


def _record() -> DecisionRecord:
    return DecisionRecord(
        decision=Decision.START_SHADOW,
        actor=Actor.SENSOR,
        model_name="churn-classifier",
        dagster_run_id="run-123",
        champion_version="3",
        challenger_version="4",
        champion_metrics={"accuracy": 0.61, "f1_score": 0.48},
        challenger_metrics={"accuracy": 0.74, "f1_score": 0.63},
        comparisons=[
            MetricComparison(
                metric="f1_score",
                champion=0.48,
                challenger=0.63,
                delta=0.15,
                ci_low=0.11,
                ci_high=0.19,
                p_value=0.00001,
                test="paired_bootstrap",
            ),
            MetricComparison(
                metric="accuracy",
                champion=0.61,
                challenger=0.74,
                delta=0.13,
                ci_low=0.09,
                ci_high=0.17,
                p_value=0.0021,
            ),
        ],
        test=SignificanceTest(
            name="mcnemar_exact",
            statistic=12.0,
            p_value=0.0021,
            sample_size=400,
            detail={"b": 12, "c": 64},
        ),
        sample_size=400,
        policy={
            "primary_metric": "f1_score",
            "champion_threshold": 0.05,
            "significance_alpha": 0.05,
            "evaluation_metrics": ["accuracy", "f1_score"],
        },
        reasons=[
            "f1_score improved by 0.150 (threshold 0.05).",
            "The improvement is significant (p=0.0021 < 0.05).",
        ],
    )


def test_decision_markdown_has_every_section() -> None:
    text = decision_markdown(_record())
    assert text.startswith("# Decision: START_SHADOW")
    assert "sensor" in text and "run-123" in text
    assert "v3" in text and "v4" in text
    assert "| metric | champion | challenger | delta | 95% CI | p-value |" in text
    assert "| f1_score | 0.4800 | 0.6300 | +0.1500 | [+0.1100, +0.1900] | < 0.0001 |" in text
    assert "| accuracy | 0.6100 | 0.7400 | +0.1300 | [+0.0900, +0.1700] | 0.0021 |" in text
    assert "mcnemar_exact" in text and "**n:** 400" in text
    assert "| champion_threshold | 0.05 |" in text
    assert "| evaluation_metrics | accuracy, f1_score |" in text
    assert "- f1_score improved by 0.150 (threshold 0.05)." in text
    assert "- The improvement is significant (p=0.0021 < 0.05)." in text


def test_decision_markdown_bootstrap_without_champion() -> None:
    record = DecisionRecord(
        decision=Decision.BOOTSTRAP,
        actor=Actor.CLI,
        model_name="churn-classifier",
        challenger_version="1",
        challenger_metrics={"accuracy": 0.79, "f1_score": 0.66},
        reasons=["No champion yet: the first model becomes champion."],
    )
    text = decision_markdown(record)
    assert "# Decision: BOOTSTRAP" in text
    assert "**Champion:** none" in text
    assert "| accuracy | — | 0.7900 | — | — | — |" in text
    assert "No significance test" in text
    assert "- No champion yet: the first model becomes champion." in text


def test_decision_markdown_has_a_checks_table() -> None:
    checks = [
        check(CheckName.MIN_HOLDOUT_ROWS, True, value=400, limit=30),
        check(CheckName.THRESHOLD, True, value=0.15, limit=0.05, metric="f1_score"),
        check(CheckName.GUARD_RAIL, True, limit=0.02, metric="roc_auc", skipped=True),
        check(CheckName.METRIC_FLOOR, False, value=0.41, limit=0.5, metric="accuracy"),
        check(CheckName.AUTO_PROMOTION, True),
    ]
    text = decision_markdown(_record().model_copy(update={"checks": checks}))
    assert "## Checks" in text
    assert "| check | passed | value | limit |" in text
    assert "| min_holdout_rows | yes | 400 | 30 |" in text
    assert "| champion_threshold (f1_score) | yes | 0.15 | 0.05 |" in text
    assert "| max_metric_degradation (roc_auc) | skipped | — | 0.02 |" in text
    assert "| metric_floors (accuracy) | no | 0.41 | 0.5 |" in text
    assert "| auto_promotion | yes | — | — |" in text
    # A record stored before checks existed says so instead of showing an empty table.
    assert "No checks were recorded" in decision_markdown(_record())
