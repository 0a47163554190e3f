"""Drift checks: quiet on one distribution, loud on a shifted one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from tests_support import lifecycle_of

from mlops_assets.lifecycle.drift import (
    PSI_THRESHOLD,
    chi_square,
    feature_drift,
    ks_test,
    psi,
)
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema

SCHEMA = InputSchema(
    target="target",
    classes=["0", "1"],
    features=[
        FeatureSpec(name="age", type="number"),
        FeatureSpec(name="monthly_charges", type="number"),
        FeatureSpec(
            name="contract", type="category", categories=["month-to-month", "one-year", "two-year"]
        ),
        FeatureSpec(name="paperless", type="binary"),
    ],
)


def frame(n: int, seed: int, shift: float = 0.0, contract_p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(45 + 10 * shift, 12, n),
            "monthly_charges": rng.gamma(4, 15, n),
            "contract": rng.choice(["month-to-month", "one-year", "two-year"], n, p=contract_p),
            "paperless": rng.random(n) < 0.6,
        }
    )


def test_psi_matches_a_hand_computation() -> None:
    expected = np.arange(100, dtype=float)
    actual = np.concatenate([np.arange(50, dtype=float), np.full(50, 99.0)])
    # Deciles of 0..99: each reference bin holds 10%; `actual` puts 10% in each of the
    # first five bins and 50% in the last.
    p = np.full(10, 0.1)
    q = np.array([0.1] * 5 + [0.0] * 4 + [0.5])
    p, q = p + 1e-4, q + 1e-4
    p, q = p / p.sum(), q / q.sum()
    assert psi(expected, actual) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


def test_psi_small_on_same_distribution_large_on_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    assert psi(ref, rng.normal(0, 1, 5000)) < 0.02
    assert psi(ref, rng.normal(1, 1, 5000)) > PSI_THRESHOLD
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(psi([], ref))
    # A constant reference still gives finite bins.
    assert psi(np.ones(100), np.ones(100)) == pytest.approx(0.0, abs=1e-12)
    assert psi(np.ones(100), np.full(100, 2.0)) > PSI_THRESHOLD


def test_ks_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 300)
    ref = stats.ks_2samp(a, b)
    assert ks_test(a, b) == pytest.approx((ref.statistic, ref.pvalue))


def test_chi_square_with_values_counts_and_unseen_categories() -> None:
    rng = np.random.default_rng(2)
    cats = ["a", "b", "c"]
    ref = rng.choice(cats, 2000, p=[0.5, 0.3, 0.2])
    same = rng.choice(cats, 2000, p=[0.5, 0.3, 0.2])
    moved = rng.choice(cats, 2000, p=[0.2, 0.3, 0.5])
    assert chi_square(ref, same)[1] > 0.01
    assert chi_square(ref, moved)[1] < 1e-10
    counts = {"a": 500, "b": 300, "c": 200}
    stat, p = chi_square(counts, {"a": 50, "b": 30, "c": 20})
    assert stat == pytest.approx(0.0) and p == pytest.approx(1.0)
    # A category never seen in the reference is part of the table.
    stat, p = chi_square(counts, {"a": 50, "b": 30, "c": 20, "d": 40})
    table = np.array([[500, 300, 200, 0], [50, 30, 20, 40]])
    expected = stats.chi2_contingency(table, correction=False)
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue))
    assert chi_square(["a"] * 10, ["a"] * 5) == (0.0, 1.0)


def test_feature_drift_quiet_on_the_same_distribution() -> None:
    results = feature_drift(frame(2000, 0), frame(2000, 1), SCHEMA)
    assert {(r.feature, r.method) for r in results} == {
        ("age", "psi"),
        ("age", "ks"),
        ("monthly_charges", "psi"),
        ("monthly_charges", "ks"),
        ("contract", "chi_square"),
        ("paperless", "chi_square"),
    }
    assert not any(r.drifted for r in results), [r for r in results if r.drifted]


def test_feature_drift_flags_shifted_features_only() -> None:
    current = frame(2000, 1, shift=1.0, contract_p=(0.2, 0.3, 0.5))
    results = feature_drift(frame(2000, 0), current, SCHEMA)
    drifted = {r.feature for r in results if r.drifted}
    assert drifted == {"age", "contract"}
    age_psi = next(r for r in results if r.feature == "age" and r.method == "psi")
    assert age_psi.statistic > PSI_THRESHOLD and age_psi.p_value is None


def test_feature_drift_skips_missing_and_tiny_columns(caplog: pytest.LogCaptureFixture) -> None:
    current = frame(200, 1).drop(columns=["monthly_charges"])
    current.loc[3:, "age"] = np.nan
    results = feature_drift(frame(200, 0), current, SCHEMA)
    assert "monthly_charges" not in {r.feature for r in results}
    assert "monthly_charges is missing" in caplog.text
    age = [r for r in results if r.feature == "age"]
    assert all(not r.drifted and math.isnan(r.statistic) for r in age)


# --- drift against the champion (a tiny real MLflow registry, no training) -----------------

GENERATED_DRIFT = {"monthly_charges", "days_since_last_login", "contract"}  # datagen.DRIFT


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite database for the module (creating its schema takes seconds)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return uri


@pytest.fixture
def project(make_project, mlflow_uri: str):
    """Settings of a fresh project with its own registered model in the shared MLflow."""
    import uuid

    from mlops_assets.settings import load_settings

    name = f"churn-{uuid.uuid4().hex[:8]}"
    root = make_project({"mlflow": {"tracking_uri": mlflow_uri, "registered_model_name": name}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    return settings


def register_champion(
    settings, train_file, *, schema: bool = True, holdout: bool = True, reference: bool = False
) -> str:
    """Register a version the way training does (tags, schema.json, holdout.csv) and make it
    champion, without training: drift only reads its lineage and artifacts."""
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.training import resolve_ludwig_config, split_frame
    from mlops_assets.validation import file_sha256

    client = MlflowClient(settings.tracking_uri)
    name = settings.model_name
    frame = pd.read_csv(train_file)
    _, input_schema = resolve_ludwig_config(settings, frame)
    exp = client.get_experiment_by_name(name) or client.get_experiment(
        client.create_experiment(name, artifact_location=(settings.home / "art").as_uri())
    )
    run = client.create_run(exp.experiment_id)
    src = settings.home / "src" / run.info.run_id
    src.mkdir(parents=True)
    if schema:
        (src / "schema.json").write_text(input_schema.to_json())
        client.log_artifact(run.info.run_id, str(src / "schema.json"))
    split = split_frame(frame, settings.config.data.split, "target")
    if holdout:
        split.holdout.to_csv(src / "holdout.csv", index=False)
        client.log_artifact(run.info.run_id, str(src / "holdout.csv"))
    if reference:
        split.train.drop(columns=["__row_id"]).to_csv(src / "drift_reference.csv", index=False)
        client.log_artifact(run.info.run_id, str(src / "drift_reference.csv"))
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(
        name,
        f"{run.info.artifact_uri}/model",
        run.info.run_id,
        tags={"data.sha256": file_sha256(train_file), "data.files": Path(train_file).name},
    )
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(mv.version)


def current(drift: bool, seed: int, samples: int = 600) -> pd.DataFrame:
    """Generated churn-like rows: the current data, baseline or drifted."""
    from mlops_assets.datagen import generate_frame

    return generate_frame(samples, seed=seed, drift=drift)


@pytest.mark.slow
def test_no_champion_means_no_drift_computed(project) -> None:
    from mlops_assets.lifecycle.drift import drift_against_champion

    report = drift_against_champion(lifecycle_of(project), current(False, 1), "abc")
    assert not report.computed
    assert report.reference_version is None and report.results == []
    assert report.drifted_features == [] and report.n_current == 600
    assert "No champion" in report.note


@pytest.mark.slow
def test_drift_against_the_champions_training_files(project, sample_csv) -> None:
    from mlops_assets.lifecycle.drift import drift_against_champion

    train = sample_csv(project.raw_dir, samples=600, seed=5)
    version = register_champion(project, train)

    drifted = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert drifted.computed and drifted.reference_version == version
    assert drifted.reference_source == "training files"
    assert drifted.reference_files == [train.name]
    assert (drifted.n_reference, drifted.n_current) == (600, 600)
    assert set(drifted.drifted_features) >= GENERATED_DRIFT
    assert set(drifted.model_dump()["drifted_features"]) == set(drifted.drifted_features)
    assert {r.method for r in drifted.results} == {"psi", "ks", "chi_square"}
    assert "features drifted" in drifted.note and "monthly_charges" in drifted.note

    quiet = drift_against_champion(lifecycle_of(project), current(False, 12), "b" * 64)
    assert quiet.computed and quiet.drifted_features == [], quiet.note


@pytest.mark.slow
def test_reference_found_under_another_name_then_from_the_holdout(project, sample_csv) -> None:
    from mlops_assets.lifecycle.drift import drift_against_champion

    train = sample_csv(project.raw_dir, samples=600, seed=5)
    register_champion(project, train)
    renamed = train.with_name("renamed.csv")
    train.rename(renamed)
    report = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert report.reference_source == "training files" and report.n_reference == 600

    renamed.unlink()
    report = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert report.computed and report.reference_source == "holdout artifact"
    assert 0 < report.n_reference < 600
    assert "__row_id" not in {r.feature for r in report.results}
    assert {"monthly_charges", "contract"} <= set(report.drifted_features)


@pytest.mark.slow
def test_the_runs_training_sample_stands_in_before_the_holdout(project, sample_csv) -> None:
    from mlops_assets.lifecycle.drift import drift_against_champion

    train = sample_csv(project.raw_dir, samples=600, seed=5)
    register_champion(project, train, reference=True)
    train.unlink()
    report = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert report.computed and report.reference_source == "training sample artifact"
    # The training split: most of the 600 rows (the holdout alone would be a few dozen).
    assert 300 < report.n_reference < 600
    assert {"monthly_charges", "contract"} <= set(report.drifted_features)
    quiet = drift_against_champion(lifecycle_of(project), current(False, 12), "b" * 64)
    assert quiet.drifted_features == [], quiet.note


@pytest.mark.slow
def test_no_reference_data_or_schema_is_reported_not_raised(project, sample_csv) -> None:
    from mlops_assets.lifecycle.drift import drift_against_champion

    train = sample_csv(project.raw_dir, samples=200, seed=5)
    version = register_champion(project, train, holdout=False)
    train.unlink()
    report = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert not report.computed and report.reference_version == version
    assert train.name in report.note and report.results == []

    train = sample_csv(project.raw_dir, samples=200, seed=5)
    version = register_champion(project, train, schema=False)
    report = drift_against_champion(lifecycle_of(project), current(True, 11), "d" * 64)
    assert not report.computed and report.reference_version == version
    assert "no stored input schema" in report.note


def test_results_markdown_marks_drift_and_nan() -> None:
    from mlops_assets.lifecycle.drift import results_markdown

    results = feature_drift(frame(200, 0), frame(200, 1, shift=2.0), SCHEMA)
    table = results_markdown(results).splitlines()
    assert table[0].startswith("| feature | method | statistic | p-value")
    assert len(table) == 2 + len(results)
    age = next(line for line in table if line.startswith("| age | psi"))
    assert age.endswith("| **yes** |") and "| — |" in age  # PSI has no p-value
    tiny = feature_drift(frame(200, 0), frame(3, 1), SCHEMA)
    assert "| age | psi | — | — | 0.2 | — | no |" in results_markdown(tiny)


MILLION = 1_000_000


@pytest.mark.parametrize(("shift", "drifted"), [(0.01, False), (0.5, True)])
def test_at_a_million_rows_only_a_shift_that_matters_is_drift(shift: float, drifted: bool) -> None:
    """A 1%-of-a-sd shift is significant at 1M rows but no drift; half a sd is drift."""
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"x": rng.normal(size=MILLION)})
    cur = pd.DataFrame({"x": rng.normal(loc=shift, size=MILLION)})
    schema = InputSchema(
        target="t", classes=["0", "1"], features=[FeatureSpec(name="x", type="number")]
    )
    psi_row, ks_row = feature_drift(ref, cur, schema)
    assert ks_row.p_value is not None and ks_row.p_value < 0.01  # significant either way
    assert ks_row.effect == ks_row.statistic and ks_row.effect_threshold == 0.1
    assert ks_row.drifted is drifted
    assert (psi_row.drifted or ks_row.drifted) is drifted


@pytest.mark.parametrize(("share", "drifted"), [(0.505, False), (0.35, True)])
def test_at_a_million_rows_only_a_category_shift_that_matters_is_drift(
    share: float, drifted: bool
) -> None:
    rng = np.random.default_rng(6)
    ref = pd.DataFrame({"c": np.where(rng.random(MILLION) < 0.5, "a", "b")})
    cur = pd.DataFrame({"c": np.where(rng.random(MILLION) < share, "a", "b")})
    schema = InputSchema(
        target="t",
        classes=["0", "1"],
        features=[FeatureSpec(name="c", type="category", categories=["a", "b"])],
    )
    (row,) = feature_drift(ref, cur, schema)
    assert row.p_value is not None and row.p_value < 0.01
    assert row.effect is not None and row.effect_threshold == 0.1
    assert row.drifted is drifted


def test_cramers_v_is_zero_for_equal_shares_and_one_for_disjoint_samples() -> None:
    from mlops_assets.lifecycle.drift import cramers_v

    stat, _ = chi_square({"a": 50, "b": 50}, {"a": 50, "b": 50})
    assert cramers_v({"a": 50, "b": 50}, {"a": 50, "b": 50}, stat) == pytest.approx(0.0)
    stat, _ = chi_square({"a": 100}, {"b": 100})
    assert cramers_v({"a": 100}, {"b": 100}, stat) == pytest.approx(1.0)
