"""Score the champion and a challenger on the challenger's holdout and reach a verdict.

Both models are scored on exactly the same rows (the challenger's stored `holdout.csv`),
through the same serving bundles the server uses, so the offline gate judges what would be
served. The verdict comes from `policy.decide_offline`; this module only gathers the evidence
and writes the report (metrics table, plots) next to the challenger's MLflow run.
"""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlops_assets.lifecycle.classes import normalise_labels
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.schema import InputSchema
from mlops_assets.lifecycle.states import Actor, Alias
from mlops_assets.lifecycle.training import BUNDLE_ARTIFACT, HOLDOUT_ARTIFACT

if TYPE_CHECKING:
    from mlops_assets.lifecycle.bundle import Predictor
    from mlops_assets.lifecycle.context import Lifecycle

log = logging.getLogger(__name__)


class ScoredModel(BaseModel):
    """One model's predictions on the shared holdout."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    version: str
    labels: np.ndarray
    probabilities: np.ndarray
    metrics: dict[str, float]
    nan_predictions: int = 0


class EvaluationResult(BaseModel):
    """The verdict on a challenger plus the evidence behind it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    record: DecisionRecord
    holdout_rows: int
    challenger_nan_predictions: int = 0
    champion_version: str | None = None
    schema_change: list[str] = []
    markdown: str = ""
    plots: dict[str, str] = {}
    report_dir: str = ""
    # True when the version was judged before: the record is that earlier decision and
    # nothing is applied again (re-running a step is safe).
    already_decided: bool = False

    def plot_markdown(self) -> str:
        """Markdown with the plots embedded inline (for Dagster metadata)."""
        parts = []
        for name, path in self.plots.items():
            data = base64.b64encode(Path(path).read_bytes()).decode()
            parts.append(f"**{name}**\n\n![{name}](data:image/png;base64,{data})")
        return "\n\n".join(parts)


