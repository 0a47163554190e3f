"""Lifecycle automation without Dagster or Ray: labels in, shadow expiry, probation, retention.

The seed's loop (monitoring -> automated decision -> manager) as plain functions that the
Dagster sensors and schedule call:

- `ingest_label_files`: label CSVs (`request_id,label`) from `data/labels/` into the store.
  A bad file is quarantined next to a report, like a bad data file; a good one is moved to
  `data/labels/processed/<sha256[:12]>_<name>` (nothing is ever deleted). The move is the commit
  point: a crash before it re-adds the same labels (an upsert), a file whose content was already
  processed is not applied again (so it cannot undo later corrections).
- `evaluate_shadow` / `apply_shadow_decision` / `run_shadow_expiry`: judge a shadow on the
  labelled mirrored requests (champion and shadow on the same requests) and end, or extend, its
  test. EXTEND_SHADOW is recorded and the expiry moved under the transition lock, so two runs
  never count one extension twice; PROMOTE and REJECT go through `manager.apply_decision`.
- `check_probation_now` / `run_probation`: roll a new champion back when its live quality falls
  below what it was promoted on.
- `run_retention`: prune old prediction-log rows and mark old rejected runs archived.

Every function is safe to re-run after a crash and takes `now` so tests can move the clock.
Runs that find the state already moved by a concurrent run record their decision as failed
(`stale: ...`) and raise `StaleDecision`, the way `manager.apply_decision` does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, computed_field

from mlops_assets.lifecycle.manager import (
    StaleDecision,
    alias_version,
    apply_decision,
    mlflow_client,
    open_store,
    registry_for,
)
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import STATE_TAG, Actor, Alias, Decision, ModelState
from mlops_assets.lifecycle.store import (
    LifecycleStore,
    Role,
    ShadowTest,
    as_utc,
    prediction_log_table,
)
from mlops_assets.settings import Settings, format_duration, parse_duration
from mlops_assets.validation import Problem, ValidationResult, quarantine

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.policy import ModelEvaluation

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("request_id", "label")
PROCESSED_DIR = "processed"
ARCHIVED_TAG = "mlops.archived"
ARCHIVED_AT_TAG = "mlops.archived_at"
ARCHIVED_REASON_TAG = "mlops.archived_reason"
_MAX_EXAMPLES = 5
_TRUE_TOKENS = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE_TOKENS = {"false", "f", "no", "n", "0", "0.0"}


def _now(now: datetime | None) -> datetime:
    return as_utc(now) if now is not None else utcnow()


# --- label files -------------------------------------------------------------------------------


class LabelFile(BaseModel):
    """What happened to one label file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    status: Literal["ingested", "duplicate", "quarantined"]
    rows: int = 0
    accepted: int = 0
    unknown_ids: int = 0  # labels stored for requests not (yet) in the prediction log
    moved_to: str
    problems: list[Problem] = Field(default_factory=list)


class LabelIngest(BaseModel):
    """Outcome of one `ingest_label_files` pass."""

    files: list[LabelFile] = Field(default_factory=list)

    @computed_field
    @property
    def accepted(self) -> int:
        """Labels stored in this pass."""
        return sum(f.accepted for f in self.files)

    @property
    def quarantined(self) -> list[LabelFile]:
        """Files moved to quarantine."""
        return [f for f in self.files if f.status == "quarantined"]


def _canonical(value: Any) -> str:
    """A label as text; binary spellings (True, 1, 1.0, yes) collapse to `true`/`false`."""
    text = str(value).strip()
    low = text.lower()
    if low in _TRUE_TOKENS:
        return "true"
    if low in _FALSE_TOKENS:
        return "false"
    return text


def _label_map(classes: Sequence[str]) -> dict[str, str]:
    """canonical spelling -> class label, for mapping incoming labels onto a model's classes."""
    return {_canonical(c): str(c) for c in classes}


def list_label_files(labels_dir: Path) -> list[Path]:
    """CSV files waiting in the labels folder, by name (hidden files and subfolders skipped)."""
    if not labels_dir.is_dir():
        return []
    return sorted(
        p
        for p in labels_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() == ".csv"
    )


