"""The serving bundle stored with every model version (MLflow run artifacts under `serving/`).

A bundle folder holds:
- `inference.pt`: the Ludwig model with its pre- and postprocessing as TorchScript (the fast
  path: it runs with torch alone, no Ludwig import, ~0.1 ms a row);
- `schema.json`: the InputSchema requests are validated against;
- `bundle.json`: the manifest (format version, target, classes in the order of the probability
  columns, whether the fast path is usable, and what the Python side needs to build inputs);
- `ludwig_model/`: the saved LudwigModel, the fallback when TorchScript cannot be used.

`export_bundle` writes one; `load_bundle` returns a `Predictor` that answers in `classes` order
either way. This module imports neither Ray nor Dagster; Ludwig only when it must.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.lifecycle.digests import write_digests
from mlops_assets.lifecycle.schema import InputSchema

if TYPE_CHECKING:
    from ludwig.api import LudwigModel

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
INFERENCE_FILE = "inference.pt"
SCHEMA_FILE = "schema.json"
MANIFEST_FILE = "bundle.json"
LUDWIG_DIR = "ludwig_model"

# Input feature types the Python side knows how to turn into TorchScript inputs.
FAST_PATH_TYPES = frozenset({"number", "category", "binary"})
# Ludwig's own boolean spellings (ludwig.utils.strings_utils), copied so that loading a
# bundle never needs Ludwig.
BOOL_TRUE_STRS = frozenset({"yes", "y", "true", "t", "1", "1.0"})
BOOL_FALSE_STRS = frozenset({"no", "n", "false", "f", "0", "0.0", "-1", "-1.0"})
# Tolerance of the export-time self check of TorchScript against LudwigModel.predict.
SELF_CHECK_ATOL = 1e-5

Mode = Literal["torchscript", "ludwig"]


class InputFeatureInfo(BaseModel):
    """What the Python side needs to turn one request value into a TorchScript input."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    # Value used for a missing category or binary (Ludwig's computed fill value).
    fill_value: Any = None
    # Binary features trained on strings: Ludwig's exact string -> bool map.
    str2bool: dict[str, bool] | None = None


class BundleManifest(BaseModel):
    """`bundle.json`: how to load and call the bundle."""

    model_config = ConfigDict(extra="ignore")

    format_version: int = BUNDLE_FORMAT_VERSION
    target: str
    target_type: str
    classes: list[str]
    fast_path: bool
    fast_path_error: str | None = None
    input_features: list[InputFeatureInfo]
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    torch_version: str | None = None
    ludwig_version: str | None = None


class PredictionBatch(BaseModel):
    """Labels and class probabilities (columns in `classes` order) for N rows."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    labels: list[str]
    probabilities: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def probability_dicts(self) -> list[dict[str, float]]:
        """One `{class: probability}` mapping per row."""
        return [
            {c: float(p) for c, p in zip(self.classes, row, strict=True)}
            for row in self.probabilities
        ]


class BundleError(Exception):
    """A bundle folder is missing, incomplete or of an unknown format."""


def _model_classes(model: LudwigModel, target: str) -> list[str]:
    """Class labels in the order of the model's probability columns."""
    meta = model.training_set_metadata[target]
    if "idx2str" in meta:
        return [str(c) for c in meta["idx2str"]]
    if meta.get("bool2str"):
        return [str(c) for c in meta["bool2str"]]
    return ["False", "True"]


