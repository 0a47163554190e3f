"""Sample churn-like data: a baseline table and a drifted one (covariate and concept drift).

The columns match `config/config.yaml` and `config/ludwig_config.yaml`. The target follows a
logistic model of the features; the drift variant shifts some feature distributions *and*
changes that model, so a champion trained on baseline data is clearly worse on drift data
than a challenger trained on it. Same seed, same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DATASET_FILENAMES: dict[bool, str] = {False: "baseline_full.csv", True: "drift_full.csv"}

NUMERIC_COLUMNS: list[str] = [
    "age",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "num_support_calls",
    "avg_session_minutes",
    "data_usage_gb",
    "days_since_last_login",
]
CATEGORICAL_COLUMNS: list[str] = ["contract", "payment_method", "region"]
TARGET_COLUMN = "target"
COLUMNS: list[str] = [*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS, TARGET_COLUMN]

CONTRACTS: list[str] = ["month-to-month", "one-year", "two-year"]
PAYMENT_METHODS: list[str] = ["credit-card", "bank-transfer", "electronic-check", "mailed-check"]
REGIONS: list[str] = ["north", "south", "east", "west", "central"]

# Columns that get a few missing values, and the fraction missing in each.
MISSING_FRACTION: dict[str, float] = {"avg_session_minutes": 0.015, "data_usage_gb": 0.015}

BASELINE: dict[str, Any] = {
    "contract_mix": {"month-to-month": 0.50, "one-year": 0.27, "two-year": 0.23},
    "monthly_charges_factor": 1.0,
    "days_since_last_login_factor": 1.0,
    # Logit coefficients on standardised features (fixed baseline centres and scales, so
    # covariate drift moves the standardised values too).
    "coefficients": {
        "intercept": -1.75,
        "contract=month-to-month": 1.10,
        "contract=two-year": -1.00,
        "tenure_months": -0.90,
        "monthly_charges": 0.70,
        "num_support_calls": 0.80,
        "avg_session_minutes": -0.50,
        "days_since_last_login": 0.90,
        "payment_method=electronic-check": 0.50,
        "region=south": 0.0,
    },
}

DRIFT: dict[str, Any] = {
    # Covariate drift: the population changes.
    "contract_mix": {"month-to-month": 0.70, "one-year": 0.18, "two-year": 0.12},
    "monthly_charges_factor": 1.25,
    "days_since_last_login_factor": 1.5,
    # Concept drift: the relation between features and churn changes. Long-tenure customers
    # now leave (a price change on legacy plans), support calls now retain customers (a new
    # support team), recent logins no longer signal loyalty, and a competitor entered the south.
    "coefficients": {
        "intercept": -1.60,
        "contract=month-to-month": 0.60,
        "contract=two-year": -0.60,
        "tenure_months": 0.60,
        "monthly_charges": 0.70,
        "num_support_calls": -0.60,
        "avg_session_minutes": -0.50,
        "days_since_last_login": -0.30,
        "payment_method=electronic-check": 0.50,
        "region=south": 1.20,
    },
}


def _mix(mix: dict[str, float]) -> str:
    return "/".join(f"{mix[c]:.0%}" for c in CONTRACTS)


def _coef(name: str) -> str:
    return f"{BASELINE['coefficients'][name]:+.1f} -> {DRIFT['coefficients'][name]:+.1f}"


DRIFT_HELP = (
    "With --generate-drift the data shows covariate drift and concept drift. Covariate: "
    f"monthly_charges are {DRIFT['monthly_charges_factor'] - 1:.0%} higher, "
    f"days_since_last_login is {DRIFT['days_since_last_login_factor']:g}x longer, and the "
    f"contract mix (month-to-month/one-year/two-year) moves from "
    f"{_mix(BASELINE['contract_mix'])} to {_mix(DRIFT['contract_mix'])}. Concept: the churn "
    f"model itself changes (logit coefficients on standardised features): long tenure now "
    f"raises churn ({_coef('tenure_months')}), support calls now lower it "
    f"({_coef('num_support_calls')}), days since last login lower it "
    f"({_coef('days_since_last_login')}), the contract effect weakens "
    f"(month-to-month {_coef('contract=month-to-month')}), and region 'south' gains a churn "
    f"effect ({_coef('region=south')}). A champion trained on baseline data scores clearly "
    "worse on drift data than a challenger trained on drift data."
)

# Fixed centres and scales for standardising features in the logit (baseline population).
_SCALE: dict[str, tuple[float, float]] = {
    "tenure_months": (30.0, 24.0),
    "monthly_charges": (65.0, 25.0),
    "num_support_calls": (1.5, 1.25),
    "avg_session_minutes": (30.0, 15.0),
    "days_since_last_login": (15.0, 15.0),
}


def _standard(values: np.ndarray, name: str) -> np.ndarray:
    centre, scale = _SCALE[name]
    return (values - centre) / scale


def generate_frame(samples: int, seed: int = 42, drift: bool = False) -> pd.DataFrame:
    """Return `samples` rows of churn-like data; `drift` applies covariate and concept drift."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples}")
    params = DRIFT if drift else BASELINE
    rng = np.random.default_rng(seed)
    n = samples

    mix = params["contract_mix"]
    contract = rng.choice(CONTRACTS, size=n, p=[mix[c] for c in CONTRACTS])
    payment_method = rng.choice(PAYMENT_METHODS, size=n, p=[0.30, 0.25, 0.30, 0.15])
    region = rng.choice(REGIONS, size=n, p=[0.22, 0.20, 0.20, 0.20, 0.18])

    age = np.clip(np.rint(rng.normal(45.0, 14.0, n)), 18, 100).astype(np.int64)
    # Longer contracts go with longer tenure.
    tenure_mean = np.select(
        [contract == "month-to-month", contract == "one-year"], [18.0, 36.0], default=52.0
    )
    tenure = np.clip(np.rint(rng.gamma(2.0, tenure_mean / 2.0)), 0, 120).astype(np.int64)
    monthly = np.clip(rng.normal(65.0, 25.0, n), 10.0, None) * params["monthly_charges_factor"]
    total = monthly * np.maximum(tenure, 1) * rng.normal(1.0, 0.05, n)
    total = np.clip(total, 0.0, None)
    support_calls = rng.poisson(1.5, n).astype(np.int64)
    session = np.clip(rng.gamma(4.0, 7.5, n), 0.5, None)
    data_usage = rng.lognormal(2.1, 0.6, n)
    last_login = np.rint(rng.exponential(15.0, n) * params["days_since_last_login_factor"])
    last_login = last_login.astype(np.int64)

    coef = params["coefficients"]
    logit = (
        coef["intercept"]
        + coef["contract=month-to-month"] * (contract == "month-to-month")
        + coef["contract=two-year"] * (contract == "two-year")
        + coef["tenure_months"] * _standard(tenure.astype(float), "tenure_months")
        + coef["monthly_charges"] * _standard(monthly, "monthly_charges")
        + coef["num_support_calls"] * _standard(support_calls.astype(float), "num_support_calls")
        + coef["avg_session_minutes"] * _standard(session, "avg_session_minutes")
        + coef["days_since_last_login"]
        * _standard(last_login.astype(float), "days_since_last_login")
        + coef["payment_method=electronic-check"] * (payment_method == "electronic-check")
        + coef["region=south"] * (region == "south")
    )
    probability = 1.0 / (1.0 + np.exp(-logit))
    target = (rng.random(n) < probability).astype(np.int64)

    frame = pd.DataFrame(
        {
            "age": age,
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "num_support_calls": support_calls,
            "avg_session_minutes": session,
            "data_usage_gb": data_usage,
            "days_since_last_login": last_login,
            "contract": contract,
            "payment_method": payment_method,
            "region": region,
            TARGET_COLUMN: target,
        },
        columns=COLUMNS,
    )
    # Missing values are drawn after the target, so they do not depend on it.
    for column, fraction in MISSING_FRACTION.items():
        mask = rng.random(n) < fraction
        frame.loc[mask, column] = np.nan
    return frame


def write_dataset(output_dir: Path, samples: int, seed: int = 42, drift: bool = False) -> Path:
    """Write `baseline_full.csv` (or `drift_full.csv`) into `output_dir` and return its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / DATASET_FILENAMES[drift]
    frame = generate_frame(samples, seed=seed, drift=drift)
    # Write to a temporary name first, so a sensor never sees a half-written file.
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n", encoding="utf-8")
    tmp.replace(path)
    logger.info(
        "wrote %s: %d rows, seed %d, drift %s, positive rate %.3f",
        path,
        len(frame),
        seed,
        drift,
        float(frame[TARGET_COLUMN].mean()),
    )
    return path
