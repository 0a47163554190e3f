"""The asset graph materialised in process against a real SQLite MLflow under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from tests_support import lifecycle_of

from mlops_assets.lifecycle.states import STATE_TAG, Alias, Decision
from mlops_assets.lifecycle.training import read_run_text
from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings
from mlops_assets.validation import file_sha256

pytestmark = pytest.mark.slow


def _versions(settings) -> list:
    client = MlflowClient(settings.tracking_uri)
    try:
        return client.search_model_versions(f"name = '{settings.model_name}'")
    except Exception:
        return []


def _champion_states(settings) -> list[str]:
    return [mv.version for mv in _versions(settings) if mv.tags.get(STATE_TAG) == "champion"]


def test_bootstrap_then_a_recorded_decision(make_project, sample_csv) -> None:
    root = make_project()
    settings = load_settings(root / "config" / "config.yaml")
    baseline = sample_csv(root / "data" / "raw", samples=400, seed=1)

    first = run_cycle_for_file(settings, baseline, evaluate=True)
    assert first["success"], first.get("errors")
    deployed = first["assets"]["champion_deployment"]
    assert deployed["decision"] == Decision.BOOTSTRAP.value
    client = MlflowClient(settings.tracking_uri)
    champ = client.get_model_version_by_alias(settings.model_name, Alias.CHAMPION.value)
    # Lineage: the champion names the exact bytes it was trained on.
    assert champ.tags["data.sha256"] == file_sha256(baseline)
    assert champ.tags["data.files"] == baseline.name
    assert champ.tags[STATE_TAG] == "champion"
    assert champ.tags["dagster.run_id"] == first["run_id"]
    assert first["assets"]["raw_data"]["sha256"] == file_sha256(baseline)

    drift = sample_csv(root / "data" / "raw", samples=400, seed=2, drift=True)
    second = run_cycle_for_file(settings, drift, evaluate=True)
    assert second["success"], second.get("errors")
    decision = second["assets"]["champion_deployment"]["decision"]
    assert decision in {"KEEP_CHAMPION", "START_SHADOW", "PROMOTE"}
    records = lifecycle_of(settings).store.decisions(model_name=settings.model_name, limit=None)
    assert [r.decision.value for r in records] == [decision, "BOOTSTRAP"]
    latest = records[0]
    assert latest.reasons and all(isinstance(r, str) and r for r in latest.reasons)
    assert latest.champion_version == str(champ.version)
    assert latest.sample_size and latest.sample_size >= 30
    assert {c.metric for c in latest.comparisons} >= {"accuracy", "f1_score"}
    # Exactly one champion, whatever was decided.
    assert len(_champion_states(settings)) == 1
    report_dir = Path(second["assets"]["evaluation_report"]["report"])
    assert {p.name for p in report_dir.glob("*.png")} >= {"roc.png", "confusion.png"}

    # Re-running the same file is safe: no new version, no new decision.
    again = run_cycle_for_file(settings, drift, evaluate=True)
    assert again["success"], again.get("errors")
    assert again["assets"]["challenger_model"]["reused_existing_version"] is True
    assert len(_versions(settings)) == 2
    assert (
        len(lifecycle_of(settings).store.decisions(model_name=settings.model_name, limit=None)) == 2
    )


BAD_FILES = {
    "missing_target": lambda df: df.drop(columns=["target"]).to_csv(index=False).encode(),
    "wrong_dtype": lambda df: df.assign(age="forty").to_csv(index=False).encode(),
    "empty": lambda df: b"",
    "header_only": lambda df: (",".join(df.columns) + "\n").encode(),
    "non_utf8": lambda df: df.to_csv(index=False).encode() + b"\xff\xfe\xfa,\x81\n",
    "constant_target": lambda df: df.assign(target=1).to_csv(index=False).encode(),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_quarantined_and_champion_unchanged(champion_project, case) -> None:
    settings, baseline = champion_project
    df = pd.read_csv(baseline)
    bad = settings.raw_dir / f"bad_{case}.csv"
    bad.write_bytes(BAD_FILES[case](df))
    client = MlflowClient(settings.tracking_uri)
    before = client.get_model_version_by_alias(settings.model_name, "champion").version
    n_versions = len(_versions(settings))

    report = run_cycle_for_file(settings, bad, evaluate=True)

    assert not report["success"]
    assert report["checks"]["passes_schema"]["passed"] is False
    assert "challenger_model" not in report["assets"]
    assert not bad.exists(), "the bad file must leave data/raw"
    moved = settings.quarantine_dir / bad.name
    assert moved.exists(), "nothing is deleted: the file sits in quarantine"
    assert (
        Path(str(moved) + ".report.md").exists()
        or (settings.quarantine_dir / f"{bad.name}.report.md").exists()
    )
    assert len(_versions(settings)) == n_versions
    after = client.get_model_version_by_alias(settings.model_name, "champion").version
    assert after == before


def test_own_csv_with_other_target_and_inferred_features(make_project) -> None:
    import numpy as np

    root = make_project(
        config={"data": {"target_column": "churned", "features": {}}},
        ludwig={"input_features": None, "output_features": None},
    )
    rng = np.random.default_rng(0)
    n = 300
    x1 = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    flag = rng.choice(["yes", "no"], size=n)
    churned = ((x1 + (colour == "red") + rng.normal(scale=0.5, size=n)) > 0.5).astype(int)
    df = pd.DataFrame(
        {
            "x1": x1.round(4),
            "visits": rng.integers(0, 20, n),
            "colour": colour,
            "flag": flag,
            "churned": churned,
        }
    )
    path = root / "data" / "raw" / "mine.csv"
    df.to_csv(path, index=False)
    settings = load_settings(root / "config" / "config.yaml")

    report = run_cycle_for_file(settings, path, evaluate=False)

    assert report["success"], report.get("errors")
    version = report["assets"]["challenger_model"]["model_version"]
    client = MlflowClient(settings.tracking_uri)
    mv = client.get_model_version(settings.model_name, version)
    assert mv.tags[STATE_TAG] == "candidate"
    assert mv.tags["data.sha256"] == file_sha256(path)
    import json

    schema = json.loads(read_run_text(client, mv.run_id, "schema.json"))
    types = {f["name"]: f["type"] for f in schema["features"]}
    assert types == {"x1": "number", "visits": "number", "colour": "category", "flag": "binary"}
    assert schema["target"] == "churned"
    # The training sample kept for drift: the training split's inputs, no bookkeeping column.
    from io import StringIO

    reference = pd.read_csv(StringIO(read_run_text(client, mv.run_id, "drift_reference.csv")))
    assert {"x1", "visits", "colour", "flag"} <= set(reference.columns)
    assert "__row_id" not in reference.columns
    assert 0 < len(reference) < len(df)