def _input_feature_infos(model: LudwigModel) -> list[InputFeatureInfo]:
    infos = []
    for feature in model.config_obj.to_dict()["input_features"]:
        name, ftype = feature["name"], feature["type"]
        meta = model.training_set_metadata.get(name, {})
        fill = (meta.get("preprocessing") or {}).get("computed_fill_value")
        str2bool = meta.get("str2bool") if ftype == "binary" else None
        infos.append(
            InputFeatureInfo(
                name=name,
                type=ftype,
                fill_value=_jsonable(fill),
                str2bool={str(k): bool(v) for k, v in str2bool.items()} if str2bool else None,
            )
        )
    return infos


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _probe_records(schema: InputSchema, infos: list[InputFeatureInfo]) -> list[dict[str, Any]]:
    """A few synthetic rows spanning each feature's range, for the export self check."""
    rows: list[dict[str, Any]] = []
    for i in range(4):
        row: dict[str, Any] = {}
        for info in infos:
            try:
                spec = schema.feature(info.name)
            except KeyError:
                spec = None
            if info.type == "number":
                lo = spec.min if spec and spec.min is not None else 0.0
                hi = spec.max if spec and spec.max is not None else lo + 1.0
                row[info.name] = lo + (hi - lo) * i / 3
            elif info.type == "category":
                cats = (spec.categories if spec and spec.categories else None) or ["x"]
                row[info.name] = cats[i % len(cats)]
            elif info.type == "binary":
                keys = sorted(info.str2bool) if info.str2bool else None
                row[info.name] = keys[i % len(keys)] if keys else bool(i % 2)
        rows.append(row)
    return rows


