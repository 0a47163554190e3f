"""Train a Ludwig challenger, record it in MLflow and register it as a `candidate` version.

What one training records:
- the MLflow run: parameters (flattened Ludwig config, split, seed, rows), per-epoch metrics,
  holdout metrics, and artifacts (`ludwig_config.json`, `training_statistics.json`,
  `schema.json`, `holdout.csv`, `drift_reference.csv` (a sample of up to 5,000 training
  rows, the drift reference), the MLflow `model/` with ludwig + pyfunc flavours, and the
  serving bundle `serving/` with the TorchScript fast path);
- the registered version: tags `lifecycle.state=candidate`, `data.sha256`, `data.files`
  (every file of the training window, newest first), `data.key`, `data.window`,
  `ludwig.config_hash`, `schema.fingerprint`, `dagster.run_id`; `data_files.json` on the run
  lists each file's path, sha256 and the rows taken from it.

Training is idempotent: the same data (each file's sha256 and rows taken, `data.key`), Ludwig
config hash and seed reuse the version already registered instead of training again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlops_assets.lifecycle.classes import normalise_labels
from mlops_assets.lifecycle.schema import InputSchema, infer_schema
from mlops_assets.lifecycle.states import (
    STATE_TAG,
    ModelState,
    Tag,
    holdout_metric_key,
    holdout_metrics,
)
from mlops_assets.settings import Settings, SplitConfig

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle

log = logging.getLogger(__name__)

ROW_ID = "__row_id"
HOLDOUT_ARTIFACT = "holdout.csv"
DATA_FILES_ARTIFACT = "data_files.json"  # every file trained on: path, sha256, rows
_RUN_TAG_MAX = 8000  # MLflow's limit on a run tag's value
# A sample of the training split: the drift reference when the raw files are gone.
REFERENCE_ARTIFACT = "drift_reference.csv"
REFERENCE_MAX_ROWS = 5000
BUNDLE_ARTIFACT = "serving"
MODEL_ARTIFACT = "model"
# Registration outlives a short tracking-server outage (after MLflow's own HTTP retries):
# the trained run is not thrown away for a restart of the server.
REGISTER_ATTEMPTS = 6
REGISTER_WAIT_S = 5.0

Progress = Callable[[str], None]


class DataFile(BaseModel):
    """A validated input file: where it was, its sha256 and its row count."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int  # rows trained on (a file cut by training.max_rows gives fewer than it holds)


class TrainingOutcome(BaseModel):
    """What a training produced: the registered version and how to find everything else."""

    model_name: str
    version: str
    run_id: str
    data_files: list[DataFile]
    config_hash: str
    metrics: dict[str, float]
    schema_: InputSchema
    holdout_rows: int
    reused: bool = False
    seconds: float = 0.0

    @property
    def data_sha256(self) -> str:
        """Comma-joined sha256 of every input file (the value of the `data.sha256` tag)."""
        return ",".join(f.sha256 for f in self.data_files)


