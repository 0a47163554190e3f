"""Hyperopt: the search space, the validation score, and Optuna's choice (with a fake fit)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlops_assets.lifecycle.hyperopt import (
    HyperoptError,
    check_space,
    config_hash,
    search,
    validation_score,
    with_values,
)
from mlops_assets.settings import HyperoptConfig

CONFIG = {"trainer": {"learning_rate": 0.001, "epochs": 5}, "combiner": {"type": "concat"}}
SPACE = {"trainer.learning_rate": [0.0005, 0.001, 0.005], "combiner.output_size": [32, 64, 128]}


def result(losses: list[float], feature: str = "target", metric: str = "loss"):
    """A stand-in for Ludwig's train() result: only train_stats.validation is read."""
    return SimpleNamespace(train_stats=SimpleNamespace(validation={feature: {metric: losses}}))


def fake_fit(calls: list[dict]):
    """A fit whose validation loss is smallest at learning_rate 0.005 and output_size 64."""

    def fit(config: dict):
        calls.append(config)
        lr = config["trainer"]["learning_rate"]
        size = config["combiner"]["output_size"]
        loss = abs(lr - 0.005) * 100 + abs(size - 64) / 64
        return f"model-{lr}-{size}", result([loss + 1, loss])

    return fit


def test_with_values_sets_dotted_keys_on_a_copy():
    out = with_values(CONFIG, {"trainer.learning_rate": 0.1, "combiner.output_size": 8})
    assert out["trainer"] == {"learning_rate": 0.1, "epochs": 5}
    assert out["combiner"] == {"type": "concat", "output_size": 8}
    assert CONFIG["trainer"]["learning_rate"] == 0.001  # untouched


def test_a_key_through_a_value_is_refused():
    with pytest.raises(HyperoptError, match=r"combiner\.type\.x"):
        with_values(CONFIG, {"combiner.type.x": 1})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"output_features.x": [1]}, "only trainer"),
        ({"trainer.learning_rate": []}, "lists no values"),
    ],
)
def test_the_settings_refuse_an_unusable_space(space, message):
    with pytest.raises(ValueError, match=message):
        HyperoptConfig(space=space)


def test_enabled_needs_a_space():
    with pytest.raises(ValueError, match="empty space"):
        HyperoptConfig(enabled=True)
    with pytest.raises(HyperoptError, match="empty"):
        check_space(HyperoptConfig(), CONFIG)


def test_validation_score_is_the_best_epoch_and_names_a_missing_metric():
    assert validation_score(result([0.9, 0.4, 0.6]), "target", "loss") == 0.4
    assert validation_score(result([0.6, 0.8, 0.7], metric="accuracy"), "target", "accuracy") == 0.8
    assert validation_score(result([0.5, 0.3], feature="combined"), "target", "loss") == 0.3
    with pytest.raises(HyperoptError, match=r"roc_auc.*not a validation metric"):
        validation_score(result([0.5]), "target", "roc_auc")


def test_search_keeps_the_best_trial_and_reports_every_trial():
    calls: list[dict] = []
    seen: list[tuple] = []
    hp = HyperoptConfig(enabled=True, trials=6, space=SPACE)
    found = search(
        CONFIG, hp, target="target", seed=3, fit=fake_fit(calls), on_trial=lambda *a: seen.append(a)
    )
    assert len(calls) == len(found.trials) == len(seen) == 6
    best = min(found.trials, key=lambda t: t.score)
    assert found.best == best
    lr, size = best.values["trainer.learning_rate"], best.values["combiner.output_size"]
    assert found.model == f"model-{lr}-{size}"  # the winner's model, not the last one trained
    assert found.config == with_values(CONFIG, best.values)
    assert found.config_hash == config_hash(found.config) != config_hash(CONFIG)
    assert [s[0] for s in seen] == list(range(6))


def test_search_is_reproducible_with_its_seed_and_can_maximize():
    hp = HyperoptConfig(enabled=True, trials=5, space=SPACE)
    a = search(CONFIG, hp, target="target", seed=11, fit=fake_fit([]))
    b = search(CONFIG, hp, target="target", seed=11, fit=fake_fit([]))
    assert [t.values for t in a.trials] == [t.values for t in b.trials]
    up = HyperoptConfig(enabled=True, trials=5, space=SPACE, goal="maximize")
    worst = search(CONFIG, up, target="target", seed=11, fit=fake_fit([]))
    assert worst.best.score == max(t.score for t in worst.trials)
