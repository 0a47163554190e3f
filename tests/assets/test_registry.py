"""Registry moves on a real MLflow registry (SQLite backend, file artifacts in tmp_path)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from mlflow import MlflowClient
from verdict_scenarios import pair, policy, reword_every_template

from mlops_assets.lifecycle.policy import decide_offline, decide_shadow
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.registry import IllegalMove, Registry, RegistryError
from mlops_assets.lifecycle.states import Actor, Alias, Decision, ModelState, Tag
from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.lifecycle.verdict import Check, CheckName, awaiting_manual_promotion, check
from mlops_assets.settings import ChampionChallengerPolicy

ACTOR = Actor.SCHEDULE


class Crash(Exception):
    """A simulated crash between two steps of apply."""


class FlakyClient(MlflowClient):
    """A real MlflowClient that dies once when a chosen tag is written."""

    crash_on: tuple[str, str, str] | None = None

    def set_model_version_tag(self, name, version=None, key=None, value=None, stage=None):
        if self.crash_on == (str(version), key, value):
            self.crash_on = None
            raise Crash(f"crash while tagging v{version} {key}={value}")
        return super().set_model_version_tag(name, version, key, value, stage)


@dataclass
class Env:
    client: FlakyClient
    name: str
    store: LifecycleStore
    new_version: Callable[[], str]

    def registry(self, fault: Callable[[str], None] | None = None) -> Registry:
        return Registry(self.client, self.name, self.store, fault=fault)

    def record(
        self,
        kind: Decision,
        challenger: str | None = None,
        champion: str | None = None,
        **kw,
    ) -> DecisionRecord:
        return DecisionRecord(
            decision=kind,
            actor=kw.pop("actor", Actor.SCHEDULE),
            model_name=self.name,
            champion_version=champion,
            challenger_version=challenger,
            policy={"shadow_mode_duration": "90s"},
            reasons=[f"{kind.value} in a test."],
            **kw,
        )

    def aliases(self) -> dict[str, str]:
        model = self.client.get_registered_model(self.name)
        return {k: str(v) for k, v in model.aliases.items()}

    def states(self) -> dict[str, str | None]:
        out = {}
        for mv in self.client.search_model_versions(f"name='{self.name}'"):
            out[str(mv.version)] = (mv.tags or {}).get(Tag.STATE)
        return out

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)

    def champions_tagged(self) -> list[str]:
        return [v for v, s in self.states().items() if s == ModelState.CHAMPION]

    def history(self, decision_id: str | None = None) -> list[tuple[str, str | None, str | None]]:
        moves = self.store.alias_history(self.name, decision_id=decision_id)
        return [(m.alias, m.from_version, m.to_version) for m in moves]


@pytest.fixture(scope="module")
def mlflow_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """One MLflow SQLite store for the module (creating its schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("registry-tests", artifact_location=(root / "art").as_uri())
    run = client.create_run(exp)
    src = root / "src" / "model"
    src.mkdir(parents=True)
    (src / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(run.info.run_id, str(src), "model")
    client.set_terminated(run.info.run_id)
    return uri, run.info.run_id, f"{run.info.artifact_uri}/model"


@pytest.fixture
def env(mlflow_setup: tuple[str, str, str], tmp_path: Path):
    uri, run_id, source = mlflow_setup
    client = FlakyClient(tracking_uri=uri, registry_uri=uri)
    name = f"churn-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)

    def new_version() -> str:
        return str(client.create_model_version(name, source, run_id).version)

    store = LifecycleStore(f"sqlite:///{tmp_path / 'lifecycle.db'}")
    yield Env(client, name, store, new_version)
    store.close()


def bootstrap(env: Env) -> str:
    v1 = env.new_version()
    env.registry().set_candidate(v1, {"data.sha256": "abc"})
    env.registry().apply(env.record(Decision.BOOTSTRAP, challenger=v1))
    return v1


def shadow(env: Env, champion: str) -> str:
    v = env.new_version()
    env.registry().set_candidate(v, {})
    env.registry().apply(env.record(Decision.START_SHADOW, challenger=v, champion=champion))
    return v


# --- each decision's moves -------------------------------------------------------------------


def test_candidate_tags_and_untagged_versions(env: Env):
    reg = env.registry()
    v = env.new_version()
    assert reg.state_of(v) is None
    reg.set_candidate(v, {"data.sha256": "abc", "ludwig.config_hash": "def"})
    assert reg.state_of(v) == ModelState.CANDIDATE
    assert env.tags(v)["data.sha256"] == "abc"
    assert reg.alias_version(Alias.CHAMPION) is None
    assert reg.rollback_target() is None


def test_bootstrap_makes_the_first_champion(env: Env):
    reg = env.registry()
    v1 = env.new_version()
    reg.set_candidate(v1, {})
    applied = reg.apply(env.record(Decision.BOOTSTRAP, challenger=v1))
    assert applied.status == DecisionStatus.APPLIED
    assert env.aliases() == {"champion": v1}
    tags = env.tags(v1)
    assert tags[Tag.STATE] == "champion"
    assert tags[Tag.DECISION_ID] == applied.id
    assert tags[Tag.REASONS] == "BOOTSTRAP in a test."
    assert tags[Tag.PROMOTED_AT] == env.store.alias_history(env.name)[0].time.isoformat()
    assert env.history(applied.id) == [("champion", None, v1)]
    with pytest.raises(IllegalMove, match="cannot become a candidate"):
        reg.set_candidate(v1, {})


def test_start_shadow_then_promote(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.set_candidate(v2, {})
    start = reg.apply(env.record(Decision.START_SHADOW, challenger=v2, champion=v1))
    assert env.aliases() == {"champion": v1, "challenger": v2}
    assert reg.state_of(v2) == ModelState.SHADOW
    test = env.store.shadow_test(v2, env.name)
    assert test.status == "open" and test.opened_by == start.id
    assert test.expires_at == start.time + timedelta(seconds=90)

    promote = reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    assert promote.status == DecisionStatus.APPLIED
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert env.states() == {v1: "archived", v2: "champion"}
    assert Tag.ARCHIVED_AT in env.tags(v1)
    assert env.tags(v2)[Tag.PROMOTED_AT] == env.tags(v1)[Tag.ARCHIVED_AT]
    assert env.history(promote.id) == [
        ("previous-champion", None, v1),
        ("champion", v1, v2),
        ("challenger", v2, None),
    ]
    closed = env.store.shadow_test(v2, env.name)
    assert (closed.status, closed.decision_id) == ("closed", promote.id)
    assert reg.rollback_target() == v1


def test_direct_promotion_of_a_candidate(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.set_candidate(v2, {})
    reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert env.champions_tagged() == [v2]


@pytest.mark.parametrize("kind", [Decision.KEEP_CHAMPION, Decision.REJECT])
def test_keep_champion_and_reject_end_a_shadow_test(env: Env, kind: Decision):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    rec = reg.apply(env.record(kind, challenger=v2, champion=v1))
    assert env.aliases() == {"champion": v1}
    assert env.states() == {v1: "champion", v2: "rejected"}
    assert env.tags(v2)[Tag.DECISION_ID] == rec.id
    assert env.store.shadow_test(v2, env.name).status == "closed"
    # A candidate rejected at the offline gate never had the challenger alias.
    v3 = env.new_version()
    reg.set_candidate(v3, {})
    rec3 = reg.apply(env.record(kind, challenger=v3, champion=v1))
    assert reg.state_of(v3) == ModelState.REJECTED
    assert env.history(rec3.id) == []
    assert env.store.shadow_test(v3, env.name) is None


def test_extend_shadow_moves_nothing(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    before = (env.aliases(), env.states(), env.tags(v2))
    rec = reg.apply(env.record(Decision.EXTEND_SHADOW, challenger=v2, champion=v1))
    assert rec.status == DecisionStatus.APPLIED
    assert (env.aliases(), env.states(), env.tags(v2)) == before
    assert env.history(rec.id) == []


def test_promote_then_rollback_round_trip(env: Env):
    reg = env.registry()
    t_start = utcnow()
    v1 = bootstrap(env)
    t_bootstrapped = utcnow()
    v2 = shadow(env, v1)
    reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    t_promoted = utcnow()
    assert reg.rollback_target() == v1

    rollback = reg.apply(env.record(Decision.ROLLBACK, challenger=v1, champion=v2, actor=Actor.CLI))
    t_rolled_back = utcnow()
    assert rollback.status == DecisionStatus.APPLIED
    assert env.aliases() == {"champion": v1}
    assert env.states() == {v1: "champion", v2: "archived"}
    assert env.tags(v2)[Tag.ROLLED_BACK] == "true"
    assert env.champions_tagged() == [v1]
    assert reg.rollback_target() is None  # v2 was rolled back from: not a target
    assert env.history(rollback.id) == [("champion", v2, v1), ("previous-champion", v1, None)]
    assert all(m.actor == "cli" for m in env.store.alias_history(env.name, decision_id=rollback.id))

    champion_at = [
        env.store.version_at(env.name, "champion", t)
        for t in (t_start, t_bootstrapped, t_promoted, t_rolled_back)
    ]
    assert champion_at == [None, v1, v2, v1]
    assert env.store.version_at(env.name, "previous-champion", t_promoted) == v1
    assert env.store.version_at(env.name, "previous-champion", t_rolled_back) is None
    assert env.store.version_at(env.name, "challenger", t_promoted) is None
    # Promoting the rolled-back version again on purpose clears its rolled-back mark.
    again = reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert Tag.ROLLED_BACK not in env.tags(v2)
    assert env.champions_tagged() == [v2]
    assert env.history(again.id) == [("previous-champion", None, v1), ("champion", v1, v2)]
    assert env.store.version_at(env.name, "champion", utcnow()) == v2

    decided = env.store.decisions(version=v2, limit=None)
    assert [d.decision for d in decided] == [
        Decision.PROMOTE,
        Decision.ROLLBACK,
        Decision.PROMOTE,
        Decision.START_SHADOW,
    ]


def test_rollback_points_previous_champion_at_the_next_archived_version(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    v3 = env.new_version()
    reg.apply(env.record(Decision.PROMOTE, challenger=v3, champion=v2))
    assert env.aliases() == {"champion": v3, "previous-champion": v2}

    # A ROLLBACK record without versions is completed from the registry before it is stored.
    rec = reg.apply(env.record(Decision.ROLLBACK))
    assert (rec.champion_version, rec.challenger_version) == (v3, v2)
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert env.states() == {v1: "archived", v2: "champion", v3: "archived"}

    reg.apply(env.record(Decision.ROLLBACK, challenger=v1, champion=v2))
    assert env.aliases() == {"champion": v1}
    assert env.champions_tagged() == [v1]
    with pytest.raises(IllegalMove, match="previous champion"):
        reg.apply(env.record(Decision.ROLLBACK))


# --- idempotence and crashes -----------------------------------------------------------------


def test_apply_twice_is_idempotent(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    rec = env.record(Decision.PROMOTE, challenger=v2, champion=v1)
    first = reg.apply(rec)
    snapshot = (env.aliases(), env.tags(v1), env.tags(v2), env.history())
    second = reg.apply(rec)
    assert second == first
    assert (env.aliases(), env.tags(v1), env.tags(v2), env.history()) == snapshot
    assert reg.reconcile() == []


PROMOTE_CRASH_POINTS = [
    "after_record",
    "after_alias:previous-champion",
    "after_alias:champion",
    "after_alias:challenger",
    "after_aliases",
    "after_tags",
]


@pytest.mark.parametrize("point", PROMOTE_CRASH_POINTS)
def test_reconcile_finishes_a_promote_that_crashed(env: Env, point: str):
    v1 = bootstrap(env)
    v2 = shadow(env, v1)

    def fault(step: str) -> None:
        if step == point:
            raise Crash(step)

    rec = env.record(Decision.PROMOTE, challenger=v2, champion=v1)
    with pytest.raises(Crash):
        env.registry(fault).apply(rec)
    assert env.store.get_decision(rec.id).status == DecisionStatus.PENDING
    assert len(env.champions_tagged()) <= 1

    repaired = env.registry().reconcile()
    assert [r.id for r in repaired] == [rec.id]
    assert repaired[0].status == DecisionStatus.APPLIED
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert env.states() == {v1: "archived", v2: "champion"}
    assert env.history(rec.id) == [
        ("previous-champion", None, v1),
        ("champion", v1, v2),
        ("challenger", v2, None),
    ]
    assert env.store.shadow_test(v2, env.name).status == "closed"
    # Nothing left to do, and doing it again changes nothing.
    assert env.registry().reconcile() == []
    assert len(env.history(rec.id)) == 3


def test_crash_between_the_two_tag_writes_never_makes_two_champions(env: Env):
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    env.client.crash_on = (v2, Tag.STATE, "champion")
    rec = env.record(Decision.PROMOTE, challenger=v2, champion=v1)
    with pytest.raises(Crash):
        env.registry().apply(rec)
    # The old champion is archived before the new one is tagged: no second champion tag.
    assert env.states() == {v1: "archived", v2: "shadow"}
    assert env.aliases()["champion"] == v2
    env.registry().reconcile()
    assert env.states() == {v1: "archived", v2: "champion"}
    assert env.store.get_decision(rec.id).status == DecisionStatus.APPLIED


@pytest.mark.parametrize("point", ["after_alias:champion", "after_aliases", "after_tags"])
def test_reconcile_finishes_a_rollback_that_crashed(env: Env, point: str):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))

    def fault(step: str) -> None:
        if step == point:
            raise Crash(step)

    rec = env.record(Decision.ROLLBACK, challenger=v1, champion=v2)
    with pytest.raises(Crash):
        env.registry(fault).apply(rec)
    assert len(env.champions_tagged()) <= 1
    assert [r.id for r in env.registry().reconcile()] == [rec.id]
    assert env.aliases() == {"champion": v1}
    assert env.states() == {v1: "champion", v2: "archived"}
    assert env.tags(v2)[Tag.ROLLED_BACK] == "true"
    assert env.history(rec.id) == [("champion", v2, v1), ("previous-champion", v1, None)]


def test_reconcile_repairs_stray_champion_tags(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1))
    # Someone tags by hand: a second "champion", and the real one loses its tag.
    env.client.set_model_version_tag(env.name, v1, Tag.STATE, "champion")
    env.client.set_model_version_tag(env.name, v2, Tag.STATE, "shadow")
    assert reg.reconcile() == []
    assert env.states() == {v1: "archived", v2: "champion"}
    assert reg.fix_invariants() == []


# --- illegal moves ---------------------------------------------------------------------------


def _assert_refused(env: Env, rec: DecisionRecord, match: str) -> None:
    before = (env.aliases(), env.states(), env.history())
    with pytest.raises(IllegalMove, match=match):
        env.registry().apply(rec)
    stored = env.store.get_decision(rec.id)
    assert stored.status == DecisionStatus.FAILED
    assert stored.error
    assert (env.aliases(), env.states(), env.history()) == before


def test_illegal_moves_are_refused_before_anything_changes(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    v3 = env.new_version()
    reg.set_candidate(v3, {})

    _assert_refused(env, env.record(Decision.REJECT, challenger=v1), "is the champion")
    _assert_refused(env, env.record(Decision.BOOTSTRAP, challenger=v3), "use PROMOTE")
    _assert_refused(
        env, env.record(Decision.START_SHADOW, challenger=v3, champion=v1), "one shadow at a time"
    )
    _assert_refused(env, env.record(Decision.PROMOTE, challenger=v3, champion=v2), "evaluate again")
    _assert_refused(env, env.record(Decision.PROMOTE, challenger="999", champion=v1), "no version")
    _assert_refused(env, env.record(Decision.EXTEND_SHADOW, challenger=v3), "not in a shadow")
    _assert_refused(env, env.record(Decision.PROMOTE, challenger=v1, champion=v1), "both")

    reg.apply(env.record(Decision.KEEP_CHAMPION, challenger=v3, champion=v1))
    _assert_refused(
        env, env.record(Decision.PROMOTE, challenger=v3, champion=v1), "from rejected to champion"
    )
    _assert_refused(
        env, env.record(Decision.START_SHADOW, challenger=v1, champion=v1), "its own shadow"
    )
    assert env.aliases() == {"champion": v1, "challenger": v2}
    assert env.champions_tagged() == [v1]


def test_a_failed_decision_is_not_applied_again(env: Env):
    v1 = bootstrap(env)
    rec = env.record(Decision.REJECT, challenger=v1)
    with pytest.raises(IllegalMove):
        env.registry().apply(rec)
    with pytest.raises(RegistryError, match="failed"):
        env.registry().apply(rec)
    other = DecisionRecord(
        decision=Decision.REJECT,
        actor=Actor.CLI,
        model_name="another-model",
        challenger_version="1",
    )
    with pytest.raises(RegistryError, match="another-model"):
        env.registry().apply(other)


# --- auto_promotion off ----------------------------------------------------------------------


def awaiting_checks() -> list[Check]:
    """The checks of a challenger that passed the gate while auto_promotion is off."""
    return [
        check(CheckName.MIN_HOLDOUT_ROWS, True, value=400, limit=30),
        check(CheckName.THRESHOLD, True, value=0.1, limit=0.05, metric="f1_score"),
        check(CheckName.AUTO_PROMOTION, False),
        check(CheckName.SHADOW_DURATION, False, value=0.0, limit=0.0),
    ]


def test_keep_champion_awaiting_manual_promotion_keeps_a_candidate(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.set_candidate(v2, {})
    rec = env.record(Decision.KEEP_CHAMPION, challenger=v2, champion=v1, checks=awaiting_checks())
    rec.reasons = ["Passed; promote it by hand."]
    assert awaiting_manual_promotion(rec)

    kept = reg.apply(rec)
    assert kept.status == DecisionStatus.APPLIED
    assert kept.checks == rec.checks
    assert env.aliases() == {"champion": v1}
    assert env.states() == {v1: "champion", v2: "candidate"}
    tags = env.tags(v2)
    assert tags[Tag.DECISION_ID] == kept.id
    assert tags[Tag.REASONS] == "Passed; promote it by hand."
    assert "lifecycle.rejected_at" not in tags
    assert env.history(kept.id) == []
    # Applying it again (a re-run after a crash) plans the same thing and changes nothing.
    assert reg.apply(rec) == kept
    assert reg.reconcile() == []
    assert env.states() == {v1: "champion", v2: "candidate"}

    # The version can still be promoted by hand ...
    promoted = reg.apply(env.record(Decision.PROMOTE, challenger=v2, champion=v1, actor=Actor.CLI))
    assert promoted.status == DecisionStatus.APPLIED
    assert env.aliases() == {"champion": v2, "previous-champion": v1}
    assert env.champions_tagged() == [v2]

    # ... while an ordinary KEEP_CHAMPION still rejects its candidate.
    v3 = env.new_version()
    reg.set_candidate(v3, {})
    reg.apply(env.record(Decision.KEEP_CHAMPION, challenger=v3, champion=v2))
    assert reg.state_of(v3) == ModelState.REJECTED


def test_awaiting_checks_on_a_shadow_or_the_champion_are_not_a_loophole(env: Env):
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = shadow(env, v1)
    # A shadow is only judged by the shadow test; a KEEP_CHAMPION for it ends that test.
    rec = env.record(Decision.KEEP_CHAMPION, challenger=v2, champion=v1, checks=awaiting_checks())
    reg.apply(rec)
    assert env.aliases() == {"champion": v1}
    assert reg.state_of(v2) == ModelState.REJECTED
    assert env.store.shadow_test(v2, env.name).status == "closed"
    # The champion can never be "kept as a candidate".
    bad = env.record(Decision.KEEP_CHAMPION, challenger=v1, champion=v1, checks=awaiting_checks())
    _assert_refused(env, bad, "is the champion")


def test_a_reason_that_mentions_auto_promotion_changes_no_move(env: Env):
    """Only the checks decide: the old substring "auto_promotion is off" means nothing now."""
    reg = env.registry()
    v1 = bootstrap(env)
    v2 = env.new_version()
    reg.set_candidate(v2, {})
    # A record without checks (e.g. one stored before checks existed) is an ordinary
    # KEEP_CHAMPION, whatever its sentences say: its candidate is rejected.
    worded = env.record(Decision.KEEP_CHAMPION, challenger=v2, champion=v1)
    worded.reasons = [
        f"Version {v2} passed the offline gate, but auto_promotion is off; promote by hand "
        f"with `mlops promote {v2}`. Champion version {v1} stays."
    ]
    assert not awaiting_manual_promotion(worded)
    reg.apply(worded)
    assert reg.state_of(v2) == ModelState.REJECTED
    # Failing gate checks with an auto_promotion check that did not pass: rejected as well.
    v3 = env.new_version()
    reg.set_candidate(v3, {})
    failing = [*awaiting_checks(), check(CheckName.SIGNIFICANCE, False, value=0.2, limit=0.05)]
    reg.apply(env.record(Decision.KEEP_CHAMPION, challenger=v3, champion=v1, checks=failing))
    assert reg.state_of(v3) == ModelState.REJECTED


# --- rewording the reasons -------------------------------------------------------------------


def _lifecycle(env: Env) -> list[Decision]:
    """Judge and apply a whole lifecycle with the real policy; return the decisions applied."""
    reg = env.registry()
    applied: list[Decision] = []

    def new() -> str:
        v = env.new_version()
        reg.set_candidate(v, {})
        return v

    def apply(rec: DecisionRecord) -> None:
        applied.append(reg.apply(rec).decision)

    def judge(champion: str | None, pol: ChampionChallengerPolicy, **kw) -> str:
        v = new()
        a, z = pair(versions=(champion or "0", v), **kw)
        apply(decide_offline(a if champion else None, z, pol, model_name=env.name, actor=ACTOR))
        return v

    def trial(champion: str, v: str, pol: ChampionChallengerPolicy, **kw) -> None:
        a, z = pair(n=300, versions=(champion, v), **kw)
        apply(
            decide_shadow(
                a,
                z,
                pol,
                extensions_so_far=0,
                champion_error_rate=0.0,
                shadow_error_rate=0.0,
                champion_p50_latency_ms=10.0,
                shadow_p50_latency_ms=12.0,
                model_name=env.name,
                actor=ACTOR,
            )
        )

    v1 = judge(None, policy(), flips=60)  # BOOTSTRAP
    v2 = judge(v1, policy(), flips=60)  # START_SHADOW
    judge(v1, policy(auto_promotion=False, shadow_mode_duration=0), flips=60)  # kept candidate
    judge(v1, policy(champion_threshold=0.5), flips=60)  # KEEP_CHAMPION: rejected
    trial(v1, v2, policy(), flips=50)  # PROMOTE
    v5 = judge(v2, policy(auto_promotion=False), flips=60)  # START_SHADOW, promote by hand
    trial(v2, v5, policy(auto_promotion=False), flips=50)  # EXTEND_SHADOW, awaiting a person
    trial(v2, v5, policy(), breaks=40)  # REJECT
    judge(v2, policy(shadow_mode_duration=0), flips=60)  # PROMOTE directly
    return applied


def test_rewording_every_reason_template_changes_no_registry_move(
    env: Env, monkeypatch: pytest.MonkeyPatch
):
    worded = _lifecycle(env)
    assert worded == [
        Decision.BOOTSTRAP,
        Decision.START_SHADOW,
        Decision.KEEP_CHAMPION,
        Decision.KEEP_CHAMPION,
        Decision.PROMOTE,
        Decision.START_SHADOW,
        Decision.EXTEND_SHADOW,
        Decision.REJECT,
        Decision.PROMOTE,
    ]
    assert env.aliases() == {"champion": "6", "previous-champion": "2"}
    assert env.states() == {
        "1": "archived",
        "2": "archived",
        "3": "candidate",
        "4": "rejected",
        "5": "rejected",
        "6": "champion",
    }

    reword_every_template(monkeypatch)
    other = f"{env.name}-reworded"
    env.client.create_registered_model(other)
    first = env.client.get_model_version(env.name, "1")

    def new_version() -> str:
        return str(env.client.create_model_version(other, first.source, first.run_id).version)

    twin = Env(env.client, other, env.store, new_version)
    assert _lifecycle(twin) == worded
    assert twin.aliases() == env.aliases()
    assert twin.states() == env.states()
    assert twin.history() == env.history()
    for version in twin.states():
        assert twin.tags(version)[Tag.REASONS].startswith("Reworded "), version
        assert not env.tags(version)[Tag.REASONS].startswith("Reworded "), version
