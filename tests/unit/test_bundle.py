"""The serving bundle: export, load, and TorchScript parity with LudwigModel.predict."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_assets.datagen import CATEGORICAL_COLUMNS, NUMERIC_COLUMNS, generate_frame
from mlops_assets.lifecycle.bundle import (
    INFERENCE_FILE,
    LUDWIG_DIR,
    MANIFEST_FILE,
    SCHEMA_FILE,
    BundleError,
    export_bundle,
    load_bundle,
    read_manifest,
)
from mlops_assets.lifecycle.schema import infer_schema

pytestmark = pytest.mark.slow


def churn_frame(samples: int, seed: int) -> pd.DataFrame:
    """Sample churn data plus two binary inputs (strings yes/no and Python bools)."""
    frame = generate_frame(samples, seed=seed)
    rng = np.random.default_rng(seed + 1)
    frame["paperless"] = rng.choice(["yes", "no"], samples)
    frame["has_partner"] = rng.random(samples) < 0.4
    return frame


def ludwig_config(binary_target: bool = True) -> dict[str, Any]:
    """A tiny ECD config over every input type the fast path supports."""
    return {
        "model_type": "ecd",
        "input_features": [{"name": c, "type": "number"} for c in NUMERIC_COLUMNS]
        + [{"name": c, "type": "category"} for c in CATEGORICAL_COLUMNS]
        + [{"name": "paperless", "type": "binary"}, {"name": "has_partner", "type": "binary"}],
        "output_features": [
            {"name": "target", "type": "binary"}
            if binary_target
            else {"name": "contract_out", "type": "category"}
        ],
        "combiner": {"type": "concat", "output_size": 16},
        "trainer": {"epochs": 2, "batch_size": 64, "eval_batch_size": 512, "learning_rate": 0.005},
    }


def train(tmp: Path, frame: pd.DataFrame, config: dict[str, Any]) -> Any:
    """Train a LudwigModel on the local backend with all output inside `tmp`."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(1)
    from ludwig.api import LudwigModel

    model = LudwigModel(config, backend="local", logging_level=logging.WARNING)
    cwd = Path.cwd()
    os.chdir(tmp)  # Ludwig leaves a .lock_preprocessing file in the working directory
    try:
        model.train(
            training_set=frame,
            output_directory=str(tmp / "results"),
            skip_save_processed_input=True,
            skip_save_progress=True,
            skip_save_log=True,
            skip_save_model=True,
            random_seed=7,
        )
    finally:
        os.chdir(cwd)
    return model


