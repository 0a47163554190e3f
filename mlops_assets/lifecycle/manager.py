"""Lifecycle operations shared by the Dagster assets, the CLI and the Python API.

Each takes the caller's `context.Lifecycle` (settings, MLflow client, store).

Every registry move goes through `apply_decision`: it takes the store's transition lock, runs
`reconcile` first (finishing any half-done move a crash left behind), re-checks that the
decision is still about the current champion, then applies it in the crash-safe order of
`registry.Registry.apply`. Two cycles started together therefore never make two champions or
lose a decision: the second one finds the champion moved and records its decision as failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_assets.lifecycle.context import Lifecycle, OnApplied, after_applied
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.states import STATE_TAG, Actor, Alias, Decision, Tag, holdout_metrics
from mlops_assets.settings import load_settings

if TYPE_CHECKING:
    from mlops_assets.lifecycle.evaluation import EvaluationResult
    from mlops_assets.lifecycle.store import LifecycleStore
    from mlops_assets.lifecycle.training import TrainingOutcome
    from mlops_assets.lifecycle.window import TrainingData
    from mlops_assets.validation import ValidationResult

log = logging.getLogger(__name__)


class StaleDecision(RuntimeError):
    """The champion moved between evaluation and apply; the decision was not applied."""


def reconcile(lc: Lifecycle) -> list[DecisionRecord]:
    """Finish or repair half-done registry moves; return the decisions it repaired.

    Runs under the transition lock, as every registry move does: without it, reconcile could
    re-apply a pending decision another process is applying, or rewrite tags mid-move.
    """
    with lc.store.transition_lock(lc.model_name, owner="reconcile"):
        repaired = lc.registry.reconcile()
    for rec in repaired:
        log.warning("reconciled decision %s (%s)", rec.id, rec.decision)
    return repaired


def validate_file(lc: Lifecycle, path: Path) -> tuple[ValidationResult, Path | None]:
    """Validate a raw file against config and the champion's schema; quarantine it if bad.

    Returns the result and, for a bad file, where it was moved.
    """
    from mlops_assets.quarantine import quarantine
    from mlops_assets.validation import validate_file as _validate

    reference = champion_schema(lc)
    result = _validate(path, lc.settings.config.data, reference)
    if result.ok:
        return result, None
    moved = quarantine(result, lc.settings.quarantine_dir)
    log.error(
        "%s failed validation (%d problems); moved to %s", path.name, len(result.problems), moved
    )
    return result, moved


def champion_schema(lc: Lifecycle) -> Any | None:
    """The input schema stored with the current champion, or None without a champion.

    TrackingUnreachable when MLflow does not answer: a file is never validated without the
    champion's schema because the server was down.
    """
    from mlops_assets.lifecycle.schema import InputSchema
    from mlops_assets.lifecycle.tracking import missing_as_none, reaching
    from mlops_assets.lifecycle.training import read_run_text

    version = lc.alias_version(Alias.CHAMPION)
    if version is None:
        return None
    uri = lc.settings.tracking_uri
    with reaching(uri, f"reading champion v{version} of {lc.model_name}"):
        mv = lc.client.get_model_version(lc.model_name, version)
    # None only for an old version stored without a schema, never for a server that is down.
    text = missing_as_none(
        lambda: read_run_text(lc.client, mv.run_id, "schema.json"),
        uri,
        f"reading the input schema of champion v{version}",
    )
    return None if text is None else InputSchema.model_validate_json(text)


def training_window(lc: Lifecycle, result: ValidationResult) -> TrainingData:
    """The data `training.window` gives a challenger triggered by the validated file `result`.

    The older files in `data/raw/` are validated again (config and champion schema of today),
    without being moved: one that fails now is left out, with its reason in `skipped`.
    """
    from mlops_assets.lifecycle.window import training_data
    from mlops_assets.validation import list_raw_files
    from mlops_assets.validation import validate_file as _validate

    if not result.ok or result.frame is None:
        raise ValueError(f"{result.path} did not pass validation; it cannot be trained on")
    section = lc.settings.config.training
    if section.window.kind == "latest":
        candidates: list[Path] = []
    else:
        candidates = list_raw_files(lc.settings.raw_dir)
    reference: list[Any] = []  # the champion's schema, read once and only for an older file

    def check(path: Path) -> ValidationResult:
        if not reference:
            reference.append(champion_schema(lc))
        return _validate(path, lc.settings.config.data, reference[0])

    return training_data(result, candidates, section, check)


def train(
    lc: Lifecycle,
    data: ValidationResult | TrainingData,
    *,
    dagster_run_id: str | None = None,
    force: bool = False,
) -> TrainingOutcome:
    """Train a challenger on a validated file's training window (`training_window`)."""
    from mlops_assets.lifecycle.training import DataFile, train_challenger
    from mlops_assets.validation import ValidationResult as _Validated

    if isinstance(data, _Validated):
        data = training_window(lc, data)
    files = [DataFile(path=f.path, sha256=f.sha256, rows=f.rows) for f in data.files]
    return train_challenger(
        lc,
        data.frame,
        files,
        dagster_run_id=dagster_run_id,
        force=force,
        current_rows=data.current_rows,
        window=data.window,
    )


