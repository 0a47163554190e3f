"""The input schema stored with every model version, and its inference from data.

The same schema drives three things: the pandera check of incoming files, the Ludwig input
features when the Ludwig config lists none, and request validation in the server.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

FeatureType = Literal["number", "category", "binary"]

# A column with at most this many distinct values (and non-numeric) is a category.
_BINARY_TOKENS = {"true", "false", "yes", "no", "0", "1", "t", "f", "y", "n"}


class FeatureSpec(BaseModel):
    """One input column: its Ludwig type and the values a request may carry."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: FeatureType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    # For categories: accept values never seen in training (they map to Ludwig's unknown token).
    allow_unknown: bool = True


class InputSchema(BaseModel):
    """Names, types, ranges and categories of a model's inputs, plus its target."""

    model_config = ConfigDict(extra="forbid")

    target: str
    target_type: Literal["binary", "category"] = "binary"
    classes: list[str] = Field(default_factory=list)
    features: list[FeatureSpec]

    def feature(self, name: str) -> FeatureSpec:
        """Return the spec of one feature (KeyError when unknown)."""
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        """Input feature names, in order."""
        return [f.name for f in self.features]

    def fingerprint(self) -> str:
        """A short hash of names and types: equal fingerprints mean compatible inputs."""
        blob = json.dumps([(f.name, f.type) for f in self.features]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def ludwig_input_features(self) -> list[dict[str, Any]]:
        """Ludwig `input_features` for this schema."""
        return [{"name": f.name, "type": f.type} for f in self.features]

    def to_json(self) -> str:
        """Serialise for storage next to a model version."""
        return self.model_dump_json(indent=2)


def _is_binary_series(series: pd.Series) -> bool:
    values = series.dropna().unique()
    if len(values) != 2:
        return False
    if pd.api.types.is_bool_dtype(series):
        return True
    return {str(v).strip().lower() for v in values} <= _BINARY_TOKENS


def infer_feature(series: pd.Series, max_category_cardinality: int = 50) -> FeatureSpec:
    """Infer number, binary or category for one column from its dtype and cardinality."""
    name = str(series.name)
    nullable = bool(series.isna().any())
    if _is_binary_series(series):
        return FeatureSpec(name=name, type="binary", nullable=nullable)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        finite = series[pd.Series(map(math.isfinite, series.fillna(0).astype(float)))]
        lo = float(finite.min()) if len(finite.dropna()) else None
        hi = float(finite.max()) if len(finite.dropna()) else None
        return FeatureSpec(name=name, type="number", nullable=nullable, min=lo, max=hi)
    cats = sorted(str(v) for v in series.dropna().unique())
    if len(cats) > max_category_cardinality:
        # Too many levels to one-hot sensibly; keep it a category with unknowns allowed.
        cats = [
            str(v)
            for v in series.dropna().astype(str).value_counts().index[:max_category_cardinality]
        ]
    return FeatureSpec(name=name, type="category", nullable=nullable, categories=sorted(cats))


def infer_schema(
    df: pd.DataFrame,
    target: str,
    max_category_cardinality: int = 50,
    features: list[str] | None = None,
) -> InputSchema:
    """Infer an InputSchema from a validated frame; `features` limits and orders the inputs."""
    names = features if features is not None else [c for c in df.columns if c != target]
    specs = [infer_feature(df[c], max_category_cardinality) for c in names]
    classes = sorted(str(v) for v in df[target].dropna().unique())
    target_type: Literal["binary", "category"] = (
        "binary" if _is_binary_series(df[target]) else "category"
    )
    return InputSchema(target=target, target_type=target_type, classes=classes, features=specs)
