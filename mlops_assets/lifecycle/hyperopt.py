"""Hyperparameter search for a challenger: Optuna choosing Ludwig configs on the local backend.

With `ludwig.hyperopt.enabled`, a challenger is the best of `trials` Ludwig trainings, each with
values drawn from `ludwig.hyperopt.space` (`"trainer.learning_rate": [0.001, 0.005]`: a dotted
key into the Ludwig config and the values to choose from) by Optuna's TPE sampler, seeded with
`ludwig.random_seed` so that the same data and config search the same trials. Every trial
trains on the training split and is scored on the validation split only; the holdout, which
the offline gate judges both models on, is never seen by the search.

Each trial is an MLflow child run (`mlops.kind=hyperopt-trial`) with its values and its
validation score; the winner's model is kept, its config is the run's `ludwig_config.json`,
and its hash is the version's `ludwig.chosen_config_hash` tag. Optuna runs in process with an
in-memory study (no Ray, no storage), which STACK.md measured as the lighter of the two paths.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlops_assets.settings import HyperoptConfig, Settings

if TYPE_CHECKING:
    from mlops_assets.lifecycle.training import Progress, Splits

log = logging.getLogger(__name__)

# What a training returns: the trained LudwigModel and Ludwig's train() result.
Fit = Callable[[dict[str, Any]], tuple[Any, Any]]
# Called once per trial inside the search: (number, values, validation score, seconds).
TrialLogger = Callable[[int, dict[str, Any], float, float], None]


_LOWER_IS_BETTER = frozenset(
    {"loss", "mean_squared_error", "mean_absolute_error", "root_mean_squared_error"}
)


class HyperoptError(ValueError):
    """The search cannot run as configured (names the key)."""


class Trial(BaseModel):
    """One finished trial: the values it tried and its validation score."""

    model_config = ConfigDict(frozen=True)

    number: int
    values: dict[str, Any]
    score: float
    seconds: float


class SearchResult(BaseModel):
    """The winning trial, its config and model, and every trial."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    best: Trial
    config: dict[str, Any]
    trials: list[Trial]
    model: Any = None
    result: Any = None  # Ludwig's train() result of the winner

    @property
    def config_hash(self) -> str:
        """sha256 of the chosen Ludwig config (stable key order)."""
        return config_hash(self.config)


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a Ludwig config dict with sorted keys."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def with_values(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `config` with each dotted key (`trainer.learning_rate`) set to its value."""
    out = copy.deepcopy(config)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise HyperoptError(
                    f"ludwig.hyperopt.space: {dotted!r} goes through {part!r}, which is not a "
                    "section of the Ludwig config"
                )
            node = child
        node[leaf] = value
    return out


def check_space(hp: HyperoptConfig, config: dict[str, Any]) -> None:
    """Refuse a space the search cannot use, naming the key."""
    if not hp.space:
        raise HyperoptError("ludwig.hyperopt.space is empty: name at least one key to search")
    for dotted, values in hp.space.items():
        if not values:
            raise HyperoptError(f"ludwig.hyperopt.space.{dotted} lists no values")
        top = dotted.split(".", 1)[0]
        if top not in ("trainer", "combiner", "preprocessing", "defaults"):
            raise HyperoptError(
                f"ludwig.hyperopt.space.{dotted}: only trainer.*, combiner.*, preprocessing.* "
                "and defaults.* can be searched"
            )
    with_values(config, {k: v[0] for k, v in hp.space.items()})