class Splits(BaseModel):
    """Train, validation and holdout frames (each keeps the `__row_id` column)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame


def split_frame(
    df: pd.DataFrame, split: SplitConfig, target: str, current_rows: int | None = None
) -> Splits:
    """Split rows by a fixed seed, stratified on the target so every split sees every class.

    With `current_rows`, the holdout comes from the first `current_rows` rows only (the file
    that triggered the training, lifecycle/window.py); the older rows go to train and
    validation in the same proportion. Without it, or when it covers every row, the split is
    the one-file split.
    """
    frame = df.reset_index(drop=True).copy()
    frame.insert(0, ROW_ID, np.arange(len(frame)))
    rng = np.random.default_rng(split.seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "holdout": []}
    n_current = len(frame) if current_rows is None else min(current_rows, len(frame))
    labels = frame[target].astype(str)
    current = labels.iloc[:n_current]
    for _, idx in sorted(current.groupby(current).indices.items()):
        idx = rng.permutation(idx)
        n_hold = max(1, round(len(idx) * split.holdout))
        n_val = round(len(idx) * split.validation)
        parts["holdout"].append(idx[:n_hold])
        parts["validation"].append(idx[n_hold : n_hold + n_val])
        parts["train"].append(idx[n_hold + n_val :])
    history = labels.iloc[n_current:]
    val_share = split.validation / (split.train + split.validation)
    for _, idx in sorted(history.groupby(history).indices.items()):
        idx = rng.permutation(idx + n_current)
        n_val = round(len(idx) * val_share)
        parts["validation"].append(idx[:n_val])
        parts["train"].append(idx[n_val:])

    def take(name: str) -> pd.DataFrame:
        idx = np.sort(np.concatenate(parts[name])) if parts[name] else np.array([], dtype=int)
        return frame.iloc[idx].reset_index(drop=True)

    return Splits(train=take("train"), validation=take("validation"), holdout=take("holdout"))


def resolve_ludwig_config(settings: Settings, frame: pd.DataFrame) -> tuple[dict, InputSchema]:
    """The Ludwig config for this data, with input features inferred when the file lists none."""
    target = settings.config.data.target_column
    config = settings.ludwig.to_ludwig_dict()
    listed = [f["name"] for f in config.get("input_features") or []]
    schema = infer_schema(
        frame.drop(columns=[ROW_ID], errors="ignore"),
        target,
        settings.config.data.max_category_cardinality,
        features=listed or None,
    )
    if listed:
        # The config decides the Ludwig types; the schema records ranges and categories.
        declared = {f["name"]: f["type"] for f in config["input_features"]}
        for spec in schema.features:
            if declared[spec.name] in ("number", "category", "binary"):
                spec.type = declared[spec.name]  # type: ignore[assignment]
    else:
        config["input_features"] = schema.ludwig_input_features()
    if not config.get("output_features"):
        config["output_features"] = [{"name": target, "type": schema.target_type}]
    rules = settings.config.data.features
    for spec in schema.features:
        rule = rules.get(spec.name)
        if rule and rule.categories:
            spec.categories = list(rule.categories)
        if rule and rule.min is not None:
            spec.min = rule.min
        if rule and rule.max is not None:
            spec.max = rule.max
    return config, schema


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value)[:500]
    else:
        out[prefix] = str(value)[:500]


def _epoch_metrics(train_stats: Any) -> list[tuple[str, float, int]]:
    """Flatten Ludwig training statistics into (key, value, epoch) triples."""
    rows: list[tuple[str, float, int]] = []
    for split_name in ("training", "validation"):
        stats = getattr(train_stats, split_name, None) or {}
        for feature, metrics in stats.items():
            for metric, values in metrics.items():
                for step, value in enumerate(values or []):
                    if isinstance(value, int | float) and np.isfinite(value):
                        rows.append((f"{split_name}.{feature}.{metric}", float(value), step))
    return rows


def _fit_run_tag(value: str) -> str:
    """`value`, or its first entries and a count when it is over a run tag's limit."""
    if len(value) <= _RUN_TAG_MAX:
        return value
    head = value[: _RUN_TAG_MAX - 40].rsplit(",", 1)[0]
    return f"{head},...(+{value.count(',') - head.count(',')} more)"


def _describe(data_files: Sequence[DataFile], window: str) -> str:
    """The version's description: which files, how many rows, which window."""
    names = [Path(f.path).name for f in data_files]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    rows = sum(f.rows for f in data_files)
    return f"Trained on {rows} rows of {shown} (window {window}); holdout from {names[0]}"


def find_existing_version(
    client: Any,
    model_name: str,
    data_sha256: str,
    config_hash: str,
    seed: int,
    data_key: str | None = None,
) -> Any | None:
    """Return a registered version trained on the same data, config and seed, if any.

    With `data_key`: the same files and rows from each. Without it: a version whose training
    the file `data_sha256` triggered (the first of its `data.sha256`), which is what
    `mlops cycle` asks of each file in data/raw/. TrackingUnreachable when MLflow does not
    answer: "down" is not "never trained", which would train the identical data again.
    """
    from mlops_assets.lifecycle.tracking import reaching, tracking_uri_of

    # An unregistered model has no versions: MLflow answers an empty list, not an error.
    with reaching(tracking_uri_of(client), f"looking for an earlier training of {model_name}"):
        versions = client.search_model_versions(f"name = '{model_name}'")
    for mv in versions:
        tags = mv.tags or {}
        shas = tags.get(Tag.DATA_SHA256) or ""
        if data_key is None:
            same_data = shas.split(",")[0] == data_sha256
        else:
            # Same files, same rows from each (a version from before windows has no key: it
            # trained on one whole file, which has the same sha256 list and no cut).
            same_data = shas == data_sha256 and tags.get(Tag.DATA_KEY, data_key) == data_key
        if (
            same_data
            and tags.get(Tag.LUDWIG_CONFIG_HASH) == config_hash
            and tags.get("training.seed") == str(seed)
        ):
            return mv
    return None


