"""Feature drift between a reference sample (the training data) and current data.

Methods and thresholds (a feature has drifted when any of its methods says so):
- number features: the population stability index (`psi`, drifted when PSI > 0.2) on ten
  quantile bins of the reference, and the two-sample Kolmogorov-Smirnov test (`ks`, drifted
  when p < 0.01). PSI measures how much the distribution moved; with large samples, KS also
  flags small but real shifts.
- category and binary features: the chi-square test of homogeneity on the category counts of
  both samples (`chi_square`, drifted when p < 0.01), over the union of categories, so a value
  never seen in the reference counts too.
- With large samples a test flags shifts too small to matter (a mean moved by 1% of a standard
  deviation is "significant" at a million rows). So a test's drift also needs an effect of a
  size that matters: the KS statistic (the largest gap between the two CDFs) at least
  `KS_MIN_EFFECT` (0.1), and Cramér's V of the count table at least `CRAMERS_V_MIN_EFFECT`
  (0.1, a small association by Cohen's convention). Each result carries its `effect`. At a few
  hundred rows the p-value threshold already implies an effect about that large, so small files
  are judged as before.
Missing values are left out. A feature missing from the current data is skipped with a warning
(data validation reports it). A method with fewer than `MIN_SAMPLES` values on either side
reports NaN and is not called drifted.

`drift_against_champion` runs these checks on a new data file against the champion's training
data: the raw files named by the champion version's `data.files` tag, found in `data/raw/` by
their sha256 (`data.sha256`). When they are gone, the holdout the champion's MLflow run kept
(`holdout.csv`, a stratified sample of the same data) stands in. Without a champion there is
no reference, and the report says so instead of computing anything. Only MLflow's own "no such
model, alias or artifact" leads to these fallbacks; a tracking server that does not answer
raises TrackingUnreachable (lifecycle/tracking.py), so "down" never reads as "no champion".
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, computed_field
from scipy import stats

from mlops_assets.lifecycle.schema import InputSchema
from mlops_assets.lifecycle.states import Alias, Tag

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.context import Lifecycle
    from mlops_assets.settings import Settings

logger = logging.getLogger(__name__)

PSI_THRESHOLD = 0.2
P_VALUE_THRESHOLD = 0.01
KS_MIN_EFFECT = 0.1  # the KS statistic a significant shift must also reach
CRAMERS_V_MIN_EFFECT = 0.1  # Cramér's V a significant category shift must also reach
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
    # The effect size a significant test must also reach (KS statistic, Cramér's V); None for
    # PSI, which is an effect size itself, and for results read back from the store.
    effect: float | None = None
    effect_threshold: float | None = None


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


def cramers_v(expected: Any, actual: Any, chi2: float) -> float:
    """Cramér's V of the 2 x k table of the two samples' counts, from its chi-square statistic."""
    ref, cur = _counts(expected), _counts(actual)
    n = sum(ref.values()) + sum(cur.values())
    k = len(set(ref) | set(cur))
    if n == 0 or k < 2 or math.isnan(chi2):
        return float("nan")
    return math.sqrt(chi2 / n)  # min(rows, columns) - 1 is 1 for two samples


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
            method, effect, least = "ks", stat, KS_MIN_EFFECT
        else:
            stat, p = chi_square(ref, cur) if enough else (nan, nan)
            effect = cramers_v(ref, cur, stat) if enough else nan
            method, least = "chi_square", CRAMERS_V_MIN_EFFECT
        significant = not math.isnan(p) and p < P_VALUE_THRESHOLD
        results.append(
            DriftResult(
                feature=name,
                method=method,
                statistic=stat,
                p_value=None if math.isnan(p) else p,
                threshold=P_VALUE_THRESHOLD,
                drifted=bool(significant and not math.isnan(effect) and effect >= least),
                effect=None if math.isnan(effect) else effect,
                effect_threshold=least,
            )
        )
    return results


# --- drift of a data file against the champion's training data -----------------------------


class DriftReport(BaseModel):
    """Drift of one data file against the data the champion was trained on."""

    model_name: str
    data_sha256: str  # the current data
    computed: bool  # False when there is no champion or its training data cannot be found
    note: str  # one sentence: what was compared, or why nothing was
    reference_version: str | None = None
    reference_sha256: str | None = None  # the champion's `data.sha256` tag
    reference_files: list[str] = Field(default_factory=list)
    reference_source: str | None = None  # "training files" or "holdout artifact"
    n_reference: int = 0
    n_current: int = 0
    results: list[DriftResult] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drifted_features(self) -> list[str]:
        """Features with at least one drifted method, in schema order."""
        return list(dict.fromkeys(r.feature for r in self.results if r.drifted))


def results_markdown(results: list[DriftResult]) -> str:
    """The results as a Markdown table (feature, method, statistic, p, effect, drifted)."""

    def num(value: float | None) -> str:
        if value is None or math.isnan(value):
            return "—"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"

    lines = [
        "| feature | method | statistic | p-value | threshold | effect (least) | drifted |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        effect = "—" if r.effect_threshold is None else f"{num(r.effect)} ({r.effect_threshold:g})"
        lines.append(
            f"| {r.feature} | {r.method} | {num(r.statistic)} | {num(r.p_value)} | "
            f"{r.threshold:g} | {effect} | {'**yes**' if r.drifted else 'no'} |"
        )
    return "\n".join(lines)


def _text_columns(schema: InputSchema) -> dict[str, type]:
    # Read categories as text on both sides, as validation does, so `1` and `01` stay apart.
    return {f.name: str for f in schema.features if f.type == "category"}


def _inside(settings: Settings, path: Path) -> bool:
    from mlops_assets.files import safe_child

    try:
        safe_child(settings.raw_dir, path.name)
    except ValueError:
        return False
    return True


def _find_file(settings: Settings, name: str, sha256: str) -> Path | None:
    """The file in data/raw/ with these bytes: under its own name first, else any name.

    The name comes from a registry tag: one that is not a plain file name in data/raw/ (`..`,
    an absolute path, a symlink out) is refused and never opened.
    """
    from mlops_assets.files import safe_child
    from mlops_assets.validation import file_sha256, list_raw_files

    try:
        named: Path | None = safe_child(settings.raw_dir, name)
    except ValueError as err:
        logger.warning("training file of the champion: %s", err)
        named = None
    listed = [p for p in list_raw_files(settings.raw_dir) if p != named and _inside(settings, p)]
    candidates = ([named] if named is not None else []) + listed
    for path in candidates:
        if path.is_file() and file_sha256(path) == sha256:
            return path
    return None


def _read_training_file(settings: Settings, path: Path, schema: InputSchema) -> pd.DataFrame:
    """Parse a training file the way validation parsed it (falling back to a plain read)."""
    from mlops_assets.validation import validate_file

    result = validate_file(path, settings.config.data, schema)
    if result.ok and result.frame is not None:
        return result.frame
    logger.warning(
        "%s no longer passes validation (%s); reading it as it is for the drift reference",
        path.name,
        result.summary(),
    )
    from mlops_assets.files import check_size

    check_size(path, settings.config.data.max_file_bytes)
    return pd.read_csv(path, dtype=_text_columns(schema), low_memory=False)


def champion_reference(
    settings: Settings, client: MlflowClient, version: str, schema: InputSchema
) -> tuple[pd.DataFrame | None, str, list[str]]:
    """The training data of `version`: (frame or None, where it came from, file names)."""
    from mlops_assets.lifecycle.tracking import missing_as_none, reaching, tracking_uri_of
    from mlops_assets.lifecycle.training import (
        HOLDOUT_ARTIFACT,
        REFERENCE_ARTIFACT,
        ROW_ID,
        read_run_text,
    )

    uri = tracking_uri_of(client)
    with reaching(uri, f"reading champion v{version} of {settings.model_name}"):
        mv = client.get_model_version(settings.model_name, version)
    tags = mv.tags or {}
    names = [n for n in (tags.get(Tag.DATA_FILES) or "").split(",") if n]
    shas = [s for s in (tags.get(Tag.DATA_SHA256) or "").split(",") if s]
    paths = [_find_file(settings, n, s) for n, s in zip(names, shas, strict=False)]
    if names and len(names) == len(shas) and all(p is not None for p in paths):
        frames = [_read_training_file(settings, p, schema) for p in paths if p is not None]
        return pd.concat(frames, ignore_index=True), "training files", names
    missing = [n for n, p in zip(names, paths, strict=False) if p is None] or names
    # The run's sample of its training split, else (older versions) its holdout.
    for artifact, source in (
        (REFERENCE_ARTIFACT, "training sample artifact"),
        (HOLDOUT_ARTIFACT, "holdout artifact"),
    ):
        # None only when the run has no such artifact; a server that is down raises.
        text = missing_as_none(
            lambda a=artifact: read_run_text(client, mv.run_id, a),
            uri,
            f"reading the {source} of champion v{version}",
        )
        if text is None:
            continue
        logger.warning(
            "the training data of v%s (%s) is not in %s; using the %s of its MLflow run",
            version,
            ", ".join(missing) or "no data.files tag",
            settings.raw_dir,
            source,
        )
        frame = pd.read_csv(StringIO(text), dtype=_text_columns(schema), low_memory=False)
        return frame.drop(columns=[ROW_ID], errors="ignore"), source, names
    return None, "", names


def drift_against_champion(lc: Lifecycle, current: pd.DataFrame, data_sha256: str) -> DriftReport:
    """Drift of `current` (one validated file) against the current champion's training data.

    TrackingUnreachable when MLflow does not answer: "down" is never reported as "no
    champion" or "no stored schema".
    """
    from mlops_assets.lifecycle.tracking import missing_as_none, reaching, tracking_uri_of
    from mlops_assets.lifecycle.training import read_run_text

    settings, client = lc.settings, lc.client
    name = settings.model_name
    uri = tracking_uri_of(client)
    base: dict[str, Any] = {
        "model_name": name,
        "data_sha256": data_sha256,
        "n_current": len(current),
    }
    champion = lc.alias_version(Alias.CHAMPION)
    if champion is None:
        return DriftReport(
            **base,
            computed=False,
            note="No champion yet, so there is no reference data; drift is computed once a "
            "model is champion.",
        )
    version = champion
    with reaching(uri, f"reading champion v{version} of {name}"):
        mv = client.get_model_version(name, version)
    tags = mv.tags or {}
    ref_info: dict[str, Any] = {
        "reference_version": version,
        "reference_sha256": tags.get(Tag.DATA_SHA256) or None,
    }
    schema_text = missing_as_none(
        lambda: read_run_text(client, mv.run_id, "schema.json"),
        uri,
        f"reading the input schema of champion v{version}",
    )
    if schema_text is None:  # a version registered without a stored schema
        return DriftReport(
            **base,
            **ref_info,
            computed=False,
            note=f"Champion v{version} has no stored input schema; drift was not computed.",
        )
    schema = InputSchema.model_validate_json(schema_text)
    reference, source, files = champion_reference(settings, client, version, schema)
    ref_info["reference_files"] = files
    if reference is None:
        return DriftReport(
            **base,
            **ref_info,
            computed=False,
            note=f"The training data of champion v{version} ({', '.join(files) or 'unknown'}) "
            f"is neither in {settings.raw_dir} nor kept as a holdout; drift was not computed.",
        )
    results = feature_drift(reference, current, schema)
    drifted = list(dict.fromkeys(r.feature for r in results if r.drifted))
    note = (
        f"{len(drifted)} of {len(schema.features)} features drifted against the "
        f"{source} of champion v{version}" + (f": {', '.join(drifted)}." if drifted else ".")
    )
    if data_sha256 in (ref_info["reference_sha256"] or "").split(","):
        note += " The champion was trained on this very file."
    logger.info("drift of %s: %s", data_sha256[:12], note)
    return DriftReport(
        **base,
        **ref_info,
        computed=True,
        note=note,
        reference_source=source,
        n_reference=len(reference),
        results=results,
    )