def evaluate(
    lc: Lifecycle,
    version: str,
    *,
    actor: Actor = Actor.CLI,
    dagster_run_id: str | None = None,
) -> EvaluationResult:
    """Compare challenger `version` with the champion on the same holdout and decide.

    A version that was already judged is not judged again: the result carries the earlier
    applied decision with `already_decided=True`.
    """
    from mlops_assets.lifecycle.evaluation import EvaluationResult, evaluate_challenger
    from mlops_assets.lifecycle.states import ModelState

    settings, client = lc.settings, lc.client
    mv = client.get_model_version(settings.model_name, version)
    tags = mv.tags or {}
    state = tags.get(STATE_TAG)
    # Judged before: any state past candidate, or a candidate kept for manual promotion.
    if state not in (None, ModelState.CANDIDATE.value) or tags.get(Tag.DECISION_ID):
        prior = [
            r
            for r in lc.store.decisions(
                version=str(version), model_name=settings.model_name, limit=None
            )
            if r.challenger_version == str(version) and r.status == DecisionStatus.APPLIED
        ]
        if prior:
            report = settings.home / "reports" / f"{settings.model_name}-v{version}"
            return EvaluationResult(
                record=prior[0],
                holdout_rows=int(client.get_run(mv.run_id).data.params.get("data.holdout_rows", 0)),
                champion_version=prior[0].champion_version,
                markdown=(report / "report.md").read_text() if report.exists() else "",
                report_dir=str(report),
                already_decided=True,
            )
    return evaluate_challenger(lc, version, actor=actor, dagster_run_id=dagster_run_id)


def apply_decision(
    lc: Lifecycle,
    record: DecisionRecord,
    *,
    precondition: Callable[[], str | None] | None = None,
) -> DecisionRecord:
    """Apply a decision under the transition lock, after reconcile; refuse stale decisions.

    `precondition` runs under the same lock after reconcile; a non-None answer is the reason
    the decision is stale (it is then recorded as failed and StaleDecision raised). An applied
    decision is reported to the context's `on_applied`.
    """
    if record.status == DecisionStatus.APPLIED:
        return record  # already applied (a re-run of the same step)
    store = lc.store
    with store.transition_lock(lc.model_name, owner=f"decision-{record.id}"):
        lc.registry.reconcile()
        current = lc.alias_version(Alias.CHAMPION)
        moves_champion = record.decision in (Decision.BOOTSTRAP, Decision.PROMOTE)
        why = None
        if moves_champion and current != record.champion_version:
            why = (
                f"the champion is v{current}, but this decision was taken against "
                f"v{record.champion_version}; evaluate the challenger again"
            )
        elif precondition is not None:
            why = precondition()
        if why:
            record.status = DecisionStatus.FAILED
            record.error = f"stale: {why}"
            record.reasons.append(record.error)
            store.record_decision(record)
            raise StaleDecision(record.error)
        applied = lc.registry.apply(record)
    lc.applied(applied)
    return applied


