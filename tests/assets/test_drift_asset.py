"""The `feature_drift` asset and its `drift_within_limits` check, against a real champion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from tests_support import lifecycle_of

from mlops_assets.cli import main
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.states import Alias
from mlops_assets.pipeline import dagster_instance, run_cycle_for_file
from mlops_assets.validation import file_sha256

pytestmark = pytest.mark.slow

# The covariate drift of `mlops generate-data --generate-drift` (mlops_assets.datagen.DRIFT).
GENERATED_DRIFT = {"monthly_charges", "days_since_last_login", "contract"}
DRIFT_SELECTION = ["raw_data", "validated_features", "feature_drift"]


def materialize_drift(settings, path: Path) -> dg.ExecuteInProcessResult:
    """Ingest, validate and compute drift for one raw file (no training), on the instance."""
    from mlops_assets.definitions import build_definitions
    from mlops_assets.partitions import raw_files

    instance = dagster_instance(settings)
    if not instance.has_dynamic_partition(raw_files.name, path.name):
        instance.add_dynamic_partitions(raw_files.name, [path.name])
    defs = build_definitions(settings.config_path)
    return dg.materialize(
        assets=list(defs.assets or []),
        selection=DRIFT_SELECTION,
        partition_key=path.name,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )


def drift_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (mat,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey("feature_drift")
    ]
    return {k: v.value for k, v in mat.metadata.items()}


def drift_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "drift_within_limits"
    ]
    return evaluation


def champion(settings) -> str:
    client = MlflowClient(settings.tracking_uri)
    return str(client.get_model_version_by_alias(settings.model_name, Alias.CHAMPION).version)


def test_drift_is_beside_training_never_upstream_of_it() -> None:
    from mlops_assets.definitions import defs
    from mlops_assets.jobs import CYCLE_ASSETS

    graph = defs.resolve_asset_graph()
    upstream = dg.AssetSelection.assets("champion_deployment").upstream().resolve(graph)
    assert dg.AssetKey("feature_drift") not in upstream
    assert dg.AssetKey("validated_features") in graph.get(dg.AssetKey("feature_drift")).parent_keys
    assert "feature_drift" in CYCLE_ASSETS and CYCLE_ASSETS[:4] == [
        "raw_data",
        "validated_features",
        "training_dataset",
        "challenger_model",
    ]
    spec = defs.resolve_assets_def("feature_drift").check_specs_by_output_name
    (check,) = spec.values()
    assert check.name == "drift_within_limits" and not check.blocking


def new_raw_file(settings, sample_csv, tmp_path: Path, name: str, **kw) -> Path:
    """Generate a file elsewhere, then drop it into data/raw/ (the generator writes
    `baseline_full.csv`, which would overwrite the champion's training file)."""
    path = sample_csv(tmp_path, samples=400, name=name, **kw)
    return Path(shutil.move(path, settings.raw_dir / name))


def test_baseline_like_file_does_not_drift(champion_project, sample_csv, tmp_path) -> None:
    settings, baseline = champion_project
    fresh = new_raw_file(settings, sample_csv, tmp_path, "fresh_baseline.csv", seed=9)

    result = materialize_drift(settings, fresh)

    assert result.success
    meta = drift_metadata(result)
    assert meta["computed"] is True
    assert meta["num_drifted"] == 0 and meta["drifted_features"] == "none"
    assert meta["reference_version"] == champion(settings)
    assert meta["reference_source"] == "training files"
    assert meta["reference_files"] == baseline.name
    assert meta["data_sha256"] == file_sha256(fresh)
    assert (meta["n_reference"], meta["n_current"]) == (300, 400)
    assert "| feature | method |" in meta["results"]
    assert drift_check(result).passed
    rows = lifecycle_of(settings).store.drift_results(
        settings.model_name, data_sha256=file_sha256(fresh)
    )
    assert len(rows) == meta["stored_rows"] > 0 and not any(r.drifted for r in rows)
    assert {r.dagster_run_id for r in rows} == {result.run_id}


def test_drifted_file_warns_names_the_features_and_blocks_nothing(
    champion_project, sample_csv, tmp_path
) -> None:
    settings, _ = champion_project
    drift = new_raw_file(settings, sample_csv, tmp_path, "drift_full.csv", seed=2, drift=True)
    store = lifecycle_of(settings).store

    result = materialize_drift(settings, drift)

    # The check fails as a warning; the run still succeeds.
    assert result.success
    check = drift_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    named = set(check.metadata["drifted_features"].value.split(", "))
    assert named >= GENERATED_DRIFT
    meta = drift_metadata(result)
    assert set(meta["drifted_features"].split(", ")) == named
    assert meta["num_drifted"] == len(named)
    assert meta["psi.monthly_charges"] > 0.2
    sha = file_sha256(drift)
    rows = store.drift_results(settings.model_name, data_sha256=sha)
    assert {r.feature for r in rows if r.drifted} == named
    assert {r.reference_version for r in rows} == {champion(settings)}

    # Materialising again replaces the computation instead of adding to it.
    again = materialize_drift(settings, drift)
    assert again.success
    rows_again = store.drift_results(settings.model_name, data_sha256=sha)
    assert len(rows_again) == len(rows)
    assert {r.dagster_run_id for r in rows_again} == {again.run_id}

    # `mlops status` shows the latest drift.
    status = manager.status(lifecycle_of(settings))
    assert set(status["drift"]["drifted_features"]) == named
    assert status["drift"]["data_sha256"] == sha
    assert status["drift"]["reference_version"] == champion(settings)
    cli = CliRunner()
    table = cli.invoke(main, ["--config", str(settings.config_path), "status"])
    assert table.exit_code == 0, table.output
    drift_part = table.output[table.output.index("drift: data") :]
    assert f"{len(named)} feature(s) drifted" in drift_part
    assert all(f in drift_part for f in GENERATED_DRIFT)
    as_json = cli.invoke(main, ["--config", str(settings.config_path), "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    parsed = json.loads(as_json.output)["drift"]
    assert set(parsed["drifted_features"]) == named
    assert {(r["feature"], r["method"]) for r in parsed["results"]} >= {
        ("monthly_charges", "psi"),
        ("monthly_charges", "ks"),
        ("contract", "chi_square"),
    }


def test_the_cycle_records_drift_against_the_champion_before_its_decision(
    champion_project, sample_csv, tmp_path
) -> None:
    settings, _ = champion_project
    before = champion(settings)
    drift = new_raw_file(settings, sample_csv, tmp_path, "drift_cycle.csv", seed=3, drift=True)

    report = run_cycle_for_file(settings, drift, evaluate=True)

    assert report["success"], report.get("errors")
    assert report["checks"]["drift_within_limits"]["passed"] is False
    drifted = report["assets"]["feature_drift"]
    assert drifted["reference_version"] == before
    assert set(drifted["drifted_features"].split(", ")) >= GENERATED_DRIFT
    # Training and the decision went ahead regardless of the drift warning.
    assert report["assets"]["challenger_model"]["model_version"] != before
    assert report["assets"]["champion_deployment"]["decision"] in {
        "KEEP_CHAMPION",
        "START_SHADOW",
        "PROMOTE",
    }
    rows = lifecycle_of(settings).store.drift_results(
        settings.model_name, data_sha256=file_sha256(drift)
    )
    assert rows and {r.reference_version for r in rows} == {before}
