"""Synthetic paired evaluations and decision scenarios shared by the policy and registry tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlops_assets.lifecycle import verdict
from mlops_assets.lifecycle.policy import (
    ModelEvaluation,
    check_probation,
    decide_offline,
    decide_shadow,
)
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.states import Actor
from mlops_assets.settings import ChampionChallengerPolicy

CLASSES = ["0", "1"]
LABELS = np.array(CLASSES)


def policy(**overrides: Any) -> ChampionChallengerPolicy:
    """The default policy with fewer bootstrap resamples (faster) and any overrides."""
    return ChampionChallengerPolicy(**{"bootstrap_resamples": 300, **overrides})


def pair(
    n: int = 400,
    seed: int = 0,
    champion_accuracy: float = 0.7,
    flips: int = 0,
    breaks: int = 0,
    versions: tuple[str, str] = ("1", "2"),
) -> tuple[ModelEvaluation, ModelEvaluation]:
    """Champion right on about `champion_accuracy` of rows; the challenger copies it, turns
    its first `flips` wrong answers right, and its first `breaks` right answers wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < champion_accuracy, y, 1 - y)
    z = a.copy()
    order = rng.permutation(n)
    wrong = order[a[order] != y[order]]
    right = order[a[order] == y[order]]
    z[wrong[:flips]] = y[wrong[:flips]]
    z[right[:breaks]] = 1 - y[right[:breaks]]

    def proba(pred: np.ndarray) -> np.ndarray:
        return np.clip(np.where(pred == 1, 0.75, 0.25) + rng.normal(0, 0.05, n), 0.01, 0.99)

    one, two = versions
    return (
        ModelEvaluation(version=one, y_true=LABELS[y], y_pred=LABELS[a], probabilities=proba(a)),
        ModelEvaluation(version=two, y_true=LABELS[y], y_pred=LABELS[z], probabilities=proba(z)),
    )


def offline(champion, challenger, pol, **kw: Any) -> DecisionRecord:
    """`decide_offline` with a test model name and actor."""
    return decide_offline(champion, challenger, pol, model_name="m", actor=Actor.CLI, **kw)


def shadow(champion, candidate, pol=None, **kw: Any) -> DecisionRecord:
    """`decide_shadow` with healthy operations unless `kw` says otherwise."""
    args: dict[str, Any] = {
        "extensions_so_far": 0,
        "champion_error_rate": 0.0,
        "shadow_error_rate": 0.0,
        "champion_p50_latency_ms": 10.0,
        "shadow_p50_latency_ms": 12.0,
        "model_name": "m",
        "actor": Actor.SENSOR,
        **kw,
    }
    return decide_shadow(champion, candidate, pol or policy(), **args)


def _single_class() -> tuple[ModelEvaluation, ModelEvaluation]:
    y = np.array(["1"] * 200)
    a = np.where(np.arange(200) % 3 == 0, "0", "1")
    z = np.where(np.arange(200) % 10 == 0, "0", "1")
    p = np.linspace(0.1, 0.9, 200)
    return (
        ModelEvaluation(version="1", y_true=y, y_pred=a, probabilities=p, classes=CLASSES),
        ModelEvaluation(version="2", y_true=y, y_pred=z, probabilities=p, classes=CLASSES),
    )


def _all_ones(n: int = 400) -> tuple[ModelEvaluation, ModelEvaluation]:
    champion, _ = pair(n=n)
    return champion, ModelEvaluation(version="2", y_true=champion.y_true, y_pred=np.full(n, "1"))


Scenario = Callable[[], Any]

