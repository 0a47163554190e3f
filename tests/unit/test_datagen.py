"""Sample data: determinism, columns, missing values, covariate and concept drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlops_assets import datagen
from mlops_assets.datagen import (
    CATEGORICAL_COLUMNS,
    CONTRACTS,
    DATASET_FILENAMES,
    DRIFT,
    DRIFT_HELP,
    NUMERIC_COLUMNS,
    generate_frame,
    write_dataset,
)
from mlops_assets.settings import load_settings

PROJECT = Path(__file__).resolve().parents[2]
FEATURES = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = write_dataset(tmp_path / "a", 300, seed=7)
    second = write_dataset(tmp_path / "b", 300, seed=7)
    other = write_dataset(tmp_path / "c", 300, seed=8)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


@pytest.mark.parametrize("drift", [False, True])
def test_file_name_and_format(tmp_path: Path, drift: bool) -> None:
    path = write_dataset(tmp_path, 200, seed=1, drift=drift)
    assert path == tmp_path / DATASET_FILENAMES[drift]
    raw = path.read_bytes()
    assert b"\r\n" not in raw
    header = raw.split(b"\n", 1)[0].decode()
    assert header.split(",") == datagen.COLUMNS
    assert len(pd.read_csv(path)) == 200
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_columns_match_the_sample_configs() -> None:
    settings = load_settings(PROJECT / "config" / "config.yaml")
    ludwig_inputs = [f.name for f in settings.ludwig.input_features or []]
    ludwig_outputs = [f.name for f in settings.ludwig.output_features or []]
    assert ludwig_inputs == FEATURES
    assert ludwig_outputs == [settings.config.data.target_column] == [datagen.TARGET_COLUMN]
    assert set(settings.config.data.features) <= set(FEATURES)


def test_columns_types_and_ranges() -> None:
    frame = generate_frame(3000, seed=3)
    assert list(frame.columns) == datagen.COLUMNS
    for column in NUMERIC_COLUMNS:
        assert pd.api.types.is_numeric_dtype(frame[column]), column
    assert frame["age"].between(18, 100).all()
    assert frame["tenure_months"].between(0, 120).all()
    assert (frame["monthly_charges"] >= 0).all()
    assert set(frame["contract"]) == set(CONTRACTS)
    assert set(frame["payment_method"]) <= set(datagen.PAYMENT_METHODS)
    assert set(frame["region"]) == set(datagen.REGIONS)
    assert set(frame["target"].unique()) == {0, 1}
    assert 0.25 <= frame["target"].mean() <= 0.40


def test_missing_values_only_in_documented_numeric_columns() -> None:
    frame = generate_frame(3000, seed=4)
    missing = frame.isna().mean()
    for column, fraction in datagen.MISSING_FRACTION.items():
        assert 0 < missing[column] < 3 * fraction, column
    untouched = [c for c in frame.columns if c not in datagen.MISSING_FRACTION]
    assert missing[untouched].sum() == 0
    assert frame["contract"].notna().all() and frame["target"].notna().all()


def test_drift_shifts_the_documented_features() -> None:
    base = generate_frame(5000, seed=5)
    drift = generate_frame(5000, seed=5, drift=True)
    charges = drift["monthly_charges"].mean() / base["monthly_charges"].mean()
    assert charges == pytest.approx(DRIFT["monthly_charges_factor"], rel=0.05)
    login = drift["days_since_last_login"].mean() / base["days_since_last_login"].mean()
    assert login == pytest.approx(DRIFT["days_since_last_login_factor"], rel=0.08)
    mix = drift["contract"].value_counts(normalize=True)
    for contract, share in DRIFT["contract_mix"].items():
        assert mix[contract] == pytest.approx(share, abs=0.03)
    assert (
        mix["month-to-month"]
        > base["contract"].value_counts(normalize=True)["month-to-month"] + 0.1
    )
    # Features the drift does not touch keep their distribution.
    assert drift["age"].mean() == pytest.approx(base["age"].mean(), rel=0.03)


def test_drift_help_describes_the_amounts() -> None:
    assert "25%" in DRIFT_HELP
    assert "1.5x" in DRIFT_HELP
    assert "month-to-month" in DRIFT_HELP
    assert "concept" in DRIFT_HELP.lower()


def _proxy_model() -> Pipeline:
    columns = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                NUMERIC_COLUMNS,
            ),
            ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_COLUMNS),
        ]
    )
    return make_pipeline(columns, LogisticRegression(max_iter=500))


def _fit(frame: pd.DataFrame) -> Pipeline:
    return _proxy_model().fit(frame[FEATURES], frame["target"])


def test_baseline_is_learnable() -> None:
    model = _fit(generate_frame(2000, seed=11))
    holdout = generate_frame(1000, seed=12)
    predicted = model.predict(holdout[FEATURES])
    assert accuracy_score(holdout["target"], predicted) >= 0.75
    assert accuracy_score(holdout["target"], predicted) > 1 - holdout["target"].mean() + 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concept_drift_makes_a_drift_trained_model_clearly_better(seed: int) -> None:
    """On a drift holdout, training on drift data beats training on baseline data."""
    champion = _fit(generate_frame(2000, seed=seed))
    challenger = _fit(generate_frame(2000, seed=seed, drift=True))
    holdout = generate_frame(2000, seed=seed + 1000, drift=True)
    y = holdout["target"]
    old = champion.predict(holdout[FEATURES])
    new = challenger.predict(holdout[FEATURES])
    assert f1_score(y, new) - f1_score(y, old) >= 0.08
    assert accuracy_score(y, new) - accuracy_score(y, old) >= 0.08


def test_rejects_no_samples() -> None:
    with pytest.raises(ValueError, match="samples"):
        generate_frame(0)


def test_generator_does_not_touch_global_random_state() -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    generate_frame(50, seed=1)
    assert np.random.random() == expected
