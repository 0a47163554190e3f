"""Feature drift between a reference sample (the training data) and current data.

Methods and thresholds (a feature has drifted when any of its methods says so):
- number features: the population stability index (`psi`, drifted when PSI > 0.2) on ten
  quantile bins of the reference, and the two-sample Kolmogorov-Smirnov test (`ks`, drifted
  when p < 0.01). PSI measures how much the distribution moved; with large samples, KS also
  flags small but real shifts.
- category and binary features: the chi-square test of homogeneity on the category counts of
  both samples (`chi_square`, drifted when p < 0.01), over the union of categories, so a value
  never seen in the reference counts too.
Missing values are left out. A feature missing from the current data is skipped with a warning
(data validation reports it). A method with fewer than `MIN_SAMPLES` values on either side
reports NaN and is not called drifted.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats

from mlops_assets.lifecycle.schema import InputSchema

logger = logging.getLogger(__name__)

PSI_THRESHOLD = 0.2
P_VALUE_THRESHOLD = 0.01
PSI_EPSILON = 1e-4  # smoothing for empty bins
MIN_SAMPLES = 5


class DriftResult(BaseModel):
    """One drift check of one feature."""

    model_config = ConfigDict(frozen=True)

    feature: str
    method: str  # "psi", "ks" or "chi_square"
    statistic: float
    p_value: float | None
    threshold: float  # PSI above it, or p-value below it, means drift
    drifted: bool


def _numeric(values: Any) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(np.asarray(values).reshape(-1)), errors="coerce").to_numpy(
        dtype=np.float64
    )
    return arr[np.isfinite(arr)]


def psi(expected: Any, actual: Any, bins: int = 10) -> float:
    """Population stability index of `actual` against `expected`, on quantile bins of `expected`."""
    ref = _numeric(expected)
    cur = _numeric(actual)
    if ref.size == 0 or cur.size == 0:
        return float("nan")
    # Bins are (edge[i-1], edge[i]]; unique edges keep point masses (e.g. a constant) apart.
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(inner, ref, side="left"), minlength=inner.size + 1)
    cur_counts = np.bincount(np.searchsorted(inner, cur, side="left"), minlength=inner.size + 1)
    p = ref_counts / ref.size + PSI_EPSILON
    q = cur_counts / cur.size + PSI_EPSILON
    p /= p.sum()
    q /= q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def ks_test(expected: Any, actual: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (statistic, p-value)."""
    ref = _numeric(expected)
    cur = _numeric(actual)
    if ref.size == 0 or cur.size == 0:
        return float("nan"), float("nan")
    res = stats.ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


def _counts(values: Any) -> Counter[str]:
    if isinstance(values, Mapping):
        return Counter({str(k): int(v) for k, v in values.items()})
    series = pd.Series(np.asarray(values, dtype=object).reshape(-1)).dropna()
    return Counter(series.astype(str).tolist())


def chi_square(expected: Any, actual: Any) -> tuple[float, float]:
    """Chi-square test that two categorical samples share one distribution.

    Each argument is either the raw values or a mapping of category to count. The categories
    are the union of both sides, so categories unseen in `expected` count against it.
    """
    ref = _counts(expected)
    cur = _counts(actual)
    cats = sorted(set(ref) | set(cur))
    table = np.array([[ref.get(c, 0) for c in cats], [cur.get(c, 0) for c in cats]], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def feature_drift(
    reference_df: pd.DataFrame, current_df: pd.DataFrame, schema: InputSchema
) -> list[DriftResult]:
    """Drift checks of every schema feature; see the module docstring for methods and thresholds."""
    results: list[DriftResult] = []
    for spec in schema.features:
        name = spec.name
        if name not in reference_df.columns or name not in current_df.columns:
            logger.warning("feature %s is missing from the data; drift not checked", name)
            continue
        ref = reference_df[name].dropna()
        cur = current_df[name].dropna()
        enough = len(ref) >= MIN_SAMPLES and len(cur) >= MIN_SAMPLES
        nan = float("nan")
        if spec.type == "number":
            value = psi(ref, cur) if enough else nan
            results.append(
                DriftResult(
                    feature=name,
                    method="psi",
                    statistic=value,
                    p_value=None,
                    threshold=PSI_THRESHOLD,
                    drifted=bool(not math.isnan(value) and value > PSI_THRESHOLD),
                )
            )
            stat, p = ks_test(ref, cur) if enough else (nan, nan)
            method = "ks"
        else:
            stat, p = chi_square(ref, cur) if enough else (nan, nan)
            method = "chi_square"
        results.append(
            DriftResult(
                feature=name,
                method=method,
                statistic=stat,
                p_value=None if math.isnan(p) else p,
                threshold=P_VALUE_THRESHOLD,
                drifted=bool(not math.isnan(p) and p < P_VALUE_THRESHOLD),
            )
        )
    return results