def register_version(
    client: Any, name: str, run_id: str, *, tags: dict[str, str], description: str
) -> Any:
    """Register the model of run `run_id` as a version of `name`, exactly once.

    Retried (REGISTER_ATTEMPTS, REGISTER_WAIT_S apart) while the tracking server does not
    answer; each try first looks for a version of this run, so a create whose answer was lost
    is not repeated. TrackingUnreachable when the server stays down.
    """
    from mlflow.exceptions import MlflowException

    from mlops_assets.lifecycle.tracking import missing_as_none, retry_unreachable, tracking_uri_of

    uri = tracking_uri_of(client)
    during = f"registering run {run_id} as a version of {name}"

    def attempt() -> Any:
        if missing_as_none(lambda: client.get_registered_model(name), uri, during) is None:
            try:
                client.create_registered_model(
                    name, description="Champion-challenger lifecycle (managed by mlops)"
                )
            except MlflowException as exc:  # created meanwhile by another cycle
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        for mv in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            return mv
        return client.create_model_version(
            name,
            source=f"runs:/{run_id}/{MODEL_ARTIFACT}",
            run_id=run_id,
            tags=tags,
            description=description,
        )

    return retry_unreachable(
        attempt, uri, during, attempts=REGISTER_ATTEMPTS, wait_s=REGISTER_WAIT_S
    )


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (`mlflow.start_run`, `mlflow.log_*`) at `uri` for a block.

    `mlflow.set_tracking_uri` also sets the `MLFLOW_TRACKING_URI` environment variable, which
    would leak into every later Settings in this process (another project, another test);
    this restores both afterwards.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def read_run_text(client: Any, run_id: str, path: str) -> str:
    """The text of one run artifact, read through `client` (no global MLflow state)."""
    with tempfile.TemporaryDirectory(prefix="mlops-artifact-") as tmp:
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_text(encoding="utf-8")


def ensure_experiment(settings: Settings, client: Any) -> str:
    """Create the experiment if needed (with an explicit artifact location) and return its id."""
    name = settings.config.mlflow.experiment_name
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.artifact_root.as_uri()
    return client.create_experiment(name, artifact_location=location)


def predict_frame(model: Any, frame: pd.DataFrame, classes: list[str], target: str) -> np.ndarray:
    """P(class) columns in `classes` order from `LudwigModel.predict` on `frame`."""
    preds, _ = model.predict(frame, skip_save_predictions=True, skip_save_unprocessed_output=True)
    missing = [c for c in classes if f"{target}_probabilities_{c}" not in preds.columns]
    if missing:
        raise KeyError(f"Ludwig output has no probability column for classes {missing}")
    return np.column_stack(
        [preds[f"{target}_probabilities_{c}"].to_numpy(dtype=float) for c in classes]
    )


def model_classes(model: Any, target: str) -> list[str]:
    """Class labels in the order of the model's probability outputs."""
    meta = model.training_set_metadata[target]
    if "idx2str" in meta:
        return [str(c) for c in meta["idx2str"]]
    if "bool2str" in meta:
        return [str(c) for c in meta["bool2str"]]
    return ["False", "True"]


def train_challenger(
    lc: Lifecycle,
    frame: pd.DataFrame,
    data_files: Sequence[DataFile],
    *,
    dagster_run_id: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
    current_rows: int | None = None,
    window: str = "latest",
) -> TrainingOutcome:
    """Train on `frame`, log everything to MLflow and register a `candidate` version.

    `data_files` are newest first; with `current_rows`, the holdout comes from the first
    `current_rows` rows (the triggering file, see `split_frame`). `window` is recorded.

    TrackingUnreachable (naming the tracking URI) when MLflow stops answering on the way; the
    step can then be run again as is: a finished training is found by its data, config and
    seed, a registered run is not registered twice.
    """
    from mlops_assets.lifecycle.tracking import reaching

    files = ", ".join(Path(f.path).name for f in data_files)
    with reaching(lc.settings.tracking_uri, f"training a challenger on {files}"):
        return _train_challenger(
            lc,
            frame,
            data_files,
            dagster_run_id=dagster_run_id,
            progress=progress,
            force=force,
            current_rows=current_rows,
            window=window,
        )


