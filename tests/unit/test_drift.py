"""Drift checks: quiet on one distribution, loud on a shifted one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