def export_bundle(model: LudwigModel, schema: InputSchema, out_dir: Path) -> Path:
    """Write the serving bundle of a trained LudwigModel into `out_dir` and return it."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = schema.target
    output_features = model.config_obj.to_dict()["output_features"]
    if target not in {f["name"] for f in output_features}:
        raise BundleError(f"the model has no output feature {target!r}")
    target_type = next(f["type"] for f in output_features if f["name"] == target)
    classes = _model_classes(model, target)
    infos = _input_feature_infos(model)

    (out_dir / SCHEMA_FILE).write_text(schema.to_json(), encoding="utf-8")
    model.save(str(out_dir / LUDWIG_DIR))

    fast_path, error = True, None
    unsupported = sorted({i.type for i in infos} - FAST_PATH_TYPES)
    if len(output_features) != 1:
        fast_path, error = False, "the fast path serves models with exactly one output feature"
    elif unsupported:
        fast_path, error = False, f"input feature types without a fast path: {unsupported}"
    if fast_path:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scripted = model.to_torchscript(device="cpu")
                torch.jit.save(scripted, str(out_dir / INFERENCE_FILE))
        except Exception as exc:  # any feature type TorchScript cannot compile
            fast_path, error = False, f"TorchScript export failed: {exc!r}"[:500]
            log.warning("TorchScript export failed; the bundle uses the Ludwig fallback: %s", exc)
    manifest = BundleManifest(
        target=target,
        target_type=target_type,
        classes=classes,
        fast_path=fast_path,
        fast_path_error=error,
        input_features=infos,
        torch_version=torch.__version__,
        ludwig_version=_ludwig_version(),
    )
    if fast_path:
        problem = _self_check(model, manifest, schema, out_dir)
        if problem:
            manifest.fast_path, manifest.fast_path_error = False, problem
            log.warning("TorchScript self check failed; using the Ludwig fallback: %s", problem)
            (out_dir / INFERENCE_FILE).unlink(missing_ok=True)
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    write_digests(out_dir)  # last: every file of the bundle is final now
    return out_dir


def _ludwig_version() -> str | None:
    try:
        import ludwig

        return str(ludwig.__version__)
    except Exception:
        return None


def _self_check(
    model: LudwigModel, manifest: BundleManifest, schema: InputSchema, out_dir: Path
) -> str | None:
    """Compare TorchScript with LudwigModel.predict on synthetic rows; return a problem or None."""
    try:
        records = _probe_records(schema, manifest.input_features)
        fast = Predictor(
            out_dir, manifest, schema, "torchscript", _load_module(out_dir / INFERENCE_FILE)
        ).predict(records)
        slow = Predictor(out_dir, manifest, schema, "ludwig", model).predict(records)
    except Exception as exc:
        return f"TorchScript self check raised {exc!r}"[:500]
    if fast.labels != slow.labels:
        return "TorchScript labels differ from LudwigModel.predict"
    diff = float(np.max(np.abs(fast.probabilities - slow.probabilities)))
    if not diff <= SELF_CHECK_ATOL:
        return f"TorchScript probabilities differ from LudwigModel.predict by {diff:.2e}"
    return None


def _load_module(path: Path) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return value is pd.NA or value is pd.NaT


def _numbers(values: list[Any]) -> np.ndarray:
    """float32 array of a number column; None (JSON null) and NaN become NaN."""
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float32)
    except (TypeError, ValueError):  # pd.NA and friends: the slow, careful way
        return np.array([np.nan if _missing(v) else float(v) for v in values], dtype=np.float32)


def _to_bool(value: Any, info: InputFeatureInfo) -> float:
    """Map a request value of a binary feature onto 0.0 / 1.0 the way Ludwig does."""
    if _missing(value):
        value = info.fill_value
        if _missing(value):
            return 0.0
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value != 0)
    text = str(value).strip()
    if info.str2bool is not None and text in info.str2bool:
        return float(info.str2bool[text])
    lowered = text.lower()
    if lowered in BOOL_TRUE_STRS:
        return 1.0
    if lowered in BOOL_FALSE_STRS:
        return 0.0
    raise ValueError(f"{info.name}: {value!r} is not a boolean value")


class Predictor:
    """A loaded bundle: `predict(records)` gives labels and probabilities in `classes` order."""

    def __init__(
        self,
        path: Path,
        manifest: BundleManifest,
        schema: InputSchema,
        mode: Mode,
        model: Any,
    ) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.schema = schema
        self.mode: Mode = mode
        self._model = model

    @property
    def classes(self) -> list[str]:
        """Class labels, in the order of the probability columns."""
        return list(self.manifest.classes)

    @property
    def target(self) -> str:
        """The output feature (target column) name."""
        return self.manifest.target

    def predict(
        self, records: Sequence[Mapping[str, Any]] | pd.DataFrame | Mapping[str, list[Any]]
    ) -> PredictionBatch:
        """Predict N rows given as feature dicts, a DataFrame, or columns (`{name: values}`)."""
        if isinstance(records, pd.DataFrame):
            columns: Mapping[str, list[Any]] | None = None
            frame: pd.DataFrame | None = records
            n = len(frame)
        elif isinstance(records, Mapping):
            columns, frame = records, None
            n = len(next(iter(columns.values()), []))
        else:
            frame = None
            columns = {
                f.name: [row[f.name] for row in records] for f in self.manifest.input_features
            }
            n = len(records)
        if n == 0:
            return PredictionBatch(
                labels=[], probabilities=np.zeros((0, len(self.classes))), classes=self.classes
            )
        if self.mode == "torchscript":
            return self._predict_torchscript(frame, columns)
        if frame is None:
            frame = pd.DataFrame(dict(columns or {}))
        return self._predict_ludwig(frame)

    @staticmethod
    def _column(
        name: str, frame: pd.DataFrame | None, columns: Mapping[str, list[Any]] | None
    ) -> list[Any]:
        if frame is not None:
            return frame[name].tolist()
        return list((columns or {})[name])

    def _predict_torchscript(
        self, frame: pd.DataFrame | None, columns: Mapping[str, list[Any]] | None
    ) -> PredictionBatch:
        import torch

        inputs: dict[str, Any] = {}
        for info in self.manifest.input_features:
            if info.type == "number":
                if frame is not None:
                    arr = pd.to_numeric(frame[info.name], errors="raise").to_numpy(
                        dtype=np.float32, na_value=np.nan
                    )
                else:
                    arr = _numbers(self._column(info.name, None, columns))
                inputs[info.name] = torch.from_numpy(arr)
            elif info.type == "category":
                fill = str(info.fill_value) if info.fill_value is not None else "<UNK>"
                inputs[info.name] = [
                    v if type(v) is str else (fill if _missing(v) else str(v))
                    for v in self._column(info.name, frame, columns)
                ]
            elif info.type == "binary":
                values = self._column(info.name, frame, columns)
                arr = np.array([_to_bool(v, info) for v in values], dtype=np.float32)
                inputs[info.name] = torch.from_numpy(arr)
            else:  # guarded at export; a hand-edited manifest could still get here
                raise BundleError(f"feature type {info.type!r} has no fast path")
        with torch.inference_mode():
            out = self._model(inputs)[self.target]
        probs = out["probabilities"].detach().cpu().numpy().astype(np.float64)
        preds = out["predictions"]
        classes = self.classes
        if isinstance(preds, torch.Tensor):
            idx = preds.detach().cpu().numpy().astype(np.int64).reshape(-1)
            labels = [classes[i] for i in idx]
        else:
            labels = [str(p) for p in preds]
        return PredictionBatch(labels=labels, probabilities=probs, classes=classes)

    def _predict_ludwig(self, frame: pd.DataFrame) -> PredictionBatch:
        names = [f.name for f in self.manifest.input_features]
        frame = frame[names].copy()
        for info in self.manifest.input_features:
            if info.type == "number":
                frame[info.name] = pd.to_numeric(frame[info.name], errors="raise").astype(float)
        preds, _ = self._model.predict(
            frame, skip_save_predictions=True, skip_save_unprocessed_output=True
        )
        target = self.target
        cols = [f"{target}_probabilities_{c}" for c in self.classes]
        missing = [c for c in cols if c not in preds.columns]
        if missing:
            raise BundleError(f"Ludwig output lacks probability columns {missing}")
        probs = preds[cols].to_numpy(dtype=np.float64)
        raw = preds[f"{target}_predictions"].tolist()
        classes = self.classes
        labels = []
        for value in raw:
            if isinstance(value, bool | np.bool_) and set(classes) != {"False", "True"}:
                labels.append(classes[int(value)])
            else:
                labels.append(str(value))
        return PredictionBatch(labels=labels, probabilities=probs, classes=classes)


def read_manifest(path: Path) -> BundleManifest:
    """Read and check `bundle.json` of a bundle folder."""
    path = Path(path)
    file = path / MANIFEST_FILE
    if not file.exists():
        raise BundleError(f"{path} is not a serving bundle (no {MANIFEST_FILE})")
    manifest = BundleManifest.model_validate_json(file.read_text(encoding="utf-8"))
    if manifest.format_version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{file}: bundle format {manifest.format_version} is newer than this code "
            f"understands ({BUNDLE_FORMAT_VERSION})"
        )
    return manifest


def load_bundle(
    path: Path,
    *,
    mode: Literal["auto", "torchscript", "ludwig"] = "auto",
    num_threads: int | None = 1,
) -> Predictor:
    """Load a bundle folder: TorchScript when it has a usable fast path, else LudwigModel."""
    path = Path(path)
    manifest = read_manifest(path)
    schema = InputSchema.model_validate_json((path / SCHEMA_FILE).read_text(encoding="utf-8"))
    if num_threads is not None:
        import torch

        torch.set_num_threads(num_threads)
    want_fast = mode == "torchscript" or (mode == "auto" and manifest.fast_path)
    if want_fast:
        if not (path / INFERENCE_FILE).exists():
            if mode == "torchscript":
                raise BundleError(f"{path} has no TorchScript fast path")
        else:
            try:
                module = _load_module(path / INFERENCE_FILE)
                return Predictor(path, manifest, schema, "torchscript", module)
            except Exception as exc:
                if mode == "torchscript":
                    raise
                log.warning("cannot load %s (%s); falling back to Ludwig", INFERENCE_FILE, exc)
    if not (path / LUDWIG_DIR).exists():
        raise BundleError(f"{path} has neither a usable {INFERENCE_FILE} nor {LUDWIG_DIR}/")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ludwig.api import LudwigModel

    model = LudwigModel.load(str(path / LUDWIG_DIR), backend="local")
    return Predictor(path, manifest, schema, "ludwig", model)