# Every offline, shadow and probation path the policy has, each a zero-argument call.
SCENARIOS: dict[str, Scenario] = {
    "bootstrap": lambda: offline(None, pair(flips=60)[1], policy()),
    "bootstrap_below_floor": lambda: offline(None, pair(champion_accuracy=0.4)[1], policy()),
    "few_rows": lambda: offline(*pair(n=20, flips=5), policy()),
    "few_rows_no_champion": lambda: offline(None, pair(n=20, flips=5)[1], policy()),
    "start_shadow": lambda: offline(*pair(flips=60), policy()),
    "promote_zero_duration": lambda: offline(*pair(flips=60), policy(shadow_mode_duration=0)),
    "promote_margin": lambda: offline(*pair(flips=60), policy(direct_promotion_margin=0.1)),
    "margin_not_reached": lambda: offline(*pair(flips=60), policy(direct_promotion_margin=0.5)),
    "manual_shadow": lambda: offline(
        *pair(flips=60), policy(auto_promotion=False, direct_promotion_margin=0.1)
    ),
    "manual_keep": lambda: offline(
        *pair(flips=60), policy(auto_promotion=False, shadow_mode_duration="0s")
    ),
    "manual_but_failing": lambda: offline(
        *pair(flips=60), policy(auto_promotion=False, champion_threshold=0.5)
    ),
    "below_threshold": lambda: offline(*pair(flips=60), policy(champion_threshold=0.3)),
    "relative": lambda: offline(
        *pair(flips=20, seed=2),
        policy(primary_metric="accuracy", improvement="relative", champion_threshold=0.2),
    ),
    "mcnemar_not_significant": lambda: offline(
        *pair(n=40, flips=2), policy(primary_metric="accuracy", champion_threshold=0.01)
    ),
    "guard_rail": lambda: offline(*_all_ones(), policy(primary_metric="recall", metric_floors={})),
    "floors": lambda: offline(
        *pair(flips=60),
        policy(
            metric_floors={"accuracy": 0.95, "roc_auc": 0.5},
            evaluation_metrics=["f1_score", "roc_auc"],
        ),
    ),
    "log_loss_ceiling": lambda: offline(
        *pair(flips=80),
        policy(
            evaluation_metrics=["log_loss", "accuracy"],
            primary_metric="log_loss",
            champion_threshold=0.01,
            metric_floors={"log_loss": 0.1},
        ),
    ),
    "undefined_guard_rail": lambda: offline(
        *_single_class(),
        policy(
            evaluation_metrics=["accuracy", "roc_auc"],
            primary_metric="accuracy",
            metric_floors={"accuracy": 0.5, "roc_auc": 0.5},
        ),
    ),
    "undefined_primary": lambda: offline(
        *_single_class(),
        policy(evaluation_metrics=["accuracy", "roc_auc"], primary_metric="roc_auc"),
    ),
    "worse": lambda: offline(*pair(breaks=40), policy()),
    "twin": lambda: offline(pair()[0], pair()[0].model_copy(update={"version": "2"}), policy()),
    "too_few_resamples": lambda: offline(
        *pair(flips=60), policy(significance_alpha=0.001, bootstrap_resamples=500)
    ),
    "shadow_promote": lambda: shadow(*pair(n=300, flips=50)),
    "shadow_extend": lambda: shadow(*pair(n=50, flips=10), extensions_so_far=1),
    "shadow_exhausted": lambda: shadow(*pair(n=50, flips=10), extensions_so_far=2),
    "shadow_worse": lambda: shadow(*pair(n=300, breaks=40)),
    "shadow_error_rate": lambda: shadow(
        *pair(n=300, flips=50), champion_error_rate=0.01, shadow_error_rate=0.05
    ),
    "shadow_latency": lambda: shadow(
        *pair(n=300, flips=50),
        policy(max_latency_ratio=2.0),
        champion_p50_latency_ms=10.0,
        shadow_p50_latency_ms=40.0,
    ),
    "shadow_no_latency": lambda: shadow(
        *pair(n=300, flips=50), champion_p50_latency_ms=None, shadow_p50_latency_ms=None
    ),
    "shadow_manual": lambda: shadow(*pair(n=300, flips=50), policy(auto_promotion=False)),
    "probation_drop": lambda: check_probation(0.80, 0.70, 500, 0.0, policy()),
    "probation_within": lambda: check_probation(0.80, 0.77, 500, 0.0, policy()),
    "probation_few": lambda: check_probation(0.80, 0.30, 20, 0.0, policy()),
    "probation_errors": lambda: check_probation(0.80, 0.80, 20, 0.2, policy()),
    "probation_both": lambda: check_probation(0.80, 0.50, 500, 0.2, policy()),
    "probation_undefined": lambda: check_probation(float("nan"), 0.7, 500, 0.0, policy()),
    "probation_relative": lambda: check_probation(
        0.80, 0.70, 500, 0.0, policy(improvement="relative", rollback_threshold=0.1)
    ),
}


def reword_every_template(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Replace every reason template with a random sentence; return the new templates."""
    new = {key: f"Reworded {key} {secrets.token_hex(4)}." for key in verdict.TEMPLATES}
    for key, text in new.items():
        monkeypatch.setitem(verdict.TEMPLATES, key, text)
    return new