def validation_score(train_result: Any, target: str, metric: str) -> float:
    """The best validation value of `metric` over the epochs (of `target`, else `combined`)."""
    stats = getattr(train_result.train_stats, "validation", None) or {}
    for feature in (target, "combined"):
        values = [v for v in (stats.get(feature) or {}).get(metric) or [] if _finite(v)]
        if values:
            return _best(values, metric)
    known = sorted({m for feat in stats.values() for m in (feat or {})})
    raise HyperoptError(
        f"ludwig.hyperopt.metric {metric!r} is not a validation metric of {target!r}; "
        f"Ludwig reported {known}"
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _best(values: list[float], metric: str) -> float:
    # Loss-like metrics improve downwards; the search's direction is `goal`, this picks the
    # epoch Ludwig itself would keep (its early stopping watches the same metric).
    lower = metric in _LOWER_IS_BETTER
    return float(min(values) if lower else max(values))


def search(
    config: dict[str, Any],
    hp: HyperoptConfig,
    *,
    target: str,
    seed: int,
    fit: Fit,
    on_trial: TrialLogger | None = None,
) -> SearchResult:
    """Run `hp.trials` trainings chosen by Optuna's TPE sampler; keep the best one's model."""
    import time

    import optuna

    check_space(hp, config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction=f"{hp.goal[:3]}imize", sampler=sampler)
    kept: dict[str, Any] = {}
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        values = {k: trial.suggest_categorical(k, list(v)) for k, v in hp.space.items()}
        started = time.monotonic()
        model, result = fit(with_values(config, values))
        score = validation_score(result, target, hp.metric)
        done = Trial(
            number=trial.number, values=values, score=score, seconds=time.monotonic() - started
        )
        trials.append(done)
        better = "best" not in kept or (
            score < kept["best"].score if hp.goal == "minimize" else score > kept["best"].score
        )
        if better:  # only the best model is held in memory
            kept.update(best=done, model=model, result=result)
        log.info("hyperopt trial %d: %s -> %s %.5f", trial.number, values, hp.metric, score)
        if on_trial is not None:
            on_trial(done.number, values, score, done.seconds)
        return score

    study.optimize(objective, n_trials=hp.trials)
    best: Trial = kept["best"]
    return SearchResult(
        best=best,
        config=with_values(config, best.values),
        trials=trials,
        model=kept["model"],
        result=kept["result"],
    )


def fit_or_search(
    settings: Settings,
    config: dict[str, Any],
    splits: Splits,
    fit: Callable[[dict[str, Any]], tuple[Any, Any]],
    experiment_id: str,
    say: Progress,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train once, or, with `ludwig.hyperopt.enabled`, keep the best of a search's trials.

    Returns the model, Ludwig's train() result and the config it was trained with. Each trial
    is a child run of the active (challenger) run.
    """
    import mlflow

    hp = settings.config.ludwig.hyperopt
    if not hp.enabled:
        model, result = fit(config)
        return model, result, config
    if not len(splits.validation):
        raise HyperoptError(
            "ludwig.hyperopt needs a validation split to score trials on (data.split.validation "
            "is 0, or too few rows): the holdout is never used for the search"
        )
    say(f"hyperopt: {hp.trials} trials over {', '.join(hp.space)} ({hp.goal} {hp.metric})")

    def log_trial(number: int, values: dict[str, Any], score: float, seconds: float) -> None:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"trial-{number}",
            nested=True,
            tags={"mlops.kind": "hyperopt-trial"},
        ):
            mlflow.log_params({f"hyperopt.{k}": str(v) for k, v in values.items()})
            mlflow.log_metrics({f"validation.{hp.metric}": score, "trial.seconds": seconds})
        say(f"hyperopt: trial {number + 1}/{hp.trials} {values} -> {hp.metric} {score:.5f}")

    target = settings.config.data.target_column
    seed = settings.config.ludwig.random_seed
    found = search(config, hp, target=target, seed=seed, fit=fit, on_trial=log_trial)
    mlflow.log_params(
        {
            "hyperopt.trials": str(hp.trials),
            "hyperopt.metric": hp.metric,
            "hyperopt.best_trial": str(found.best.number),
            **{f"hyperopt.best.{k}": str(v) for k, v in found.best.values.items()},
        }
    )
    mlflow.log_metric(f"hyperopt.best_validation_{hp.metric}", found.best.score)
    say(f"hyperopt: trial {found.best.number + 1} wins with {hp.metric} {found.best.score:.5f}")
    return found.model, found.result, found.config


def chosen_config_hash(config: dict[str, Any]) -> str:
    """sha256 of the Ludwig config a version was trained with (stable key order)."""
    return config_hash(config)