def manual_decision(
    lc: Lifecycle,
    decision: Decision,
    version: str | None = None,
    *,
    actor: Actor = Actor.CLI,
    reason: str | None = None,
) -> DecisionRecord:
    """Build and apply a manual PROMOTE, REJECT or ROLLBACK."""
    settings = lc.settings
    champion = lc.alias_version(Alias.CHAMPION)
    if decision == Decision.ROLLBACK:
        target = lc.alias_version(Alias.PREVIOUS_CHAMPION)
        if target is None:
            raise ValueError("there is no previous champion to roll back to")
        version = target
    if version is None:
        raise ValueError(f"{decision} needs a model version")
    lc.client.get_model_version(settings.model_name, version)  # raises a clear error if unknown
    who = f"by {actor.value}"
    default = {
        Decision.PROMOTE: f"Manual promotion of v{version} {who}.",
        Decision.REJECT: f"Manual rejection of v{version} {who}.",
        Decision.ROLLBACK: f"Manual rollback from v{champion} to v{version} {who}.",
    }[decision]
    if decision == Decision.PROMOTE and champion is None:
        decision = Decision.BOOTSTRAP
    record = DecisionRecord(
        decision=decision,
        actor=actor,
        model_name=settings.model_name,
        champion_version=champion,
        challenger_version=version,
        policy=settings.policy.model_dump(mode="json"),
        reasons=[reason or default],
    )
    return apply_decision(lc, record)


def drift_summary(store: LifecycleStore, model_name: str) -> dict[str, Any] | None:
    """The latest drift result of each feature and method, as JSON data (None: never computed).

    NaN statistics become None, so the summary stays valid JSON.
    """
    import math

    rows = store.latest_drift(model_name)
    if not rows:
        return None
    newest = max(rows, key=lambda r: (r.computed_at, r.id))
    return {
        "computed_at": newest.computed_at.isoformat(),
        "data_sha256": newest.data_sha256,
        "reference_version": newest.reference_version,
        "drifted_features": list(dict.fromkeys(r.feature for r in rows if r.drifted)),
        "results": [
            {
                "feature": r.feature,
                "method": r.method,
                "statistic": None if math.isnan(r.statistic) else r.statistic,
                "p_value": r.p_value,
                "threshold": r.threshold,
                "drifted": r.drifted,
                "data_sha256": r.data_sha256,
                "reference_version": r.reference_version,
                "computed_at": r.computed_at.isoformat(),
            }
            for r in rows
        ],
    }


def status(lc: Lifecycle, *, decisions: int = 10) -> dict[str, Any]:
    """Champion, shadows, open shadow tests, the last decisions and drift, as plain JSON data."""
    settings, client, store = lc.settings, lc.client, lc.store
    name = settings.model_name

    def describe(version: str | None) -> dict[str, Any] | None:
        if version is None:
            return None
        mv = client.get_model_version(name, version)
        tags = dict(mv.tags or {})
        run = client.get_run(mv.run_id)
        return {
            "version": str(mv.version),
            "run_id": mv.run_id,
            "state": tags.get(STATE_TAG),
            "data_sha256": tags.get(Tag.DATA_SHA256),
            "data_files": tags.get(Tag.DATA_FILES),
            "promoted_at": tags.get(Tag.PROMOTED_AT),
            "metrics": holdout_metrics(run.data.metrics),
        }

    champion = lc.alias_version(Alias.CHAMPION)
    challenger = lc.alias_version(Alias.CHALLENGER)
    previous = lc.alias_version(Alias.PREVIOUS_CHAMPION)
    tests = store.open_shadow_tests(name)
    return {
        "tracking_uri": settings.tracking_uri,
        "lifecycle_store": _redact(settings.lifecycle_db_url),
        "model_name": name,
        "champion": describe(champion),
        "shadows": [d for d in [describe(challenger)] if d],
        "previous_champion": describe(previous),
        "open_shadow_tests": [t.model_dump(mode="json") for t in tests],
        "last_decisions": [
            {
                "id": r.id,
                "time": r.time.isoformat(),
                "decision": r.decision.value,
                "actor": r.actor.value,
                "status": r.status.value,
                "champion_version": r.champion_version,
                "challenger_version": r.challenger_version,
                "reasons": r.reasons,
            }
            for r in store.decisions(model_name=name, limit=decisions)
        ],
        "drift": drift_summary(store, name),
    }