def _check_label_file(
    raw: bytes, known_classes: list[str] | None
) -> tuple[list[Problem], list[tuple[str, str]], list[str]]:
    """Problems, (request_id, label) pairs and columns of one label file."""

    def fail(check: str, message: str, examples: list[str] | None = None) -> list[Problem]:
        return [Problem(check=check, message=message, examples=examples or [])]

    if not raw:
        return fail("empty_file", "the file is empty (0 bytes)"), [], []
    try:
        text = raw.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return (
            fail(
                "encoding",
                f"not UTF-8 text: invalid byte(s) at line {line} (byte offset {exc.start}); "
                "save the file as UTF-8",
                [repr(raw[exc.start : exc.start + 8])],
            ),
            [],
            [],
        )
    if "\x00" in text:
        return fail("encoding", "NUL byte in the file: this is not a text CSV file"), [], []
    try:
        header = next(csv.reader(io.StringIO(text)), [])
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except Exception as exc:  # pandas raises several types for malformed CSV
        return fail("csv_parse", f"not a readable CSV file: {' '.join(str(exc).split())}"), [], []
    columns = [str(c).strip() for c in header]
    frame.columns = [str(c).strip() for c in frame.columns]
    problems: list[Problem] = []
    missing = [c for c in LABEL_COLUMNS if c not in columns]
    if missing:
        hint = ""
        if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
            hint = " (the file seems to use another separator; use commas)"
        problems.append(
            Problem(
                check="required_column",
                column=missing[0],
                message=f"missing column(s) {missing}; a label file has columns "
                f"request_id,label; columns found: {columns}{hint}",
            )
        )
        return problems, [], columns
    dups = sorted({c for c in columns if columns.count(c) > 1})
    if dups:
        problems.append(
            Problem(
                check="duplicate_columns",
                column=dups[0],
                message=f"column name(s) appear more than once: {dups}",
            )
        )
        return problems, [], columns
    if frame.empty:
        problems.append(Problem(check="no_data_rows", message="header but no label rows"))
        return problems, [], columns

    ids = frame["request_id"].astype(str).str.strip()
    labels = frame["label"].astype(str).str.strip()
    for column, values in (("request_id", ids), ("label", labels)):
        empty = values.index[values == ""]
        if len(empty):
            problems.append(
                Problem(
                    check="not_null",
                    column=column,
                    message=f"{len(empty)} empty value(s) in a column that must not be empty",
                    examples=[f"line {int(i) + 2}" for i in empty[:_MAX_EXAMPLES]],
                    count=len(empty),
                )
            )
    if known_classes:
        known = _label_map(known_classes)
        bad = labels.index[(labels != "") & ~labels.map(_canonical).isin(known)]
        if len(bad):
            problems.append(
                Problem(
                    check="label_classes",
                    column="label",
                    message=f"{len(bad)} label(s) are not classes of the served models "
                    f"{sorted(set(known_classes))}",
                    examples=[f"line {int(i) + 2}: {labels[i]!r}" for i in bad[:_MAX_EXAMPLES]],
                    count=len(bad),
                )
            )
    given = pd.DataFrame({"request_id": ids, "label": labels.map(_canonical)})
    given = given[(given["request_id"] != "") & (given["label"] != "")]
    conflicting = given.groupby("request_id")["label"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        problems.append(
            Problem(
                check="conflicting_labels",
                column="label",
                message=f"{len(conflicting)} request id(s) carry different labels in this file",
                examples=[str(r) for r in conflicting.index[:_MAX_EXAMPLES]],
                count=len(conflicting),
            )
        )
    items = list(zip(ids.tolist(), labels.tolist(), strict=True))
    return problems, items, columns


def _served_classes(settings: Settings, store: LifecycleStore) -> list[str] | None:
    """Classes of the champion and open shadows (None when unknown: no check then)."""
    try:
        client = mlflow_client(settings)
        versions = [alias_version(client, settings.model_name, Alias.CHAMPION)]
        versions += [t.version for t in store.open_shadow_tests(settings.model_name)]
        classes: list[str] = []
        for version in versions:
            if version is not None:
                classes += version_classes(settings, client, version) or []
    except Exception:  # the registry is down: labels are still stored, unchecked
        log.warning("cannot read the served models' classes; label values are not checked")
        return None
    return list(dict.fromkeys(classes)) or None


def _move_processed(path: Path, processed: Path, sha: str) -> Path:
    processed.mkdir(parents=True, exist_ok=True)
    dest = processed / f"{sha[:12]}_{path.name}"
    counter = 1
    while dest.exists():  # never overwrite
        dest = processed / f"{sha[:12]}_{counter}_{path.name}"
        counter += 1
    shutil.move(str(path), str(dest))
    return dest


def ingest_label_files(settings: Settings) -> LabelIngest:
    """Store the labels of every CSV in `labels_dir`; quarantine bad files, move good ones.

    Source of each label: `file:<name>`. Re-running adds nothing new: processed files have left
    the folder, and a file whose content was processed before is moved as a `duplicate` without
    being applied again.
    """
    labels_dir = settings.labels_dir
    processed = labels_dir / PROCESSED_DIR
    files = list_label_files(labels_dir)
    out = LabelIngest()
    if not files:
        return out
    store = open_store(settings)
    classes = _served_classes(settings, store)
    for path in files:
        raw = path.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        problems, items, columns = _check_label_file(raw, classes)
        if problems:
            result = ValidationResult(
                path=path, sha256=sha, ok=False, rows=len(items), columns=columns, problems=problems
            )
            moved = quarantine(result, settings.quarantine_dir)
            log.error("label file %s quarantined to %s: %s", path.name, moved, result.summary())
            out.files.append(
                LabelFile(
                    name=path.name,
                    sha256=sha,
                    status="quarantined",
                    rows=len(items),
                    moved_to=str(moved),
                    problems=problems,
                )
            )
            continue
        if _already_processed(processed, sha):
            moved = _move_processed(path, processed, sha)
            log.warning("label file %s was processed before; moved to %s unapplied", path, moved)
            out.files.append(
                LabelFile(
                    name=path.name,
                    sha256=sha,
                    status="duplicate",
                    rows=len(items),
                    moved_to=str(moved),
                )
            )
            continue
        result = store.add_labels(items, source=f"file:{path.name}")
        moved = _move_processed(path, processed, sha)
        log.info(
            "label file %s: %d labels stored (%d for requests not logged yet); moved to %s",
            path.name,
            result.accepted,
            len(result.unknown_ids),
            moved,
        )
        out.files.append(
            LabelFile(
                name=path.name,
                sha256=sha,
                status="ingested",
                rows=len(items),
                accepted=result.accepted,
                unknown_ids=len(result.unknown_ids),
                moved_to=str(moved),
            )
        )
    return out


def _already_processed(processed: Path, sha: str) -> bool:
    for candidate in processed.glob(f"{sha[:12]}_*"):
        if hashlib.sha256(candidate.read_bytes()).hexdigest() == sha:
            return True
    return False


# --- classes and evidence ----------------------------------------------------------------------


def version_classes(settings: Settings, client: MlflowClient, version: str) -> list[str] | None:
    """Class labels, in probability-column order, stored with a version (schema.json or bundle).

    None when the version has neither artifact.
    """
    mv = client.get_model_version(settings.model_name, str(version))
    for artifact, key in (("schema.json", "classes"), ("serving/bundle.json", "classes")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(mv.run_id, artifact, tmp)
            except Exception:  # not stored with this version
                continue
            try:
                classes = json.loads(Path(local).read_text(encoding="utf-8")).get(key) or []
            except (OSError, ValueError):
                continue
        if classes:
            return [str(c) for c in classes]
    return None


class RoleStats(BaseModel):
    """Requests, errors and p50 latency of one model in one role over a time window."""

    requests: int = 0
    errors: int = 0
    p50_latency_ms: float | None = None

    @computed_field
    @property
    def error_rate(self) -> float:
        """errors / requests (0.0 with no requests)."""
        return self.errors / self.requests if self.requests else 0.0


def role_stats(
    store: LifecycleStore, model_name: str, version: str, role: Role, since: datetime
) -> RoleStats:
    """Error rate and p50 latency of a version's logged predictions in one role since `since`.

    Reads two columns in SQL rather than whole `PredictionRow`s, so a long test with millions of
    logged requests stays cheap.
    """
    p = prediction_log_table
    where = (
        p.c.model_name == model_name,
        p.c.model_version == str(version),
        p.c.role == role,
        p.c.time >= as_utc(since),
    )
    with store.engine.connect() as conn:
        requests, errors = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((p.c.error.is_not(None), 1), else_=0)), 0),
            ).where(*where)
        ).one()
        latencies = (
            conn.execute(
                sa.select(p.c.latency_ms).where(
                    *where, p.c.error.is_(None), p.c.latency_ms.is_not(None)
                )
            )
            .scalars()
            .all()
        )
    p50 = float(np.median(np.asarray(latencies, dtype=float))) if latencies else None
    return RoleStats(requests=int(requests), errors=int(errors or 0), p50_latency_ms=p50)


