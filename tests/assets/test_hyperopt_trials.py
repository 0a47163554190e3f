"""Hyperopt for real: Optuna picks among 3 Ludwig trainings, each a child run in MLflow."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from tests_support import lifecycle_of

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.hyperopt import config_hash
from mlops_assets.lifecycle.training import read_run_text
from mlops_assets.settings import load_settings

pytestmark = pytest.mark.slow

SPACE = {"trainer.learning_rate": [0.001, 0.02], "combiner.output_size": [8, 32]}


def test_a_challenger_is_the_best_of_three_trials(make_project, sample_csv) -> None:
    root = make_project(
        {"ludwig": {"hyperopt": {"enabled": True, "trials": 3, "metric": "loss", "space": SPACE}}}
    )
    settings = load_settings(root / "config" / "config.yaml")
    lc = lifecycle_of(settings)
    csv = sample_csv(settings.raw_dir, samples=300, seed=5)
    result, _ = manager.validate_file(lc, csv)

    outcome = manager.train(lc, result)

    client = MlflowClient(settings.tracking_uri)
    parent = client.get_run(outcome.run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.run_id}'",
    )
    assert len(children) == 3
    assert all(c.data.tags["mlops.kind"] == "hyperopt-trial" for c in children)
    scores = {c.info.run_name: c.data.metrics["validation.loss"] for c in children}
    best = min(scores, key=scores.get)
    best_run = next(c for c in children if c.info.run_name == best)
    assert parent.data.params["hyperopt.best_trial"] == best.removeprefix("trial-")
    assert parent.data.metrics["hyperopt.best_validation_loss"] == pytest.approx(scores[best])
    chosen = {
        k.removeprefix("hyperopt.best."): v
        for k, v in parent.data.params.items()
        if k.startswith("hyperopt.best.")
    }
    assert chosen == {k.removeprefix("hyperopt."): v for k, v in best_run.data.params.items()}

    # The logged config is the winner's, and its hash is in the version's lineage.
    logged = json.loads(read_run_text(client, outcome.run_id, "ludwig_config.json"))
    assert str(logged["trainer"]["learning_rate"]) == chosen["trainer.learning_rate"]
    assert str(logged["combiner"]["output_size"]) == chosen["combiner.output_size"]
    mv = client.get_model_version(settings.model_name, outcome.version)
    assert mv.tags["ludwig.chosen_config_hash"] == config_hash(logged)
    assert mv.tags["ludwig.config_hash"] == settings.ludwig_config_hash()
    # The holdout stayed out of the search: it is the same split as without hyperopt.
    assert outcome.holdout_rows == int(parent.data.params["data.holdout_rows"])

    # Same data, same config and search: reused, not searched again.
    assert manager.train(lc, result).reused