def bundle_dir(lc: Lifecycle, version: str) -> Path:
    """Download (once) and return the serving bundle of a registered version."""
    settings, client = lc.settings, lc.client
    mv = client.get_model_version(settings.model_name, version)
    dest = settings.home / "cache" / "bundles" / f"{settings.model_name}-v{version}-{mv.run_id[:8]}"
    if (dest / BUNDLE_ARTIFACT / "bundle.json").exists():
        return dest / BUNDLE_ARTIFACT
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    client.download_artifacts(mv.run_id, BUNDLE_ARTIFACT, str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # atomic: a half-downloaded bundle is never used
    return dest / BUNDLE_ARTIFACT


def load_predictor(lc: Lifecycle, version: str) -> Predictor:
    """Load the serving bundle (TorchScript fast path when available) of a version."""
    from mlops_assets.lifecycle.bundle import load_bundle

    return load_bundle(bundle_dir(lc, version))


def load_holdout(lc: Lifecycle, version: str) -> pd.DataFrame:
    """The holdout rows stored with a challenger's run."""
    client = lc.client
    mv = client.get_model_version(lc.model_name, version)
    dest = lc.settings.home / "cache" / "holdouts" / mv.run_id
    path = dest / HOLDOUT_ARTIFACT
    if not path.exists():
        dest.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(mv.run_id, HOLDOUT_ARTIFACT, str(dest))
    return pd.read_csv(path)


def score(
    predictor: Predictor, holdout: pd.DataFrame, target: str, metrics: list[str], version: str
) -> ScoredModel:
    """Predict the holdout with one model and compute its metrics."""
    from mlops_assets.lifecycle.metrics import compute_metrics

    batch = predictor.predict(holdout[predictor.schema.names])
    proba = np.asarray(batch.probabilities, dtype=float)
    nan_rows = int(np.isnan(proba).any(axis=1).sum())
    classes = list(predictor.classes)
    y_true = normalise_labels(holdout[target].astype(str).to_numpy(), classes)
    labels = np.asarray(batch.labels).astype(str)
    values = compute_metrics(y_true, labels, np.nan_to_num(proba, nan=0.0), classes, metrics)
    return ScoredModel(
        version=version,
        labels=labels,
        probabilities=proba,
        metrics=values,
        nan_predictions=nan_rows,
    )


def schema_change(champion: InputSchema, challenger: InputSchema) -> list[str]:
    """Plain sentences describing how the challenger's inputs differ from the champion's."""
    changes = []
    old = {f.name: f.type for f in champion.features}
    new = {f.name: f.type for f in challenger.features}
    for name in sorted(set(old) - set(new)):
        changes.append(f"input {name!r} was removed")
    for name in sorted(set(new) - set(old)):
        changes.append(f"input {name!r} was added")
    for name in sorted(set(old) & set(new)):
        if old[name] != new[name]:
            changes.append(f"input {name!r} changed type {old[name]} -> {new[name]}")
    return changes


def evaluate_challenger(
    lc: Lifecycle,
    version: str,
    *,
    actor: Actor = Actor.CLI,
    dagster_run_id: str | None = None,
) -> EvaluationResult:
    """Score challenger `version` and the current champion on the same holdout and decide."""
    from mlops_assets.lifecycle.policy import ModelEvaluation, decide_offline
    from mlops_assets.lifecycle.report import decision_markdown, render_plots

    settings, client = lc.settings, lc.client
    target = settings.config.data.target_column
    metrics = list(settings.policy.evaluation_metrics)
    holdout = load_holdout(lc, version)
    challenger_pred = load_predictor(lc, version)
    challenger = score(challenger_pred, holdout, target, metrics, version)
    classes = list(challenger_pred.classes)
    y_true = normalise_labels(holdout[target].astype(str).to_numpy(), classes)

    row_ids = holdout["__row_id"].to_numpy() if "__row_id" in holdout.columns else None
    champion_version = lc.alias_version(Alias.CHAMPION)
    if champion_version == version:
        champion_version = None
    champion: ScoredModel | None = None
    changes: list[str] = []
    if champion_version is not None:
        champion_pred = load_predictor(lc, champion_version)
        changes = schema_change(champion_pred.schema, challenger_pred.schema)
        missing = [n for n in champion_pred.schema.names if n not in holdout.columns]
        if missing:
            raise ValueError(
                f"the champion (v{champion_version}) needs inputs {missing} that the "
                f"challenger's holdout does not have; they cannot be compared on the same rows"
            )
        champion = score(champion_pred, holdout, target, metrics, champion_version)

    def as_eval(scored: ScoredModel) -> ModelEvaluation:
        return ModelEvaluation(
            version=scored.version,
            y_true=y_true,
            y_pred=scored.labels,
            probabilities=np.nan_to_num(scored.probabilities, nan=0.0),
            metrics=scored.metrics,
            classes=classes,
            row_ids=row_ids,
        )

    record = decide_offline(
        as_eval(champion) if champion else None,
        as_eval(challenger),
        settings.policy,
        model_name=settings.model_name,
        actor=actor,
        dagster_run_id=dagster_run_id,
        seed=settings.config.data.split.seed,
    )
    if changes:
        record.reasons.append("Input schema changed: " + "; ".join(changes) + ".")

    report_dir = settings.home / "reports" / f"{settings.model_name}-v{version}"
    report_dir.mkdir(parents=True, exist_ok=True)
    labels = {f"challenger v{version}": challenger}
    if champion:
        labels = {f"champion v{champion.version}": champion, **labels}
    plots = render_plots(
        y_true,
        {k: v.probabilities for k, v in labels.items()},
        {k: v.labels for k, v in labels.items()},
        classes,
        report_dir,
    )
    markdown = decision_markdown(record)
    (report_dir / "report.md").write_text(markdown)
    (report_dir / "decision.json").write_text(record.model_dump_json(indent=2))
    run_id = client.get_model_version(settings.model_name, version).run_id
    client.log_artifacts(run_id, str(report_dir), "evaluation")
    for name, value in challenger.metrics.items():
        if np.isfinite(value):
            client.log_metric(run_id, f"eval.challenger.{name}", value)
    if champion:
        for name, value in champion.metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, f"eval.champion.{name}", value)
    return EvaluationResult(
        record=record,
        holdout_rows=len(holdout),
        challenger_nan_predictions=challenger.nan_predictions,
        champion_version=champion_version,
        schema_change=changes,
        markdown=markdown,
        plots={k: str(v) for k, v in plots.items()},
        report_dir=str(report_dir),
    )
