"""Retention: prune old prediction-log rows and mark the runs of old rejected versions archived.

The prediction log is pruned by age, every role and every version alike (`automation.retention`),
except the rows an open shadow test or an open probation window still reads: those windows are
`retention_windows`. `serving.prediction_log_max_rows` is the size bound a check compares
`LifecycleStore.prediction_log_stats()` with.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.shadow import now_or_utcnow
from mlops_assets.lifecycle.states import STATE_TAG, Alias, ModelState, Tag
from mlops_assets.lifecycle.store import RetentionWindow, as_utc

log = logging.getLogger(__name__)

ARCHIVED_TAG = Tag.MLOPS_ARCHIVED.value
ARCHIVED_AT_TAG = Tag.MLOPS_ARCHIVED_AT.value
ARCHIVED_REASON_TAG = Tag.MLOPS_ARCHIVED_REASON.value


class ArchivedRun(BaseModel):
    """A rejected version whose MLflow run was marked archived."""

    version: str
    run_id: str
    rejected_at: datetime


class RetentionReport(BaseModel):
    """What one retention pass pruned and marked."""

    model_config = ConfigDict(extra="forbid")

    cutoff: datetime
    kept_versions: list[str]  # versions whose MLflow runs are never marked archived
    kept_windows: list[RetentionWindow] = Field(default_factory=list)  # log rows kept past cutoff
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


def _promoted_at(lc: Lifecycle, champion: str, tags: dict[str, str]) -> datetime | None:
    """When the champion alias last moved to `champion` (the store's history, else its tag)."""
    moves = [
        m
        for m in lc.store.alias_history(lc.model_name, Alias.CHAMPION.value)
        if m.to_version == champion
    ]
    if moves:
        return moves[-1].time
    return _version_time(tags, Tag.PROMOTED_AT, None)


def retention_windows(
    lc: Lifecycle,
    now: datetime,
    *,
    aliases: dict[str, str] | None = None,
    version_tags: dict[str, dict[str, str]] | None = None,
) -> list[RetentionWindow]:
    """The prediction-log rows an open shadow test or probation window still needs.

    An open shadow test reads its shadow's rows and the champion's rows (of any version: the
    pairs join on the request) since it started. A champion whose promotion is younger than
    `probation_period` may be judged on its own `champion` rows since then (kept even when it
    came in by bootstrap or rollback and will not be judged: a few days of one role).
    """
    name, store = lc.model_name, lc.store
    windows: list[RetentionWindow] = []
    for test in store.open_shadow_tests(name):
        why = f"open shadow test of v{test.version}"
        windows.append(
            RetentionWindow(
                role="shadow",
                since=test.started_at,
                model_version=test.version,
                model_name=name,
                reason=why,
            )
        )
        windows.append(
            RetentionWindow(role="champion", since=test.started_at, model_name=name, reason=why)
        )
    aliases = lc.registry.aliases() if aliases is None else aliases
    champion = aliases.get(Alias.CHAMPION.value)
    if champion is not None:
        if version_tags is None:
            tags = dict(lc.client.get_model_version(name, champion).tags or {})
        else:
            tags = version_tags.get(champion, {})
        promoted_at = _promoted_at(lc, champion, tags)
        period = lc.settings.policy.probation_period
        if promoted_at is not None and now < promoted_at + period:
            windows.append(
                RetentionWindow(
                    role="champion",
                    since=promoted_at,
                    model_version=champion,
                    model_name=name,
                    reason=f"probation of champion v{champion} until {promoted_at + period}",
                )
            )
    return windows


def run_retention(lc: Lifecycle, *, now: datetime | None = None) -> RetentionReport:
    """Prune old prediction-log rows and mark the MLflow runs of old rejected versions archived.

    Rows older than `automation.retention` go, of every role and version (the champion's
    too), except those inside a `retention_windows` window: an open shadow test's shadow and
    champion rows since it started, a champion's rows since its promotion while its
    probation period lasts. Only this model's rows are pruned. Labels left without any
    prediction, and label conflicts, older than the cutoff go with them (the store does that).

    Rejected versions rejected before the cutoff are not deleted: their MLflow run and model
    version get the tag `mlops.archived=true` (with `mlops.archived_at` and a reason). That is
    reversible (delete the tag), keeps the registry consistent, and lets an operator filter or
    garbage-collect them on purpose (`tags.mlops.archived = 'true'` in a run search). A run
    shared with any non-rejected version (the champion, the previous champion, every archived
    former champion, every version in a shadow test) is never marked.
    """
    now = now_or_utcnow(now)
    settings, client, store, reg = lc.settings, lc.client, lc.store, lc.registry
    cutoff = now - settings.config.automation.retention
    name = settings.model_name
    aliases = reg.aliases()
    versions = reg.versions()
    keep = {v for v in aliases.values()}
    keep |= {t.version for t in store.open_shadow_tests(name)}
    for mv in versions:
        state = (mv.tags or {}).get(STATE_TAG)
        if state in (ModelState.CHAMPION, ModelState.ARCHIVED, ModelState.SHADOW):
            keep.add(str(mv.version))
    tags = {str(mv.version): dict(mv.tags or {}) for mv in versions}
    windows = retention_windows(lc, now, aliases=aliases, version_tags=tags)
    deleted = store.prune_predictions(cutoff, keep=windows, model_name=name)
    report = RetentionReport(
        cutoff=cutoff,
        kept_versions=sorted(keep, key=int),
        kept_windows=windows,
        predictions_deleted=deleted,
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
        rejected_at = _version_time(tags, Tag.REJECTED_AT, mv.last_updated_timestamp)
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