def _fallback_classes(predictions: list[Any], version: str) -> list[str]:
    """Classes for a version that stores none: the logged predictions (binary if fewer)."""
    classes = sorted({str(p) for p in predictions})
    if len(classes) < 2:
        classes = sorted(set(classes) | {"False", "True"})
    log.warning("v%s stores no classes; using %s from the logged predictions", version, classes)
    return classes


def _proba_row(value: Any, classes: list[str]) -> list[float] | None:
    """One logged probability entry ({class: p} or a list in class order) in `classes` order."""
    if isinstance(value, dict):
        row = [value.get(c) for c in classes]
        if any(v is None for v in row):
            return None
        return [float(v) for v in row]
    if isinstance(value, list | tuple) and len(value) == len(classes):
        return [float(v) for v in value]
    return None


def _usable_rows(
    frame: pd.DataFrame, classes: list[str], prediction_cols: list[str], proba_cols: list[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """Rows whose label and predictions map onto `classes` and whose probabilities are complete.

    Returns the rows (label mapped to a class), a probability matrix per proba column, and the
    number of rows dropped.
    """
    k = len(classes)
    if frame.empty:
        return frame, {c: np.empty((0, k)) for c in proba_cols}, 0
    mapping = _label_map(classes)
    labels = frame["label"].map(lambda v: mapping.get(_canonical(v)))
    ok = labels.notna().to_numpy()
    known = set(classes)
    for col in prediction_cols:
        ok &= frame[col].astype(str).isin(known).to_numpy()
    probas: dict[str, list[list[float] | None]] = {
        col: [_proba_row(v, classes) for v in frame[col]] for col in proba_cols
    }
    for rows in probas.values():
        ok &= np.array([r is not None for r in rows], dtype=bool)
    kept = frame.loc[ok].assign(label=labels[ok])
    matrices = {
        col: np.asarray([r for r, keep in zip(rows, ok, strict=True) if keep], dtype=float).reshape(
            -1, k
        )
        for col, rows in probas.items()
    }
    dropped = int((~ok).sum())
    return kept, matrices, dropped


# --- shadow evaluation -------------------------------------------------------------------------


class ShadowEvaluation(BaseModel):
    """The decision on a shadow test plus the evidence behind it."""

    model_config = ConfigDict(extra="forbid")

    record: DecisionRecord
    test: ShadowTest  # the test as it was when evaluated (a stale check compares against it)
    champion_version: str
    shadow_version: str
    classes: list[str]
    labelled: int  # labelled requests both models answered, used for the comparison
    unusable_labelled: int = 0  # labelled pairs dropped (unknown label, missing probabilities)
    champion: RoleStats
    shadow: RoleStats
    evaluated_at: datetime

    @property
    def champion_error_rate(self) -> float:
        """The champion's error rate since the test started."""
        return self.champion.error_rate

    @property
    def shadow_error_rate(self) -> float:
        """The shadow's error rate since the test started."""
        return self.shadow.error_rate


def evaluate_shadow(
    settings: Settings,
    version: str,
    *,
    actor: Actor,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
) -> ShadowEvaluation:
    """Judge shadow `version` against the champion on the same labelled mirrored requests.

    Raises ValueError when the version has no open shadow test or there is no other champion.
    Nothing is applied: pass the result to `apply_shadow_decision`.
    """
    from mlops_assets.lifecycle.policy import ModelEvaluation, decide_shadow

    now = _now(now)
    version = str(version)
    name = settings.model_name
    store = open_store(settings)
    client = mlflow_client(settings)
    test = store.shadow_test(version, name)
    if test is None or test.status != "open":
        raise ValueError(f"{name} v{version} has no open shadow test")
    champion = alias_version(client, name, Alias.CHAMPION)
    if champion is None:
        raise ValueError(f"{name} has no champion; a shadow test needs one to compare with")
    if champion == version:
        raise ValueError(f"v{version} is already the champion; its shadow test is over")

    shadow_classes = version_classes(settings, client, version)
    champion_classes = version_classes(settings, client, champion)
    if shadow_classes and champion_classes and shadow_classes != champion_classes:
        raise ValueError(
            f"v{champion} (classes {champion_classes}) and v{version} (classes "
            f"{shadow_classes}) predict different classes; they cannot be compared"
        )
    classes = shadow_classes or champion_classes
    pairs = store.labelled_pairs(champion, version, since=test.started_at, model_name=name)
    if classes is None:
        classes = _fallback_classes(
            [*pairs["champion_prediction"], *pairs["shadow_prediction"]], version
        )
    pairs, probas, dropped = _usable_rows(
        pairs,
        classes,
        ["champion_prediction", "shadow_prediction"],
        ["champion_probabilities", "shadow_probabilities"],
    )
    if dropped:
        log.warning(
            "shadow v%s: %d labelled requests left out (label not in %s, or probabilities missing)",
            version,
            dropped,
            classes,
        )
    y_true = pairs["label"].astype(str).to_numpy()
    row_ids = pairs["request_id"].astype(str).to_numpy()

    def as_eval(v: str, role: str) -> ModelEvaluation:
        return ModelEvaluation(
            version=v,
            y_true=y_true,
            y_pred=pairs[f"{role}_prediction"].astype(str).to_numpy(),
            probabilities=probas[f"{role}_probabilities"],
            classes=classes,
            row_ids=row_ids,
        )

    champ_stats = role_stats(store, name, champion, "champion", test.started_at)
    shadow_stats = role_stats(store, name, version, "shadow", test.started_at)
    record = decide_shadow(
        as_eval(champion, "champion"),
        as_eval(version, "shadow"),
        settings.policy,
        extensions_so_far=test.extensions,
        champion_error_rate=champ_stats.error_rate,
        shadow_error_rate=shadow_stats.error_rate,
        champion_p50_latency_ms=champ_stats.p50_latency_ms,
        shadow_p50_latency_ms=shadow_stats.p50_latency_ms,
        model_name=name,
        actor=actor,
        dagster_run_id=dagster_run_id,
        seed=settings.config.data.split.seed,
    )
    record = record.model_copy(update={"time": now})
    if dropped:
        record.reasons.append(
            f"{dropped} labelled request(s) were left out: their label is not one of {classes}, "
            "or a model logged no probabilities for them."
        )
    return ShadowEvaluation(
        record=record,
        test=test,
        champion_version=champion,
        shadow_version=version,
        classes=list(classes),
        labelled=len(pairs),
        unusable_labelled=dropped,
        champion=champ_stats,
        shadow=shadow_stats,
        evaluated_at=now,
    )


def _shadow_duration(record: DecisionRecord, settings: Settings) -> timedelta:
    value = record.policy.get("shadow_mode_duration")
    return parse_duration(value) if value is not None else settings.policy.shadow_mode_duration


def _stale(store: LifecycleStore, record: DecisionRecord, why: str) -> StaleDecision:
    """Record a decision as failed because the state moved under it; return the error."""
    record.status = DecisionStatus.FAILED
    record.error = f"stale: {why}"
    record.reasons.append(record.error)
    store.record_decision(record)
    log.warning("decision %s not applied: %s", record.id, record.error)
    return StaleDecision(record.error)


def _test_moved(current: ShadowTest | None, seen: ShadowTest) -> str | None:
    """Why the shadow test is no longer the one that was evaluated, or None."""
    if current is None or current.status != "open":
        return f"the shadow test of v{seen.version} has already ended"
    if current.expires_at != seen.expires_at or current.extensions != seen.extensions:
        return (
            f"the shadow test of v{seen.version} changed since it was evaluated (now expires "
            f"{current.expires_at.isoformat()}, {current.extensions} extension(s))"
        )
    return None


def _reconcile_locked(settings: Settings, store: LifecycleStore, owner: str) -> None:
    """Finish half-done registry moves and extensions under the transition lock."""
    reg = registry_for(settings, store=store)
    with store.transition_lock(settings.model_name, owner=owner):
        reg.reconcile()
        _finish_extensions(settings, store)


def _finish_extensions(settings: Settings, store: LifecycleStore) -> list[DecisionRecord]:
    """Move the expiry of every open test whose applied EXTEND_SHADOW was not carried out.

    A crash between recording an extension and moving the expiry leaves a decision whose
    `time + shadow_mode_duration` is later than the test's expiry; this completes it. The
    caller holds the transition lock.
    """
    done = []
    for test in store.open_shadow_tests(settings.model_name):
        for rec in store.decisions(
            version=test.version,
            decision=Decision.EXTEND_SHADOW,
            model_name=settings.model_name,
            status=DecisionStatus.APPLIED,
            since=test.started_at,
            limit=1,
        ):
            if rec.challenger_version != test.version:
                continue
            target = rec.time + _shadow_duration(rec, settings)
            if target > test.expires_at:
                log.warning("finishing the extension of v%s by decision %s", test.version, rec.id)
                store.extend_shadow_test(test.version, target, model_name=settings.model_name)
                done.append(rec)
    return done


def apply_shadow_decision(settings: Settings, evaluation: ShadowEvaluation) -> DecisionRecord:
    """Apply a shadow decision: extend the test, or promote or reject through the manager.

    EXTEND_SHADOW is recorded (the registry makes no alias move for it) and the expiry moved to
    `decision time + shadow_mode_duration`, both under the transition lock. Applying the same
    evaluation twice returns the stored decision and counts the extension once. Raises
    StaleDecision (and records the decision as failed) when the test was ended or extended
    since the evaluation.
    """
    record = evaluation.record
    store = open_store(settings)
    name = settings.model_name
    version = evaluation.shadow_version
    stored = store.get_decision(record.id)
    if stored is not None and stored.status == DecisionStatus.APPLIED:
        if stored.decision == Decision.EXTEND_SHADOW:
            with store.transition_lock(name, owner=f"extend-{record.id}"):
                _finish_extensions(settings, store)
        return stored  # a re-run of the same step

    if record.decision == Decision.EXTEND_SHADOW:
        reg = registry_for(settings, store=store)
        with store.transition_lock(name, owner=f"extend-{record.id}"):
            reg.reconcile()
            _finish_extensions(settings, store)
            if stored is None:
                why = _test_moved(store.shadow_test(version, name), evaluation.test)
                if why:
                    raise _stale(store, record, why)
                until = record.time + _shadow_duration(record, settings)
                record.reasons.append(
                    f"Decision: extend the shadow test of version {version} until "
                    f"{until.isoformat(timespec='seconds')} (another "
                    f"{format_duration(_shadow_duration(record, settings))})."
                )
            applied = reg.apply(record)
            until = applied.time + _shadow_duration(applied, settings)
            test = store.extend_shadow_test(version, until, model_name=name)
        log.info(
            "shadow test of v%s extended to %s (%d extension(s))",
            version,
            test.expires_at,
            test.extensions,
        )
        return applied

    if record.decision not in (Decision.PROMOTE, Decision.REJECT):
        raise ValueError(f"{record.decision.value} is not a shadow decision")
    if stored is not None:
        return apply_decision(settings, record)
    # Under the same lock as the move: no other run ended or extended this test meanwhile.
    return apply_decision(
        settings,
        record,
        precondition=lambda: _test_moved(store.shadow_test(version, name), evaluation.test),
    )


def expired_shadows(settings: Settings, now: datetime | None = None) -> list[ShadowTest]:
    """Open shadow tests whose expiry is at or before `now`, soonest first."""
    return open_store(settings).expired_shadow_tests(settings.model_name, _now(now))


def run_shadow_expiry(
    settings: Settings,
    *,
    actor: Actor,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
) -> list[DecisionRecord]:
    """Evaluate and apply every expired shadow test; return the decisions taken.

    Reconciles first, so a crash of an earlier run is finished before anything is judged. A
    decision that turned out stale comes back with status `failed`. When one test fails with
    an error the others are still handled, then the first error is raised.
    """
    now = _now(now)
    store = open_store(settings)
    _reconcile_locked(settings, store, owner="shadow-expiry")
    out: list[DecisionRecord] = []
    errors: list[Exception] = []
    for test in store.expired_shadow_tests(settings.model_name, now):
        evaluation: ShadowEvaluation | None = None
        try:
            evaluation = evaluate_shadow(
                settings, test.version, actor=actor, dagster_run_id=dagster_run_id, now=now
            )
            out.append(apply_shadow_decision(settings, evaluation))
        except StaleDecision:
            if evaluation is not None:
                out.append(evaluation.record)
        except Exception as exc:
            log.exception("shadow test of v%s could not be ended", test.version)
            errors.append(exc)
    if errors:
        raise errors[0]
    return out


# --- probation ---------------------------------------------------------------------------------


class ProbationResult(BaseModel):
    """Whether the current champion, in probation after its promotion, should be rolled back."""

    model_config = ConfigDict(extra="forbid")

    checked_at: datetime
    champion_version: str | None = None
    previous_champion_version: str | None = None
    in_probation: bool = False
    promoted_at: datetime | None = None
    probation_ends_at: datetime | None = None
    promoting_decision_id: str | None = None
    metric: str
    evaluated_metric: float | None = None
    evaluated_source: str | None = None  # where evaluated_metric came from
    live_metric: float | None = None
    live_samples: int = 0
    live: RoleStats = Field(default_factory=RoleStats)
    rollback: bool = False
    reasons: list[str] = Field(default_factory=list)


def _promotion(
    settings: Settings, store: LifecycleStore, client: MlflowClient, champion: str
) -> tuple[datetime | None, str | None]:
    """When the champion alias last moved to `champion`, and by which decision."""
    moves = [
        m
        for m in store.alias_history(settings.model_name, Alias.CHAMPION.value)
        if m.to_version == champion
    ]
    if moves:
        return moves[-1].time, moves[-1].decision_id
    from mlops_assets.lifecycle.registry import DECISION_TAG, PROMOTED_AT_TAG

    tags = dict(client.get_model_version(settings.model_name, champion).tags or {})
    when = tags.get(PROMOTED_AT_TAG)
    return (as_utc(datetime.fromisoformat(when)) if when else None), tags.get(DECISION_TAG)


def _evaluated_metric(
    client: MlflowClient,
    settings: Settings,
    champion: str,
    metric: str,
    decision: DecisionRecord | None,
) -> tuple[float | None, str | None]:
    """The primary metric a champion was promoted on, and where it was found."""
    if decision is not None and decision.challenger_version == champion:
        value = decision.challenger_metrics.get(metric)
        if value is not None and math.isfinite(value):
            return float(value), f"decision {decision.id} ({decision.decision.value})"
    run = client.get_run(client.get_model_version(settings.model_name, champion).run_id)
    for key in (f"eval.challenger.{metric}", f"holdout.{metric}"):
        value = run.data.metrics.get(key)
        if value is not None and math.isfinite(value):
            return float(value), f"MLflow run metric {key}"
    return None, None


def check_probation_now(settings: Settings, *, now: datetime | None = None) -> ProbationResult:
    """Judge the champion's live quality during `probation_period` after its promotion.

    Only a champion that came in by PROMOTE (not BOOTSTRAP, not a ROLLBACK) and has a
    `previous-champion` to go back to is in probation. Live quality is the primary metric on
    its labelled `champion` predictions since the promotion, compared by `policy.check_probation`
    with the metric it was promoted on, together with its live error rate.
    """
    from mlops_assets.lifecycle.metrics import compute_metrics
    from mlops_assets.lifecycle.policy import check_probation

    now = _now(now)
    policy = settings.policy
    metric = policy.primary_metric
    name = settings.model_name
    store = open_store(settings)
    client = mlflow_client(settings)
    result = ProbationResult(checked_at=now, metric=metric)
    champion = alias_version(client, name, Alias.CHAMPION)
    result.champion_version = champion
    if champion is None:
        result.reasons.append("There is no champion; nothing is in probation.")
        return result
    result.previous_champion_version = alias_version(client, name, Alias.PREVIOUS_CHAMPION)
    promoted_at, decision_id = _promotion(settings, store, client, champion)
    result.promoted_at = promoted_at
    result.promoting_decision_id = decision_id
    decision = store.get_decision(decision_id) if decision_id else None
    if promoted_at is None:
        result.reasons.append(f"Champion v{champion} has no recorded promotion time.")
        return result
    result.probation_ends_at = promoted_at + policy.probation_period
    if decision is not None and decision.decision != Decision.PROMOTE:
        result.reasons.append(
            f"Champion v{champion} came in by {decision.decision.value}, not PROMOTE; it is "
            "not in probation."
        )
        return result
    if now >= result.probation_ends_at:
        result.reasons.append(
            f"Champion v{champion}'s probation ended at "
            f"{result.probation_ends_at.isoformat(timespec='seconds')}."
        )
        return result
    if result.previous_champion_version is None:
        result.reasons.append(
            f"Champion v{champion} has no previous champion to roll back to; probation is "
            "not checked."
        )
        return result
    result.in_probation = True

    evaluated, source = _evaluated_metric(client, settings, champion, metric, decision)
    result.evaluated_metric, result.evaluated_source = evaluated, source
    result.live = role_stats(store, name, champion, "champion", promoted_at)
    rows = store.labelled_predictions(champion, promoted_at, role="champion", model_name=name)
    classes = version_classes(settings, client, champion) or _fallback_classes(
        list(rows["prediction"]), champion
    )
    rows, probas, dropped = _usable_rows(rows, classes, ["prediction"], ["probabilities"])
    result.live_samples = len(rows)
    live = float("nan")
    if len(rows):
        live = compute_metrics(
            rows["label"].astype(str).to_numpy(),
            rows["prediction"].astype(str).to_numpy(),
            probas["probabilities"],
            classes,
            [metric],
        )[metric]
    result.live_metric = live if math.isfinite(live) else None
    rollback, reasons = check_probation(
        evaluated if evaluated is not None else float("nan"),
        live,
        len(rows),
        result.live.error_rate,
        policy,
        metric=metric,
    )
    if evaluated is None:
        reasons.append(f"No evaluated {metric} is recorded for v{champion}; it cannot be judged.")
    else:
        reasons.append(f"Evaluated {metric} {evaluated:.3f} comes from {source}.")
    if dropped:
        reasons.append(f"{dropped} labelled request(s) were left out (label not in {classes}).")
    result.rollback = rollback
    result.reasons = [
        f"Champion v{champion} is in probation until "
        f"{result.probation_ends_at.isoformat(timespec='seconds')}.",
        *reasons,
    ]
    return result


def run_probation(
    settings: Settings,
    *,
    actor: Actor,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
) -> DecisionRecord | None:
    """Roll the champion back to `previous-champion` when its probation check fails.

    Returns the applied ROLLBACK, or None when no rollback is needed. A re-run after the
    rollback finds the restored champion (which came in by ROLLBACK) outside probation.
    """
    now = _now(now)
    store = open_store(settings)
    _reconcile_locked(settings, store, owner="probation")
    result = check_probation_now(settings, now=now)
    if not result.rollback:
        return None
    champion, target = result.champion_version, result.previous_champion_version
    record = DecisionRecord(
        time=now,
        decision=Decision.ROLLBACK,
        actor=actor,
        model_name=settings.model_name,
        dagster_run_id=dagster_run_id,
        champion_version=champion,
        challenger_version=target,
        champion_metrics=(
            {result.metric: result.live_metric} if result.live_metric is not None else {}
        ),
        sample_size=result.live_samples,
        policy=settings.policy.model_dump(mode="json"),
        reasons=[
            *result.reasons,
            f"Decision: roll back from v{champion} to the previous champion v{target}.",
        ],
    )
    client = mlflow_client(settings)

    def champion_unchanged() -> str | None:
        current = alias_version(client, settings.model_name, Alias.CHAMPION)
        return None if current == champion else f"the champion is now v{current}, not v{champion}"

    return apply_decision(settings, record, precondition=champion_unchanged)


# --- retention ---------------------------------------------------------------------------------


class ArchivedRun(BaseModel):
    """A rejected version whose MLflow run was marked archived."""

    version: str
    run_id: str
    rejected_at: datetime


class RetentionReport(BaseModel):
    """What one retention pass pruned and marked."""

    model_config = ConfigDict(extra="forbid")

    cutoff: datetime
    kept_versions: list[str]
    predictions_deleted: int = 0
    runs_archived: list[ArchivedRun] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)


def _version_time(tags: dict[str, str], key: str, fallback_ms: int | None) -> datetime | None:
    if tags.get(key):
        try:
            return as_utc(datetime.fromisoformat(tags[key]))
        except ValueError:
            pass
    return datetime.fromtimestamp(fallback_ms / 1000, UTC) if fallback_ms else None


def run_retention(settings: Settings, *, now: datetime | None = None) -> RetentionReport:
    """Prune old prediction-log rows and mark the MLflow runs of old rejected versions archived.

    Rows older than `automation.retention` go, except those of the champion, the previous
    champion, every archived (former champion) version and every version in a shadow test,
    whatever their age. Labels left without any prediction go with them (the store does that).

    Rejected versions rejected before the cutoff are not deleted: their MLflow run and model
    version get the tag `mlops.archived=true` (with `mlops.archived_at` and a reason). That is
    reversible (delete the tag), keeps the registry consistent, and lets an operator filter or
    garbage-collect them on purpose (`tags.mlops.archived = 'true'` in a run search). A run
    shared with any non-rejected version is never marked.
    """
    from mlops_assets.lifecycle.registry import REJECTED_AT_TAG

    now = _now(now)
    cutoff = now - settings.config.automation.retention
    name = settings.model_name
    store = open_store(settings)
    client = mlflow_client(settings)
    reg = registry_for(settings, client, store)
    aliases = reg.aliases()
    versions = reg.versions()
    keep = {v for v in aliases.values()}
    keep |= {t.version for t in store.open_shadow_tests(name)}
    for mv in versions:
        state = (mv.tags or {}).get(STATE_TAG)
        if state in (ModelState.CHAMPION, ModelState.ARCHIVED, ModelState.SHADOW):
            keep.add(str(mv.version))
    deleted = store.prune_predictions(cutoff, keep)
    report = RetentionReport(
        cutoff=cutoff, kept_versions=sorted(keep, key=int), predictions_deleted=deleted
    )

    protected_runs = {
        mv.run_id
        for mv in versions
        if (mv.tags or {}).get(STATE_TAG) != ModelState.REJECTED or str(mv.version) in keep
    }
    for mv in versions:
        version = str(mv.version)
        tags = dict(mv.tags or {})
        if tags.get(STATE_TAG) != ModelState.REJECTED or version in keep:
            continue
        if tags.get(ARCHIVED_TAG) == "true":
            continue  # done on an earlier pass
        rejected_at = _version_time(tags, REJECTED_AT_TAG, mv.last_updated_timestamp)
        if rejected_at is None or rejected_at >= cutoff:
            continue
        if mv.run_id in protected_runs:
            report.skipped.append(f"v{version}: its run {mv.run_id} also backs a kept version")
            continue
        reason = (
            f"rejected at {rejected_at.isoformat(timespec='seconds')}, before the retention "
            f"cutoff {cutoff.isoformat(timespec='seconds')}"
        )
        # Run tags first, the version tag last: the version tag marks this version done.
        try:
            run_tags = client.get_run(mv.run_id).data.tags
        except Exception as exc:  # the run was deleted by hand
            report.skipped.append(f"v{version}: run {mv.run_id} cannot be read ({exc})")
            continue
        if run_tags.get(ARCHIVED_TAG) != "true":
            client.set_tag(mv.run_id, ARCHIVED_AT_TAG, now.isoformat())
            client.set_tag(mv.run_id, ARCHIVED_REASON_TAG, reason)
            client.set_tag(mv.run_id, ARCHIVED_TAG, "true")
        client.set_model_version_tag(name, version, ARCHIVED_TAG, "true")
        report.runs_archived.append(
            ArchivedRun(version=version, run_id=mv.run_id, rejected_at=rejected_at)
        )
        log.info("retention: marked the run of rejected v%s archived (%s)", version, reason)
    return report


__all__: Sequence[str] = [
    "LabelFile",
    "LabelIngest",
    "ProbationResult",
    "RetentionReport",
    "RoleStats",
    "ShadowEvaluation",
    "apply_shadow_decision",
    "check_probation_now",
    "evaluate_shadow",
    "expired_shadows",
    "ingest_label_files",
    "run_probation",
    "run_retention",
    "run_shadow_expiry",
    "version_classes",
]