def _train_challenger(
    lc: Lifecycle,
    frame: pd.DataFrame,
    data_files: Sequence[DataFile],
    *,
    dagster_run_id: str | None,
    progress: Progress | None,
    force: bool,
    current_rows: int | None,
    window: str,
) -> TrainingOutcome:
    import mlflow

    from mlops_assets.lifecycle.window import data_key

    settings, client = lc.settings, lc.client
    say = progress or log.info
    started = time.monotonic()
    target = settings.config.data.target_column
    data_sha = ",".join(f.sha256 for f in data_files)
    key = data_key([(f.sha256, f.rows) for f in data_files])
    file_names = ",".join(Path(f.path).name for f in data_files)
    config_hash = settings.ludwig_config_hash()
    seed = settings.config.ludwig.random_seed
    experiment_id = ensure_experiment(settings, client)
    name = settings.model_name

    existing = (
        None if force else find_existing_version(client, name, data_sha, config_hash, seed, key)
    )
    if existing is not None:
        say(f"version {existing.version} was already trained on this data and config; reusing it")
        run = client.get_run(existing.run_id)
        schema_json = read_run_text(client, existing.run_id, "schema.json")
        metrics = holdout_metrics(run.data.metrics)
        return TrainingOutcome(
            model_name=name,
            version=str(existing.version),
            run_id=existing.run_id,
            data_files=list(data_files),
            config_hash=config_hash,
            metrics=metrics,
            schema_=InputSchema.model_validate_json(schema_json),
            holdout_rows=int(run.data.params.get("data.holdout_rows", 0)),
            reused=True,
            seconds=time.monotonic() - started,
        )

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(settings.config.ludwig.num_threads)
    say("importing Ludwig (first time in a process: ~8 s)")
    # bitsandbytes prints a CPU-only notice on stdout at import; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        from ludwig.api import LudwigModel

    config, schema = resolve_ludwig_config(settings, frame)
    splits = split_frame(frame, settings.config.data.split, target, current_rows)
    say(
        f"training on {len(splits.train)} rows (validation {len(splits.validation)}, "
        f"holdout {len(splits.holdout)} from {Path(data_files[0].path).name}) of "
        f"{len(data_files)} file(s), window {window}; {len(schema.features)} input features"
    )
    with (
        tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp,
        fluent_tracking_uri(settings.tracking_uri),
    ):
        tmpdir = Path(tmp)
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"challenger-{data_sha[:8]}",
            tags={
                "mlops.kind": "challenger",
                # A run tag holds 8,000 characters (about 120 files' sha256); the version's
                # tags and data_files.json hold the whole list.
                Tag.DATA_SHA256.value: _fit_run_tag(data_sha),
                Tag.DATA_FILES.value: _fit_run_tag(file_names),
                Tag.DATA_KEY.value: key,
                Tag.DATA_WINDOW.value: window,
                Tag.LUDWIG_CONFIG_HASH.value: config_hash,
                Tag.DAGSTER_RUN_ID.value: dagster_run_id or "",
            },
        ) as run:
            params: dict[str, str] = {}
            _flatten("ludwig", {k: config[k] for k in ("combiner", "trainer")}, params)
            params.update(
                {
                    "data.rows": str(len(frame)),
                    "data.files": str(len(data_files)),
                    "data.window": window,
                    "data.train_rows": str(len(splits.train)),
                    "data.holdout_rows": str(len(splits.holdout)),
                    "split.seed": str(settings.config.data.split.seed),
                    "training.seed": str(seed),
                    "input_features": str(len(schema.features)),
                }
            )
            mlflow.log_params(params)

            def fit(cfg: dict[str, Any]) -> tuple[Any, Any]:
                fitted = LudwigModel(cfg, logging_level=logging.WARNING, backend="local")
                cwd = Path.cwd()
                os.chdir(tmpdir)  # Ludwig drops a .lock_preprocessing file in the working dir
                try:
                    trained = fitted.train(
                        training_set=splits.train.drop(columns=[ROW_ID]),
                        validation_set=splits.validation.drop(columns=[ROW_ID])
                        if len(splits.validation)
                        else None,
                        output_directory=tempfile.mkdtemp(prefix="results-", dir=tmpdir),
                        skip_save_processed_input=True,
                        skip_save_progress=True,
                        skip_save_log=True,
                        skip_save_model=False,
                        random_seed=seed,
                    )
                finally:
                    os.chdir(cwd)
                return fitted, trained

            from mlops_assets.lifecycle.hyperopt import chosen_config_hash, fit_or_search

            model, result, config = fit_or_search(settings, config, splits, fit, experiment_id, say)
            say("training done; scoring the holdout and exporting the model")
            epoch_rows = _epoch_metrics(result.train_stats)
            if epoch_rows:
                from mlflow.entities import Metric

                now = int(time.time() * 1000)
                client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(k, v, now, s) for k, v, s in epoch_rows],
                )
            classes = model_classes(model, target)
            schema.classes = classes
            proba = predict_frame(model, splits.holdout, classes, target)
            from mlops_assets.lifecycle.metrics import compute_metrics

            y_true = splits.holdout[target].astype(str).to_numpy()
            y_true = normalise_labels(y_true, classes)
            y_pred = np.asarray(classes)[proba.argmax(axis=1)]
            metrics = compute_metrics(
                y_true, y_pred, proba, classes, settings.policy.evaluation_metrics
            )
            mlflow.log_metrics(
                {holdout_metric_key(k): v for k, v in metrics.items() if np.isfinite(v)}
            )

            (tmpdir / "ludwig_config.json").write_text(json.dumps(config, indent=2))
            (tmpdir / "training_statistics.json").write_text(
                json.dumps(
                    {
                        "training": result.train_stats.training,
                        "validation": result.train_stats.validation,
                    },
                    default=float,
                )
            )
            (tmpdir / "schema.json").write_text(schema.to_json())
            (tmpdir / DATA_FILES_ARTIFACT).write_text(
                json.dumps([f.model_dump() for f in data_files], indent=2)
            )
            splits.holdout.to_csv(tmpdir / HOLDOUT_ARTIFACT, index=False)
            reference = splits.train.drop(columns=[ROW_ID], errors="ignore")
            if len(reference) > REFERENCE_MAX_ROWS:
                reference = reference.sample(REFERENCE_MAX_ROWS, random_state=seed)
            reference.to_csv(tmpdir / REFERENCE_ARTIFACT, index=False)
            for fname in (
                "ludwig_config.json",
                "training_statistics.json",
                "schema.json",
                DATA_FILES_ARTIFACT,
                HOLDOUT_ARTIFACT,
                REFERENCE_ARTIFACT,
            ):
                mlflow.log_artifact(str(tmpdir / fname))

            from ludwig.contribs.mlflow.model import save_model

            save_model(model, path=str(tmpdir / "mlflow_model"))
            mlflow.log_artifacts(str(tmpdir / "mlflow_model"), MODEL_ARTIFACT)
            from mlops_assets.lifecycle.bundle import export_bundle
            from mlops_assets.lifecycle.digests import verify_bundle

            bundle_dir = export_bundle(model, schema, tmpdir / "bundle")
            bundle_sha = verify_bundle(bundle_dir, None) or ""
            mlflow.log_artifacts(str(bundle_dir), BUNDLE_ARTIFACT)
            run_id = run.info.run_id

    say("registering the model version")
    mv = register_version(
        client,
        name,
        run_id,
        tags={
            STATE_TAG: ModelState.CANDIDATE.value,
            Tag.DATA_SHA256.value: data_sha,
            Tag.DATA_FILES.value: file_names,
            Tag.DATA_KEY.value: key,
            Tag.DATA_WINDOW.value: window,
            Tag.LUDWIG_CONFIG_HASH.value: config_hash,
            Tag.CHOSEN_CONFIG_HASH.value: chosen_config_hash(config),
            Tag.SCHEMA_FINGERPRINT.value: schema.fingerprint(),
            Tag.BUNDLE_SHA256.value: bundle_sha,
            "training.seed": str(seed),
            Tag.DAGSTER_RUN_ID.value: dagster_run_id or "",
        },
        description=_describe(data_files, window),
    )
    seconds = time.monotonic() - started
    say(f"registered {name} version {mv.version} (run {run_id[:8]}) in {seconds:.1f} s")
    return TrainingOutcome(
        model_name=name,
        version=str(mv.version),
        run_id=run_id,
        data_files=list(data_files),
        config_hash=config_hash,
        metrics=metrics,
        schema_=schema,
        holdout_rows=len(splits.holdout),
        seconds=seconds,
    )
