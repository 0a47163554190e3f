"""Crash-safe MLflow registry moves: aliases, `lifecycle.*` tags and the decision log.

`Registry.apply` runs every decision in the same order:

1. record the decision as `pending` in the lifecycle store (unless it is already there);
2. move the aliases, recording each move in `alias_history` *before* making it;
3. set the `lifecycle.state` tags (plus `decision_id`, `reasons`, timestamps) and open or close
   the version's shadow test in the store;
4. mark the decision `applied`.

Each step checks the current state first and only does what is missing, so re-running `apply`
on the same record after a crash at any point finishes the job: no duplicate alias history,
never two champions (the `champion` alias is unique by construction, and the old champion is
tagged `archived` before the new one is tagged `champion`). `reconcile` re-applies every pending
decision and then repairs stray `champion` tags.

A KEEP_CHAMPION for a candidate that passed the gate while `auto_promotion` is off leaves it a
`candidate`, not `rejected`, so that `mlops promote VERSION` stays possible; its decision tags
are still written. That is read from the record's typed checks
(`verdict.awaiting_manual_promotion`), never from the wording of its reasons; a record stored
before checks existed has none and is treated as an ordinary KEEP_CHAMPION.

Aliases are the source of truth for what is served; tags and the decision log record why.
The caller holds `LifecycleStore.transition_lock(model_name, ...)` around a decide-and-apply
(and around `reconcile`); `Registry` does not take the lock itself, so one lock spans both.
With `max_shadows == 1` (the default) there is one `challenger` alias; several shadows would
need one alias per shadow (e.g. `challenger-2`), which START_SHADOW refuses for now.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import Alias, Decision, ModelState, Tag, is_allowed_move
from mlops_assets.lifecycle.store import LifecycleStore, StoreError, as_utc, decision_content
from mlops_assets.lifecycle.verdict import awaiting_manual_promotion
from mlops_assets.settings import ChampionChallengerPolicy, parse_duration

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

REASONS_MAX_CHARS = 1000  # MLflow allows 8000 per tag value; the full reasons are in the store

# Old spelling of `Tag.ROLLED_BACK`, kept until tests/assets/test_automation.py imports `Tag`.
ROLLED_BACK_TAG = Tag.ROLLED_BACK.value


class RegistryError(RuntimeError):
    """A registry move could not be made."""


class IllegalMove(RegistryError):
    """The decision asks for a move the lifecycle contract forbids; nothing was changed."""


class RegistryConflict(RegistryError):
    """The registry changed under a half-applied decision; a person has to look at it."""


@dataclass(frozen=True)
class _TagChange:
    version: str
    state: ModelState
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class _Plan:
    """What one decision does: alias targets (None = remove) and tag changes, in order."""

    aliases: list[tuple[Alias, str | None]] = field(default_factory=list)
    tags: list[_TagChange] = field(default_factory=list)


def _truncate(text: str, limit: int = REASONS_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Registry:
    """Lifecycle moves on one registered model, recorded in the lifecycle store."""

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        store: LifecycleStore,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.store = store
        self._fault = fault or (lambda _step: None)

    # --- reading -----------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """All aliases of the model: alias -> version."""
        try:
            model = self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {str(k): str(v) for k, v in (model.aliases or {}).items()}

    def alias_version(self, alias: Alias) -> str | None:
        """The version an alias points at, or None."""
        return self.aliases().get(Alias(alias).value)

    def _version(self, version: str) -> ModelVersion:
        try:
            return self.client.get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise IllegalMove(f"{self.model_name} has no version {version}") from None
            raise

    def tags_of(self, version: str) -> dict[str, str]:
        """The tags of a model version."""
        return dict(self._version(version).tags or {})

    def state_of(self, version: str) -> ModelState | None:
        """The `lifecycle.state` tag of a version (None when it has none)."""
        value = self.tags_of(version).get(Tag.STATE)
        return ModelState(value) if value else None

    def versions(self) -> list[ModelVersion]:
        """Every version of the model, oldest first."""
        name = self.model_name.replace("'", "\\'")
        out: list[ModelVersion] = []
        token: str | None = None
        while True:
            page = self.client.search_model_versions(f"name='{name}'", page_token=token)
            out.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
        return sorted(out, key=lambda mv: int(mv.version))

    def versions_in(self, state: ModelState) -> list[str]:
        """Versions whose `lifecycle.state` tag is `state`, oldest first."""
        return [
            str(mv.version) for mv in self.versions() if (mv.tags or {}).get(Tag.STATE) == state
        ]

    def rollback_target(self) -> str | None:
        """The version a rollback restores: what `previous-champion` points at, or None."""
        return self.alias_version(Alias.PREVIOUS_CHAMPION)

    # --- simple writes -----------------------------------------------------------------------

    def set_candidate(self, version: str, tags: dict[str, str] | None = None) -> None:
        """Tag a freshly registered version `candidate`, with extra tags (lineage, metrics)."""
        state = self.state_of(version)
        if state not in (None, ModelState.CANDIDATE):
            raise IllegalMove(f"v{version} is already {state.value}; it cannot become a candidate")
        for key, value in (tags or {}).items():
            self.client.set_model_version_tag(self.model_name, str(version), key, str(value))
        self.client.set_model_version_tag(
            self.model_name, str(version), Tag.STATE, ModelState.CANDIDATE.value
        )

    # --- apply -------------------------------------------------------------------------------

    def apply(self, record: DecisionRecord) -> DecisionRecord:
        """Apply a decision crash-safely (see the module doc); return it as stored.

        Raises IllegalMove (and marks the decision failed) when the move is not allowed; any
        other error leaves it pending for `reconcile` to finish.
        """
        if record.model_name != self.model_name:
            raise RegistryError(
                f"decision {record.id} is for {record.model_name!r}, not {self.model_name!r}"
            )
        stored = self.store.get_decision(record.id)
        if stored is None:
            record = self._fill_in(record)
            stored = self.store.record_decision(
                record.model_copy(update={"status": DecisionStatus.PENDING, "error": None})
            )
        elif decision_content(stored) != decision_content(
            record.model_copy(update={"time": as_utc(record.time)})
        ):
            log.warning("decision %s: the stored record wins over the one passed in", record.id)
        if stored.status == DecisionStatus.APPLIED:
            return stored
        if stored.status != DecisionStatus.PENDING:
            raise RegistryError(
                f"decision {stored.id} is {stored.status.value}"
                + (f" ({stored.error})" if stored.error else "")
                + "; record a new decision instead"
            )
        record = stored
        self._fault("after_record")

        try:
            plan = self._plan(record)
        except IllegalMove as exc:
            if self._has_progress(record):
                raise RegistryConflict(
                    f"decision {record.id} ({record.decision.value}) was partly applied, and "
                    f"the registry has changed since: {exc}"
                ) from exc
            self.store.set_status(record.id, DecisionStatus.FAILED, str(exc))
            log.error("refused %s %s: %s", record.decision.value, record.id, exc)
            raise

        for alias, target in plan.aliases:
            self._move_alias(record, alias, target)
        self._fault("after_aliases")

        for change in plan.tags:
            self._set_tags(record, change)
        self._track_shadow_test(record)
        self._fault("after_tags")

        applied = self.store.set_status(record.id, DecisionStatus.APPLIED)
        log.info(
            "applied %s %s (champion v%s, challenger v%s)",
            record.decision.value,
            record.id,
            record.champion_version,
            record.challenger_version,
        )
        return applied

    def _fill_in(self, record: DecisionRecord) -> DecisionRecord:
        """Complete a ROLLBACK record from the registry before it is stored (once)."""
        if record.decision != Decision.ROLLBACK:
            return record
        update: dict[str, str | None] = {}
        if record.champion_version is None:
            update["champion_version"] = self.alias_version(Alias.CHAMPION)
        if record.challenger_version is None:
            update["challenger_version"] = self.rollback_target()
        return record.model_copy(update=update) if update else record

    def _has_progress(self, record: DecisionRecord) -> bool:
        if self.store.alias_history(self.model_name, decision_id=record.id):
            return True
        for version in {record.champion_version, record.challenger_version} - {None}:
            try:
                if self.tags_of(str(version)).get(Tag.DECISION_ID) == record.id:
                    return True
            except IllegalMove:  # the version does not exist
                continue
        return False

    def _state(self, version: str) -> ModelState:
        # A registered version without the tag has not been judged: a candidate.
        return self.state_of(version) or ModelState.CANDIDATE

    def _plan(self, record: DecisionRecord) -> _Plan:
        """The moves of a decision, checked against the registry; IllegalMove if not allowed.

        The checks accept both the state before the decision and the state after it, so a
        re-run after a crash at any step plans the same moves.
        """
        d = record.decision
        v = record.challenger_version
        c = record.champion_version
        aliases = self.aliases()
        champion = aliases.get(Alias.CHAMPION.value)
        challenger = aliases.get(Alias.CHALLENGER.value)
        plan = _Plan()
        when = record.time.isoformat()

        def need(version: str | None, role: str) -> str:
            if not version:
                raise IllegalMove(f"{d.value} needs the {role} version")
            self._version(version)  # exists
            return str(version)

        if d == Decision.BOOTSTRAP:
            v = need(v, "challenger")
            if champion not in (None, v):
                raise IllegalMove(f"v{champion} is already champion; use PROMOTE, not BOOTSTRAP")
            plan.aliases.append((Alias.CHAMPION, v))
            if challenger == v:
                plan.aliases.append((Alias.CHALLENGER, None))
            plan.tags.append(_TagChange(v, ModelState.CHAMPION, {Tag.PROMOTED_AT: when}))
        elif d == Decision.PROMOTE:
            v = need(v, "challenger")
            if c is not None:
                c = need(c, "champion")
            if v == c:
                raise IllegalMove(f"v{v} is both champion and challenger")
            if champion not in (c, v):
                raise IllegalMove(
                    f"the champion is v{champion}, but this decision was taken against "
                    f"v{c}; evaluate again"
                )
            if c is not None:
                plan.aliases.append((Alias.PREVIOUS_CHAMPION, c))
            plan.aliases.append((Alias.CHAMPION, v))
            if challenger == v:
                plan.aliases.append((Alias.CHALLENGER, None))
            if c is not None:
                plan.tags.append(_TagChange(c, ModelState.ARCHIVED, {Tag.ARCHIVED_AT: when}))
            plan.tags.append(_TagChange(v, ModelState.CHAMPION, {Tag.PROMOTED_AT: when}))
        elif d == Decision.START_SHADOW:
            v = need(v, "challenger")
            if champion == v:
                raise IllegalMove(f"v{v} is the champion; it cannot be its own shadow")
            if challenger not in (None, v):
                raise IllegalMove(
                    f"v{challenger} is already in a shadow test (alias challenger); end it with "
                    "PROMOTE or REJECT first (one shadow at a time)"
                )
            plan.aliases.append((Alias.CHALLENGER, v))
            plan.tags.append(_TagChange(v, ModelState.SHADOW))
        elif d == Decision.KEEP_CHAMPION and self._awaits_promotion(record, v):
            # Passed the gate, but auto_promotion is off: it stays a candidate that a person
            # can still promote (`mlops promote VERSION`); only the decision tags are written.
            v = need(v, "challenger")
            plan.tags.append(_TagChange(v, ModelState.CANDIDATE))
        elif d in (Decision.KEEP_CHAMPION, Decision.REJECT):
            v = need(v, "challenger")
            if champion == v:
                raise IllegalMove(f"v{v} is the champion; roll back or promote another instead")
            if challenger == v:
                plan.aliases.append((Alias.CHALLENGER, None))
            plan.tags.append(_TagChange(v, ModelState.REJECTED, {Tag.REJECTED_AT: when}))
        elif d == Decision.EXTEND_SHADOW:
            v = need(v, "challenger")
            if self._state(v) != ModelState.SHADOW:
                raise IllegalMove(f"v{v} is {self._state(v).value}, not in a shadow test")
        elif d == Decision.ROLLBACK:
            c = need(c, "current champion")
            p = need(v, "previous champion (rollback target)")
            if p == c:
                raise IllegalMove(f"v{p} is already the champion; nothing to roll back to")
            if champion not in (c, p):
                raise IllegalMove(
                    f"the champion is v{champion}, not v{c}; this rollback is out of date"
                )
            if self.tags_of(p).get(Tag.ROLLED_BACK) == "true":
                raise IllegalMove(
                    f"v{p} was itself rolled back from; promote it explicitly if you mean it"
                )
            plan.aliases.append((Alias.CHAMPION, p))
            plan.aliases.append((Alias.PREVIOUS_CHAMPION, self._newest_archived(exclude={c, p})))
            plan.tags.append(
                _TagChange(c, ModelState.ARCHIVED, {Tag.ARCHIVED_AT: when, Tag.ROLLED_BACK: "true"})
            )
            plan.tags.append(_TagChange(p, ModelState.CHAMPION, {Tag.PROMOTED_AT: when}))
        else:  # pragma: no cover - Decision is closed
            raise IllegalMove(f"unknown decision {d}")

        for change in plan.tags:
            src = self._state(change.version)
            if not is_allowed_move(src, change.state):
                raise IllegalMove(
                    f"{d.value} would move v{change.version} from {src.value} to "
                    f"{change.state.value}, which the lifecycle does not allow"
                )
        return plan

    def _awaits_promotion(self, record: DecisionRecord, version: str | None) -> bool:
        """A KEEP_CHAMPION whose candidate passed the gate and waits for a manual promotion.

        Decided from the record's checks (`awaiting_manual_promotion`), never its reasons.
        Only a version that is still a candidate qualifies (before and after the move, so a
        re-run after a crash plans the same); a shadow that gets KEEP_CHAMPION is rejected as
        usual, which ends its shadow test.
        """
        if not version or not awaiting_manual_promotion(record):
            return False
        try:
            return self._state(str(version)) == ModelState.CANDIDATE
        except IllegalMove:  # no such version: the plan reports it
            return True

    def _newest_archived(self, exclude: set[str]) -> str | None:
        """The most recently archived version that was not rolled back from, or None."""
        best: tuple[str, int, str] | None = None
        for mv in self.versions():
            version = str(mv.version)
            tags = mv.tags or {}
            if version in exclude or tags.get(Tag.STATE) != ModelState.ARCHIVED:
                continue
            if tags.get(Tag.ROLLED_BACK) == "true":
                continue
            key = (tags.get(Tag.ARCHIVED_AT, ""), int(version), version)
            if best is None or key > best:
                best = key
        return best[2] if best else None

    def _move_alias(self, record: DecisionRecord, alias: Alias, target: str | None) -> None:
        """Point `alias` at `target` (None: remove it), history first; a no-op when done."""
        current = self.alias_version(alias)
        done = self.store.alias_history(self.model_name, alias.value, decision_id=record.id)
        if not done:
            if current == target:
                return
            self.store.record_alias_move(
                self.model_name, alias.value, current, target, record.actor.value, record.id
            )
        elif done[0].to_version != target:
            raise RegistryConflict(
                f"decision {record.id} recorded alias {alias.value} -> {done[0].to_version}, "
                f"but now plans {target}"
            )
        if current != target:
            if target is None:
                self.client.delete_registered_model_alias(self.model_name, alias.value)
            else:
                self.client.set_registered_model_alias(self.model_name, alias.value, target)
            log.info("alias %s: v%s -> v%s (%s)", alias.value, current, target, record.id)
        self._fault(f"after_alias:{alias.value}")

    def _set_tags(self, record: DecisionRecord, change: _TagChange) -> None:
        """Set a version's state and lifecycle tags, skipping those already set."""
        extra = dict(change.extra)
        # Timestamps come from the alias history, so a re-run writes the same values.
        moved = {
            m.alias: m for m in self.store.alias_history(self.model_name, decision_id=record.id)
        }
        champion_move = moved.get(Alias.CHAMPION.value)
        if champion_move is not None:
            for key in (Tag.PROMOTED_AT, Tag.ARCHIVED_AT):
                if key in extra:
                    extra[key] = champion_move.time.isoformat()
        wanted = {**extra, Tag.STATE: change.state.value, Tag.DECISION_ID: record.id}
        if record.reasons:
            wanted[Tag.REASONS] = _truncate(" ".join(record.reasons))
        current = self.tags_of(change.version)
        if change.state == ModelState.CHAMPION and Tag.ROLLED_BACK in current:
            # Promoted again on purpose: it may be a rollback target once more later.
            self.client.delete_model_version_tag(self.model_name, change.version, Tag.ROLLED_BACK)
        # The state tag goes last: it is what marks this step done for the version.
        for key in sorted(wanted, key=lambda k: k == Tag.STATE):
            if current.get(key) != wanted[key]:
                self.client.set_model_version_tag(self.model_name, change.version, key, wanted[key])

    def _track_shadow_test(self, record: DecisionRecord) -> None:
        """Open the shadow test on START_SHADOW; close it when the version's test ends."""
        version = record.challenger_version
        if version is None:
            return
        if record.decision == Decision.START_SHADOW:
            duration = self._shadow_duration(record)
            self.store.open_shadow_test(
                self.model_name,
                version,
                expires_at=record.time + duration,
                started_at=record.time,
                decision_id=record.id,
            )
        elif record.decision in (
            Decision.PROMOTE,
            Decision.REJECT,
            Decision.KEEP_CHAMPION,
            Decision.BOOTSTRAP,
        ):
            test = self.store.shadow_test(version, self.model_name)
            if test is not None and test.status == "open":
                self.store.close_shadow_test(version, record.id, model_name=self.model_name)

    @staticmethod
    def _shadow_duration(record: DecisionRecord) -> timedelta:
        value = record.policy.get("shadow_mode_duration")
        if value is None:
            return ChampionChallengerPolicy().shadow_mode_duration
        return parse_duration(value)

    # --- repair ------------------------------------------------------------------------------

    def reconcile(self) -> list[DecisionRecord]:
        """Finish every pending decision (roll forward), then repair stray champion tags.

        Returns the decisions it applied. A decision that turns out to be illegal is marked
        failed and skipped; a half-applied one the registry contradicts raises
        RegistryConflict after the others are done.
        """
        repaired: list[DecisionRecord] = []
        conflicts: list[str] = []
        for record in self.store.pending_decisions(self.model_name):
            log.warning("reconcile: finishing pending %s %s", record.decision.value, record.id)
            try:
                repaired.append(self.apply(record))
            except IllegalMove as exc:
                log.error("reconcile: %s %s cannot be applied: %s", record.decision, record.id, exc)
            except (RegistryConflict, StoreError) as exc:
                conflicts.append(f"{record.id}: {exc}")
        self.fix_invariants()
        if conflicts:
            raise RegistryConflict("; ".join(conflicts))
        return repaired

    def fix_invariants(self) -> list[str]:
        """Make the `champion` tag agree with the `champion` alias; return what was fixed."""
        fixes: list[str] = []
        champion = self.alias_version(Alias.CHAMPION)
        now = utcnow().isoformat()
        for mv in self.versions():
            version = str(mv.version)
            state = (mv.tags or {}).get(Tag.STATE)
            if state == ModelState.CHAMPION and version != champion:
                self.client.set_model_version_tag(self.model_name, version, Tag.ARCHIVED_AT, now)
                self.client.set_model_version_tag(
                    self.model_name, version, Tag.STATE, ModelState.ARCHIVED.value
                )
                fixes.append(f"v{version} was tagged champion without the alias; now archived")
            elif version == champion and state != ModelState.CHAMPION:
                src = ModelState(state) if state else ModelState.CANDIDATE
                if is_allowed_move(src, ModelState.CHAMPION):
                    self.client.set_model_version_tag(
                        self.model_name, version, Tag.STATE, ModelState.CHAMPION.value
                    )
                    fixes.append(f"v{version} holds the champion alias; tagged champion")
                else:
                    log.error(
                        "v%s holds the champion alias but is tagged %s; fix it by hand",
                        version,
                        src.value,
                    )
        for fix in fixes:
            log.warning("reconcile: %s", fix)
        return fixes
