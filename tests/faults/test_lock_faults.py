"""The transition lock under `kill -9` of a real promoting process (issue 12, §1 and §5).

A subprocess applies a real PROMOTE through `manager.manual_decision` against a real MLflow
registry (SQLite backend) and the real lifecycle store, and hangs at one step of the move while
it holds the transition lock. It is SIGKILLed there. The next transition in this process must
go through within seconds (the holder's pid is gone, so its 10-minute lease does not block),
finish the killed promotion instead of losing it, and leave exactly one champion whose aliases
and tags agree with the decision log.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests_support import project_env

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.states import STATE_TAG, Actor, Alias, Decision, ModelState
from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.settings import load_settings

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]

# Applies a manual PROMOTE of argv[1] and hangs (holding the transition lock) at step argv[2].
_PROMOTER = """
import sys, time
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.registry import Registry
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.settings import load_settings

version, hang_at = sys.argv[1], sys.argv[2]

def fault(step):
    if step == hang_at:
        print(step, flush=True)
        time.sleep(600)

lc = Lifecycle.open(load_settings())
lc._registry = Registry(lc.client, lc.model_name, lc.store, fault=fault)
manager.manual_decision(lc, Decision.PROMOTE, version, actor=Actor.CLI)
print("finished without hanging", flush=True)
"""

STEPS = [
    "after_record",
    f"after_alias:{Alias.PREVIOUS_CHAMPION.value}",
    f"after_alias:{Alias.CHAMPION.value}",
    "after_aliases",
    "after_tags",
]


@dataclass
class Project:
    """A project whose registry holds a champion v1 and a candidate v2 (no training)."""

    root: Path
    lc: Lifecycle
    experiment_id: str

    @property
    def client(self) -> MlflowClient:
        return self.lc.client

    @property
    def name(self) -> str:
        return self.lc.model_name

    def new_version(self) -> str:
        """Register a version backed by its own finished run with a stub model."""
        run = self.client.create_run(self.experiment_id)
        src = self.root / "src" / run.info.run_id / "model"
        src.mkdir(parents=True)
        (src / "MLmodel").write_text("flavors: {}\n")
        self.client.log_artifacts(run.info.run_id, str(src), "model")
        self.client.set_terminated(run.info.run_id)
        source = f"{run.info.artifact_uri}/model"
        version = str(self.client.create_model_version(self.name, source, run.info.run_id).version)
        self.lc.registry.set_candidate(version, {})
        return version

    def aliases(self) -> dict[str, str]:
        model = self.client.get_registered_model(self.name)
        return {k: str(v) for k, v in model.aliases.items()}

    def states(self) -> dict[str, str | None]:
        versions = self.client.search_model_versions(f"name='{self.name}'")
        return {str(mv.version): (mv.tags or {}).get(STATE_TAG) for mv in versions}

    def decisions(self) -> list[DecisionRecord]:
        return self.lc.store.decisions(model_name=self.name, limit=None)


@pytest.fixture
def project(make_project: Callable[..., Path], tmp_path: Path) -> Iterator[Project]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    name = f"churn-{uuid.uuid4().hex[:8]}"
    root = make_project({"mlflow": {"tracking_uri": uri, "registered_model_name": name}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)
    exp = client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
    lc = Lifecycle(settings, client, LifecycleStore(settings.lifecycle_db_url))
    p = Project(root, lc, exp)
    v1 = p.new_version()
    manager.manual_decision(lc, Decision.PROMOTE, v1, actor=Actor.CLI)  # a BOOTSTRAP
    assert p.aliases() == {"champion": v1}
    yield p
    lc.store.close()


def hang_promotion(p: Project, version: str, step: str) -> subprocess.Popen:
    """Start a real process promoting `version`; return once it hangs at `step`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROMOTER, version, step],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=project_env(p.root),
    )
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    lines: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if selector.select(timeout=0.5):
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip() == step:
                return proc
    proc.kill()
    proc.wait(30)
    pytest.fail(f"the promoter never reached {step}: {''.join(lines)[-3000:]}")


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def assert_one_consistent_champion(p: Project, champion: str, previous: str) -> None:
    """Aliases, version tags and the decision log tell the same story."""
    aliases = p.aliases()
    assert aliases.get(Alias.CHAMPION.value) == champion
    assert aliases.get(Alias.PREVIOUS_CHAMPION.value) == previous
    states = p.states()
    assert [v for v, s in states.items() if s == ModelState.CHAMPION] == [champion]
    assert states[previous] != ModelState.CHAMPION
    assert not [d for d in p.decisions() if d.status == DecisionStatus.PENDING]
    moves = p.lc.store.alias_history(p.name)
    last_champion = [m.to_version for m in moves if m.alias == Alias.CHAMPION.value][-1]
    assert last_champion == champion


@pytest.mark.parametrize("step", STEPS)
def test_a_promotion_killed_at_each_step_is_finished_by_the_next_transition(
    project: Project, step: str
):
    p = project
    v1 = p.aliases()["champion"]
    v2 = p.new_version()
    proc = hang_promotion(p, v2, step)
    lock = p.lc.store.lock_holder(f"transition:{p.name}")
    assert lock is not None and lock.pid == proc.pid  # the killed process held the lock
    kill_9(proc)

    started = time.monotonic()
    repaired = manager.reconcile(p.lc)  # the 10-minute lease of the dead holder is no obstacle
    assert time.monotonic() - started < 10

    (promotion,) = [d for d in p.decisions() if d.challenger_version == v2]
    assert promotion.decision == Decision.PROMOTE
    assert promotion.status == DecisionStatus.APPLIED  # not lost
    assert [r.id for r in repaired] == [promotion.id]
    assert_one_consistent_champion(p, champion=v2, previous=v1)
    assert p.lc.store.lock_holder(f"transition:{p.name}") is None
    # A rerun changes nothing.
    assert manager.reconcile(p.lc) == []
    assert_one_consistent_champion(p, champion=v2, previous=v1)


def test_the_next_decision_after_a_killed_holder_goes_through_and_loses_nothing(
    project: Project,
):
    """A holder killed mid-promotion: the next decision waits seconds, not the 10-minute lease.

    The killed promotion of v2 is finished first; the next decision, taken against the old
    champion v1, is then recorded as stale instead of overwriting it; a rollback then works.
    """
    p = project
    v1 = p.aliases()["champion"]
    v2, v3 = p.new_version(), p.new_version()
    proc = hang_promotion(p, v2, STEPS[1])
    kill_9(proc)

    started = time.monotonic()
    with pytest.raises(manager.StaleDecision, match=f"champion is v{v2}"):
        manager.apply_decision(
            p.lc,
            DecisionRecord(
                decision=Decision.PROMOTE,
                actor=Actor.CLI,
                model_name=p.name,
                champion_version=v1,
                challenger_version=v3,
                policy=p.lc.settings.policy.model_dump(mode="json"),
                reasons=["taken against v1 before the crash"],
            ),
        )
    assert time.monotonic() - started < 10
    by_version = {(d.challenger_version, d.decision): d for d in p.decisions()}
    assert by_version[(v2, Decision.PROMOTE)].status == DecisionStatus.APPLIED
    stale = by_version[(v3, Decision.PROMOTE)]
    assert stale.status == DecisionStatus.FAILED and stale.error.startswith("stale:")
    assert_one_consistent_champion(p, champion=v2, previous=v1)

    manager.manual_decision(p.lc, Decision.ROLLBACK, actor=Actor.CLI)
    assert p.aliases()["champion"] == v1
    assert [v for v, s in p.states().items() if s == ModelState.CHAMPION] == [v1]
