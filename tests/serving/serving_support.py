"""Helpers of the serving tests: a tmp registry with tiny real models, and request builders.

A module of its own (not conftest.py) so test files can import it by a unique name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from mlops_assets.datagen import generate_frame

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "churn-classifier"
ADMIN_TOKEN_ENV = "MLOPS_TEST_SERVING_ADMIN_TOKEN"
ADMIN_TOKEN = "s3cret-test-token"
MAX_BATCH = 100
MAX_BODY = 100_000
SHADOW_TIMEOUT_S = 2.0
MAX_INFLIGHT_SHADOW = 8


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def churn_frame(samples: int, seed: int, drift: bool = False) -> pd.DataFrame:
    """Churn-like rows from the project's sample-data generator."""
    return generate_frame(samples, seed=seed, drift=drift)


def write_project(root: Path, port: int) -> Path:
    """A project folder with config files pointing every store inside `root`."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    cfg["lifecycle_store"]["url"] = f"sqlite:///{root / 'lifecycle.db'}"
    cfg["champion_challenger"]["shadow_traffic_percent"] = 100
    cfg["champion_challenger"]["max_shadows"] = 1
    cfg["serving"].update(
        {
            "port": port,
            "num_cpus": 2,
            "max_batch_size": MAX_BATCH,
            "max_body_bytes": MAX_BODY,
            "shadow_timeout_s": SHADOW_TIMEOUT_S,
            "max_inflight_shadow": MAX_INFLIGHT_SHADOW,
            "admin_token_env": ADMIN_TOKEN_ENV,
            "prediction_log_flush_s": 0.2,
        }
    )
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lud = yaml.safe_load((REPO / "config" / "ludwig_config.yaml").read_text())
    lud["trainer"] = {"epochs": 2, "batch_size": 64, "eval_batch_size": 512, "learning_rate": 0.005}
    lud["combiner"]["output_size"] = 16
    (root / "config" / "ludwig_config.yaml").write_text(yaml.safe_dump(lud, sort_keys=False))
    return root / "config" / "config.yaml"


@dataclass
class Registry:
    """The tmp registry: versions by name and a client to move aliases."""

    tracking_uri: str
    client: Any
    versions: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)

    def set_alias(self, alias: str, version: str | None) -> None:
        """Point `alias` at `version`, or delete it for None."""
        if version is None:
            with contextlib.suppress(Exception):
                self.client.delete_registered_model_alias(MODEL_NAME, alias)
        else:
            self.client.set_registered_model_alias(MODEL_NAME, alias, version)


def train_bundle(workdir: Path, settings: Any, frame: pd.DataFrame, seed: int) -> Path:
    """Train a tiny LudwigModel from the project config and export its serving bundle."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(1)
    from ludwig.api import LudwigModel

    from mlops_assets.lifecycle.bundle import export_bundle
    from mlops_assets.lifecycle.schema import infer_schema

    config = settings.ludwig.to_ludwig_dict()
    names = [f["name"] for f in config["input_features"]]
    schema = infer_schema(frame, "target", features=names)
    for spec in schema.features:
        rule = settings.config.data.features.get(spec.name)
        if rule is not None:
            spec.categories = list(rule.categories) if rule.categories else spec.categories
            spec.min = rule.min if rule.min is not None else spec.min
            spec.max = rule.max if rule.max is not None else spec.max
            spec.nullable = rule.nullable
        if spec.name == "contract":
            spec.allow_unknown = False  # the contract field is closed: unknown -> 422
    model = LudwigModel(config, backend="local", logging_level=logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(workdir)
    try:
        model.train(
            training_set=frame,
            output_directory=str(workdir / "results"),
            skip_save_processed_input=True,
            skip_save_progress=True,
            skip_save_log=True,
            skip_save_model=True,
            random_seed=seed,
        )
    finally:
        os.chdir(cwd)
    schema.classes = ["False", "True"]
    return export_bundle(model, schema, workdir / "bundle")


def build_registry(root: Path, settings: Any) -> Registry:
    """Two trained versions (1: baseline, 2: drift) and a third on version 1's run."""
    import mlflow
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.digests import verify_bundle

    mlflow.set_tracking_uri(settings.tracking_uri)
    exp_id = mlflow.create_experiment("serving-tests", artifact_location=(root / "art").as_uri())
    client = MlflowClient(settings.tracking_uri)
    client.create_registered_model(MODEL_NAME)
    reg = Registry(settings.tracking_uri, client)
    digests: dict[str, str] = {}
    for key, drift, seed in (("a", False, 1), ("b", True, 2)):
        frame = churn_frame(300, seed=seed, drift=drift)
        bundle = train_bundle(root / f"train-{key}", settings, frame, seed)
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_metrics({"holdout.accuracy": 0.7 + seed / 100, "holdout.f1_score": 0.5})
            mlflow.log_artifacts(str(bundle), "serving")
        reg.runs[key] = run.info.run_id
        digests[key] = verify_bundle(bundle, None) or ""
    plan = [
        ("1", "a", "champion", "sha-a1,sha-a2"),
        ("2", "b", "shadow", "sha-b"),
        ("3", "a", "candidate", "sha-a1,sha-a2"),
    ]
    for version, run_key, state, sha in plan:
        mv = client.create_model_version(
            MODEL_NAME,
            source=f"runs:/{reg.runs[run_key]}/serving",
            run_id=reg.runs[run_key],
            tags={
                "lifecycle.state": state,
                "data.sha256": sha,
                "bundle.sha256": digests[run_key],
            },
        )
        assert str(mv.version) == version
        reg.versions[version] = run_key
    client.set_model_version_tag(MODEL_NAME, "1", "lifecycle.promoted_at", "2026-11-01T00:00:00Z")
    reg.set_alias("champion", "1")
    reg.set_alias("challenger", "2")
    return reg


@dataclass
class Server:
    """The running app and what tests need to poke it."""

    url: str
    settings: Any
    registry: Registry
    info: Any
    client: httpx.Client

    def admin_headers(self) -> dict[str, str]:
        """Authorization for /admin/*."""
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def reconfigure(self, **overrides: Any) -> dict[str, Any]:
        """Re-apply the app with test overrides (faults, shadow_traffic_percent)."""
        from serving import runner

        return runner.apply_overrides(**overrides)

    def reload(self) -> dict[str, Any]:
        """Hot-swap through the admin endpoint, as the CLI does."""
        resp = self.client.post(
            f"{self.url}/admin/reload", headers=self.admin_headers(), timeout=300
        )
        assert resp.status_code == 200, resp.text
        return resp.json()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of one metric's samples whose labels include `labels`."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.client.get(f"{self.url}/metrics").text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def store(self) -> Any:
        """The lifecycle store the app logs into."""
        from mlops_assets.lifecycle.store import LifecycleStore

        return LifecycleStore(self.settings.lifecycle_db_url)


def valid_features(i: int = 0) -> dict[str, Any]:
    """A valid /predict feature dict (varied by `i`)."""
    frame = churn_frame(50, seed=99).drop(columns=["target"])
    row = frame.iloc[i % len(frame)].to_dict()
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float) and np.isnan(value):
            out[key] = None
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.2) -> bool:
    """Poll `check` until true (no timing assertions: only a generous ceiling)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
