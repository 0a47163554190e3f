"""The code location through Dagster's own command line, the way CI and operators use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests_support import project_env

from mlops_assets.settings import load_settings
from mlops_assets.validation import file_sha256

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(root: Path) -> dict[str, str]:
    return project_env(root)


def test_definitions_validate_with_every_asset(make_project) -> None:
    root = make_project()
    proc = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Validation successful" in proc.stderr + proc.stdout

    listing = subprocess.run(
        [str(BIN / "dagster"), "asset", "list", "-m", "mlops_assets.definitions"],
        cwd=REPO,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listing.returncode == 0, listing.stderr[-3000:]
    for key in (
        "raw_data",
        "validated_features",
        "training_dataset",
        "challenger_model",
        "evaluation_report",
        "champion_deployment",
    ):
        assert key in listing.stdout


def test_asset_materialize_cli_trains_and_registers(make_project, sample_csv) -> None:
    from dagster import DagsterInstance

    root = make_project()
    csv = sample_csv(root / "data" / "raw", samples=300, seed=11)
    env = _env(root)
    instance = DagsterInstance.from_config(env["DAGSTER_HOME"])
    instance.add_dynamic_partitions("raw_files", [csv.name])

    proc = subprocess.run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "mlops_assets.definitions",
            "--select",
            "raw_data,validated_features,training_dataset,challenger_model",
            "--partition",
            csv.name,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    settings = load_settings(root / "config" / "config.yaml")
    client = MlflowClient(f"sqlite:///{root / '.mlops' / 'mlflow.db'}")
    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == 1
    assert versions[0].tags["data.sha256"] == file_sha256(csv)
    assert versions[0].tags["lifecycle.state"] == "candidate"
    # The run is recorded in the persistent instance, so the UI shows it with its lineage.
    mats = instance.fetch_materializations(
        __import__("dagster").AssetKey("challenger_model"), limit=5
    ).records
    assert mats and mats[0].partition_key == csv.name