def ludwig_probabilities(model: Any, frame: pd.DataFrame, target: str, classes: list[str]):
    """Labels and P(class) columns from LudwigModel.predict, the reference."""
    preds, _ = model.predict(frame, skip_save_predictions=True, skip_save_unprocessed_output=True)
    probs = preds[[f"{target}_probabilities_{c}" for c in classes]].to_numpy(dtype=float)
    labels = [str(v) for v in preds[f"{target}_predictions"]]
    return labels, probs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny binary-target model and its exported bundle."""
    tmp = tmp_path_factory.mktemp("bundle")
    frame = churn_frame(400, seed=3)
    model = train(tmp, frame, ludwig_config())
    schema = infer_schema(
        frame,
        "target",
        features=[*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS, "paperless", "has_partner"],
    )
    bundle = export_bundle(model, schema, tmp / "bundle")
    return {"model": model, "schema": schema, "bundle": bundle, "tmp": tmp}


def eval_frame() -> pd.DataFrame:
    """Fresh rows plus the awkward cases: missing numbers, missing and unseen categories."""
    frame = churn_frame(2000, seed=11).drop(columns=["target"])
    frame.loc[0:9, "age"] = np.nan
    frame.loc[10:19, "contract"] = None
    frame.loc[20:29, "region"] = "atlantis"
    frame.loc[30:39, "paperless"] = None
    return frame.reset_index(drop=True)


def test_bundle_files_and_manifest(trained: dict[str, Any]) -> None:
    bundle: Path = trained["bundle"]
    for name in (INFERENCE_FILE, SCHEMA_FILE, MANIFEST_FILE, LUDWIG_DIR):
        assert (bundle / name).exists(), name
    manifest = read_manifest(bundle)
    assert manifest.fast_path is True, manifest.fast_path_error
    assert manifest.target == "target"
    assert manifest.classes == ["False", "True"]
    assert {f.name: f.type for f in manifest.input_features}["paperless"] == "binary"
    assert json.loads((bundle / SCHEMA_FILE).read_text())["target"] == "target"


def test_torchscript_matches_ludwig_predict(trained: dict[str, Any]) -> None:
    predictor = load_bundle(trained["bundle"])
    assert predictor.mode == "torchscript"
    frame = eval_frame()
    fast = predictor.predict(frame)
    labels, probs = ludwig_probabilities(trained["model"], frame, "target", predictor.classes)
    assert fast.probabilities.shape == (len(frame), 2)
    same = np.mean(np.asarray(fast.labels) == np.asarray(labels))
    assert same >= 0.999
    assert np.max(np.abs(fast.probabilities - probs)) <= 1e-5
    # Records (the server's input) give the same answer as the frame.
    records = frame.head(50).astype(object).where(frame.head(50).notna(), None)
    as_records = predictor.predict(records.to_dict(orient="records"))
    assert as_records.labels == fast.labels[:50]
    assert np.allclose(as_records.probabilities, fast.probabilities[:50], atol=1e-7)


def test_ludwig_fallback_matches_fast_path(trained: dict[str, Any]) -> None:
    fast = load_bundle(trained["bundle"])
    slow = load_bundle(trained["bundle"], mode="ludwig")
    assert slow.mode == "ludwig"
    frame = eval_frame().head(300)
    a, b = fast.predict(frame), slow.predict(frame)
    assert np.mean(np.asarray(a.labels) == np.asarray(b.labels)) >= 0.999
    assert np.max(np.abs(a.probabilities - b.probabilities)) <= 1e-5
    assert len(slow.predict([])) == 0


def test_torchscript_mode_never_imports_ludwig(trained: dict[str, Any]) -> None:
    code = (
        "import sys, json\n"
        "from mlops_assets.lifecycle.bundle import load_bundle\n"
        f"p = load_bundle({str(trained['bundle'])!r})\n"
        "row = {f.name: f.min if f.type == 'number' else (f.categories or ['yes'])[0]"
        " for f in p.schema.features}\n"
        "row['has_partner'] = True\n"
        "out = p.predict([row])\n"
        "print(json.dumps([p.mode, out.labels, 'ludwig' in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    mode, labels, imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert mode == "torchscript"
    assert labels[0] in ("False", "True")
    assert imported is False


def test_category_target_classes_follow_probability_columns(
    tmp_path: Path, trained: dict[str, Any]
) -> None:
    frame = churn_frame(300, seed=5)
    frame["contract_out"] = frame["contract"]
    config = ludwig_config(binary_target=False)
    config["input_features"] = [f for f in config["input_features"] if f["name"] != "contract"]
    model = train(tmp_path, frame, config)
    names = [f["name"] for f in config["input_features"]]
    schema = infer_schema(frame, "contract_out", features=names)
    predictor = load_bundle(export_bundle(model, schema, tmp_path / "bundle"))
    assert predictor.mode == "torchscript"
    test = churn_frame(500, seed=9)
    out = predictor.predict(test)
    labels, probs = ludwig_probabilities(model, test, "contract_out", predictor.classes)
    assert out.labels == labels
    assert np.max(np.abs(out.probabilities - probs)) <= 1e-5
    best = np.asarray(predictor.classes)[out.probabilities.argmax(axis=1)]
    assert list(best) == out.labels


def test_failed_torchscript_export_keeps_the_ludwig_fallback(
    tmp_path: Path, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained["model"]

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("feature type not scriptable")

    # Fault injection: stands in for a feature type TorchScript cannot compile.
    monkeypatch.setattr(model, "to_torchscript", refuse)
    bundle = export_bundle(model, trained["schema"], tmp_path / "bundle")
    manifest = read_manifest(bundle)
    assert manifest.fast_path is False
    assert "not scriptable" in (manifest.fast_path_error or "")
    assert not (bundle / INFERENCE_FILE).exists()
    predictor = load_bundle(bundle)
    assert predictor.mode == "ludwig"
    assert len(predictor.predict(eval_frame().head(5))) == 5
    with pytest.raises(BundleError):
        load_bundle(bundle, mode="torchscript")


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        load_bundle(tmp_path)