def lineage(lc: Lifecycle, version: str | None = None) -> dict[str, Any]:
    """Which data files, config, MLflow run, Dagster run and decisions produced a version."""
    client, store, name = lc.client, lc.store, lc.model_name
    version = version or lc.alias_version(Alias.CHAMPION)
    if version is None:
        raise ValueError("there is no champion yet; name a version")
    mv = client.get_model_version(name, version)
    tags = dict(mv.tags or {})
    files = tags[Tag.DATA_FILES].split(",") if tags.get(Tag.DATA_FILES) else []
    shas = tags[Tag.DATA_SHA256].split(",") if tags.get(Tag.DATA_SHA256) else []
    rows = _rows_per_file(lc, mv.run_id)
    return {
        "model_name": name,
        "version": str(mv.version),
        "state": tags.get(STATE_TAG),
        "aliases": list(mv.aliases or []),
        "data_window": tags.get(Tag.DATA_WINDOW) or "latest",
        "data_files": [
            {"file": f, "sha256": s, "rows": rows.get(s)} for f, s in zip(files, shas, strict=False)
        ],
        "ludwig_config_hash": tags.get(Tag.LUDWIG_CONFIG_HASH),
        "chosen_config_hash": tags.get(Tag.CHOSEN_CONFIG_HASH),
        "schema_fingerprint": tags.get(Tag.SCHEMA_FINGERPRINT),
        "bundle_sha256": tags.get(Tag.BUNDLE_SHA256),
        "image": (
            {"ref": tags[Tag.IMAGE_REF], "digest": tags.get(Tag.IMAGE_DIGEST)}
            if tags.get(Tag.IMAGE_REF)
            else None
        ),
        "mlflow_run_id": mv.run_id,
        "dagster_run_id": tags.get(Tag.DAGSTER_RUN_ID) or None,
        "decisions": [
            {
                "id": r.id,
                "time": r.time.isoformat(),
                "decision": r.decision.value,
                "status": r.status.value,
                "dagster_run_id": r.dagster_run_id,
            }
            for r in store.decisions(version=str(mv.version), model_name=name, limit=None)
        ],
    }


def _rows_per_file(lc: Lifecycle, run_id: str) -> dict[str, int]:
    """Rows trained on per file sha256, from the run's data_files.json ({} before windows)."""
    import json

    from mlflow.exceptions import MlflowException

    from mlops_assets.lifecycle.training import DATA_FILES_ARTIFACT, read_run_text

    try:
        entries = json.loads(read_run_text(lc.client, run_id, DATA_FILES_ARTIFACT))
    # A version trained before windows has no such file.
    except (MlflowException, OSError, ValueError) as exc:
        log.debug("no %s on run %s: %s", DATA_FILES_ARTIFACT, run_id, exc)
        return {}
    return {e["sha256"]: int(e["rows"]) for e in entries}


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class ChampionChallengerManager:
    """The Python API promised by the original design: train, evaluate, status.

    It opens one lifecycle context for its lifetime (`close()` or `with` releases it). An
    applied decision asks a running server to reload unless `reload_server=False`.
    """

    def __init__(
        self, config_path: str | Path | None = None, *, reload_server: bool = True
    ) -> None:
        self.settings = load_settings(config_path)
        self.settings.ensure_dirs()
        on_applied: OnApplied | None = after_applied(self.settings) if reload_server else None
        self.lifecycle = Lifecycle.open(self.settings, on_applied=on_applied)

    def close(self) -> None:
        """Release the lifecycle store."""
        self.lifecycle.close()

    def __enter__(self) -> ChampionChallengerManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def train_challenger(self, data_path: str | Path, *, force: bool = False) -> TrainingOutcome:
        """Validate a CSV and train a challenger on it; returns the registered version."""
        result, moved = validate_file(self.lifecycle, Path(data_path))
        if not result.ok:
            raise ValueError(
                f"{data_path} failed validation and was moved to {moved}: "
                + "; ".join(p.message for p in result.problems[:3])
            )
        return train(self.lifecycle, result, force=force)

    def evaluate_challenger(self, version: str, *, apply: bool = True) -> DecisionRecord:
        """Judge a challenger against the champion; apply the decision unless `apply=False`."""
        result = evaluate(self.lifecycle, str(version), actor=Actor.API)
        if not apply:
            result.record.status = DecisionStatus.RECORDED
            return result.record
        return apply_decision(self.lifecycle, result.record)

    def get_status(self) -> dict[str, Any]:
        """Champion, shadows and the last decisions."""
        return status(self.lifecycle)

    def promote(self, version: str) -> DecisionRecord:
        """Promote a version by hand (recorded with actor `api`)."""
        return manual_decision(self.lifecycle, Decision.PROMOTE, version, actor=Actor.API)

    def rollback(self) -> DecisionRecord:
        """Restore the previous champion."""
        return manual_decision(self.lifecycle, Decision.ROLLBACK, actor=Actor.API)


__all__: Sequence[str] = [
    "ChampionChallengerManager",
    "StaleDecision",
    "apply_decision",
    "drift_summary",
    "evaluate",
    "lineage",
    "manual_decision",
    "reconcile",
    "status",
    "train",
    "validate_file",
]
