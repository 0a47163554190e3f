"""MLflow's backend store and the lifecycle store on a real PostgreSQL."""

from __future__ import annotations

import os
import uuid

import pytest
from mlflow import MlflowClient
from tests_support import lifecycle_of

from mlops_assets.lifecycle import manager
from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slow]

PG_MLFLOW = os.environ.get("MLFLOW_TEST_PG_URL")
PG_STORE = os.environ.get("MLOPS_TEST_PG_URL")


@pytest.mark.skipif(
    not (PG_MLFLOW and PG_STORE),
    reason="no PostgreSQL: set MLOPS_TEST_PG_URL and MLFLOW_TEST_PG_URL "
    "(scripts/start_postgres.sh prints them; .ci/run does this)",
)
def test_cycle_with_mlflow_and_lifecycle_store_on_postgres(
    make_project, sample_csv, monkeypatch
) -> None:
    # A fresh model and experiment name per run: the databases outlive the test.
    tag = uuid.uuid4().hex[:8]
    root = make_project(
        config={
            "mlflow": {
                "registered_model_name": f"pg-model-{tag}",
                "experiment_name": f"pg-exp-{tag}",
            }
        }
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", PG_MLFLOW)
    monkeypatch.setenv("MLOPS_LIFECYCLE_DB", PG_STORE)
    settings = load_settings(root / "config" / "config.yaml")
    csv = sample_csv(root / "data" / "raw", samples=300, seed=4)

    report = run_cycle_for_file(settings, csv, evaluate=True)

    assert report["success"], report.get("errors")
    client = MlflowClient(PG_MLFLOW)
    champ = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champ.tags["lifecycle.state"] == "champion"
    decisions = lifecycle_of(settings).store.decisions(
        version=champ.version, model_name=settings.model_name, limit=None
    )
    assert [d.decision.value for d in decisions] == ["BOOTSTRAP"]
    assert manager.status(lifecycle_of(settings))["champion"]["version"] == str(champ.version)
