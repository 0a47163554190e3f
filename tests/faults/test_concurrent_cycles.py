"""Two cycles for the same file decide at the same moment, in two OS processes (issue 12, §5).

Both cycles of one file arrive at the same challenger (identical data is never trained twice),
and both take their decision against the same champion. This test runs the decision step of
the cycle, not the training: two real processes each call `manager.manual_decision(PROMOTE)`
for that challenger against one real lifecycle store and one real MLflow registry (SQLite
files, no stub of either). A barrier file holds both right before they ask for the transition
lock, that is after each has read the champion and built its decision: the race is forced on
every run, not left to luck. (A full training cycle in each process takes well over 90 s on
two cores; the in-process race of two trained challengers is
tests/assets/test_decisions.py::test_two_concurrent_promotions_against_one_champion.)

Exactly one transition is applied; the other decision is in the log as stale (FAILED,
`stale: ...`), its process is told so; one champion, and aliases, tags and the decision log
agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import test_lock_faults
from tests_support import project_env

from mlops_assets.lifecycle.records import DecisionStatus
from mlops_assets.lifecycle.states import Alias, Decision

REPO = Path(__file__).resolve().parents[2]
PARTIES = 2
ROUNDS = 2  # champion v1 -> v2, then v2 -> v3: the race each time

# The stub registry (champion v1, candidates on demand) of the lock fault tests.
project = test_lock_faults.project
Project = test_lock_faults.Project

# Takes the decision of one cycle: PROMOTE argv[1]; waits at the barrier argv[2] for argv[3]
# processes just before the transition lock; prints its outcome as JSON.
_DECIDER = """
import json, os, sys, time
from pathlib import Path
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.settings import load_settings

version, barrier, parties = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
acquire = LifecycleStore.acquire_lock

def at_the_barrier(self, name, *args, **kwargs):
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < parties:
        if time.monotonic() > deadline:
            sys.exit("the other process never reached the barrier")
        time.sleep(0.002)
    return acquire(self, name, *args, **kwargs)

LifecycleStore.acquire_lock = at_the_barrier
lc = Lifecycle.open(load_settings())
try:
    record = manager.manual_decision(lc, Decision.PROMOTE, version, actor=Actor.SCHEDULE)
    print(json.dumps({"outcome": "applied", "id": record.id}), flush=True)
except manager.StaleDecision as exc:
    print(json.dumps({"outcome": "stale", "error": str(exc)}), flush=True)
"""


def race(p: Project, version: str, barrier: Path) -> list[dict[str, str]]:
    """Start PARTIES deciding processes for `version` together; return their outcomes."""
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DECIDER, version, str(barrier), str(PARTIES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=project_env(p.root),
        )
        for _ in range(PARTIES)
    ]
    outcomes = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-3000:]
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert len(list(barrier.iterdir())) == PARTIES  # both got as far as the lock
    return outcomes


def test_two_cycles_deciding_together_apply_one_transition(project: Project, tmp_path: Path):
    p = project
    for n in range(ROUNDS):
        before = p.aliases()["champion"]
        version = p.new_version()
        outcomes = race(p, version, tmp_path / f"barrier-{n}")

        assert sorted(o["outcome"] for o in outcomes) == ["applied", "stale"], outcomes
        (stale,) = [o for o in outcomes if o["outcome"] == "stale"]
        assert f"the champion is v{version}" in stale["error"]
        (applied,) = [o for o in outcomes if o["outcome"] == "applied"]
        decisions = [d for d in p.decisions() if d.challenger_version == version]
        assert len(decisions) == PARTIES  # both decisions are in the log
        by_status = {d.status: d for d in decisions}
        assert set(by_status) == {DecisionStatus.APPLIED, DecisionStatus.FAILED}
        assert by_status[DecisionStatus.APPLIED].id == applied["id"]
        assert by_status[DecisionStatus.APPLIED].decision == Decision.PROMOTE
        loser = by_status[DecisionStatus.FAILED]
        assert loser.error and loser.error.startswith("stale:")
        assert loser.champion_version == before  # taken against the champion of that moment
        # One transition: the champion alias moved once, from the old champion to this one.
        moves = p.lc.store.alias_history(p.name, Alias.CHAMPION.value)
        assert [m.to_version for m in moves].count(version) == 1
        test_lock_faults.assert_one_consistent_champion(p, champion=version, previous=before)
        assert p.lc.store.lock_holder(f"transition:{p.name}") is None
