"""Shadow tests: the evidence (labelled mirrored requests, error rates), expiry and decisions.

`evaluate_shadow` / `apply_shadow_decision` / `run_shadow_expiry` judge a shadow on the
labelled mirrored requests (champion and shadow on the same requests) and end, or extend, its
test. EXTEND_SHADOW is recorded and the expiry moved under the transition lock, so two runs
never count one extension twice; PROMOTE and REJECT go through `manager.apply_decision`.

Every function is safe to re-run after a crash and takes `now` so tests can move the clock.
Runs that find the state already moved by a concurrent run record their decision as failed
(`stale: ...`) and raise `StaleDecision`, the way `manager.apply_decision` does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mlops_assets.lifecycle.classes import canonical_label, label_map, version_classes
from mlops_assets.lifecycle.manager import StaleDecision, apply_decision
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import Actor, Alias, Decision
from mlops_assets.lifecycle.store import LifecycleStore, RoleStats, ShadowTest, as_utc
from mlops_assets.settings import Settings, format_duration, parse_duration

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle
    from mlops_assets.lifecycle.policy import ModelEvaluation

log = logging.getLogger(__name__)


def now_or_utcnow(now: datetime | None) -> datetime:
    """`now` as UTC, or the current time when it is None (tests move the clock with it)."""
    return as_utc(now) if now is not None else utcnow()


def fallback_classes(predictions: list[Any], version: str) -> list[str]:
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


def usable_rows(
    frame: pd.DataFrame, classes: list[str], prediction_cols: list[str], proba_cols: list[str]
) -> tuple[pd.DataFrame, dict[str, np.ndarray], int]:
    """Rows whose label and predictions map onto `classes` and whose probabilities are complete.

    Returns the rows (label mapped to a class), a probability matrix per proba column, and the
    number of rows dropped.
    """
    k = len(classes)
    if frame.empty:
        return frame, {c: np.empty((0, k)) for c in proba_cols}, 0
    mapping = label_map(classes)
    labels = frame["label"].map(lambda v: mapping.get(canonical_label(v)))
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
    lc: Lifecycle,
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

    now = now_or_utcnow(now)
    version = str(version)
    settings, store, name = lc.settings, lc.store, lc.model_name
    test = store.shadow_test(version, name)
    if test is None or test.status != "open":
        raise ValueError(f"{name} v{version} has no open shadow test")
    champion = lc.alias_version(Alias.CHAMPION)
    if champion is None:
        raise ValueError(f"{name} has no champion; a shadow test needs one to compare with")
    if champion == version:
        raise ValueError(f"v{version} is already the champion; its shadow test is over")

    shadow_classes = version_classes(lc, version)
    champion_classes = version_classes(lc, champion)
    if shadow_classes and champion_classes and shadow_classes != champion_classes:
        raise ValueError(
            f"v{champion} (classes {champion_classes}) and v{version} (classes "
            f"{shadow_classes}) predict different classes; they cannot be compared"
        )
    classes = shadow_classes or champion_classes
    pairs = store.labelled_pairs(champion, version, since=test.started_at, model_name=name)
    if classes is None:
        classes = fallback_classes(
            [*pairs["champion_prediction"], *pairs["shadow_prediction"]], version
        )
    pairs, probas, dropped = usable_rows(
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

    champ_stats = store.role_stats(name, champion, "champion", test.started_at)
    shadow_stats = store.role_stats(name, version, "shadow", test.started_at)
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


def reconcile_locked(lc: Lifecycle, owner: str) -> None:
    """Finish half-done registry moves and extensions under the transition lock."""
    with lc.store.transition_lock(lc.model_name, owner=owner):
        lc.registry.reconcile()
        _finish_extensions(lc)


def _finish_extensions(lc: Lifecycle) -> list[DecisionRecord]:
    """Move the expiry of every open test whose applied EXTEND_SHADOW was not carried out.

    A crash between recording an extension and moving the expiry leaves a decision whose
    `time + shadow_mode_duration` is later than the test's expiry; this completes it. The
    caller holds the transition lock.
    """
    settings, store = lc.settings, lc.store
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


def apply_shadow_decision(lc: Lifecycle, evaluation: ShadowEvaluation) -> DecisionRecord:
    """Apply a shadow decision: extend the test, or promote or reject through the manager.

    EXTEND_SHADOW is recorded (the registry makes no alias move for it) and the expiry moved to
    `decision time + shadow_mode_duration`, both under the transition lock. Applying the same
    evaluation twice returns the stored decision and counts the extension once. Raises
    StaleDecision (and records the decision as failed) when the test was ended or extended
    since the evaluation.
    """
    record = evaluation.record
    settings, store, name = lc.settings, lc.store, lc.model_name
    version = evaluation.shadow_version
    stored = store.get_decision(record.id)
    if stored is not None and stored.status == DecisionStatus.APPLIED:
        if stored.decision == Decision.EXTEND_SHADOW:
            with store.transition_lock(name, owner=f"extend-{record.id}"):
                _finish_extensions(lc)
        return stored  # a re-run of the same step

    if record.decision == Decision.EXTEND_SHADOW:
        reg = lc.registry
        with store.transition_lock(name, owner=f"extend-{record.id}"):
            reg.reconcile()
            _finish_extensions(lc)
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
        return apply_decision(lc, record)
    # Under the same lock as the move: no other run ended or extended this test meanwhile.
    return apply_decision(
        lc,
        record,
        precondition=lambda: _test_moved(store.shadow_test(version, name), evaluation.test),
    )


def expired_shadows(lc: Lifecycle, now: datetime | None = None) -> list[ShadowTest]:
    """Open shadow tests whose expiry is at or before `now` (default: the database's clock)."""
    return lc.store.expired_shadow_tests(lc.model_name, now)


def run_shadow_expiry(
    lc: Lifecycle,
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
    store = lc.store
    reconcile_locked(lc, owner="shadow-expiry")
    out: list[DecisionRecord] = []
    errors: list[Exception] = []
    # Which tests have expired is judged by the database's clock unless a time is given, so
    # callers on hosts with skewed clocks agree.
    expired = store.expired_shadow_tests(lc.model_name, now)
    now = now_or_utcnow(now)
    for test in expired:
        evaluation: ShadowEvaluation | None = None
        try:
            evaluation = evaluate_shadow(
                lc, test.version, actor=actor, dagster_run_id=dagster_run_id, now=now
            )
            out.append(apply_shadow_decision(lc, evaluation))
        except StaleDecision:
            if evaluation is not None:
                out.append(evaluation.record)
        except Exception as exc:
            log.exception("shadow test of v%s could not be ended", test.version)
            errors.append(exc)
    if errors:
        raise errors[0]
    return out
