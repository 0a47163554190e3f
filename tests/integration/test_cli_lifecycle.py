"""The lifecycle through the real `mlops` console script, one subprocess per command.

The project runs with `auto_promotion: false` and `shadow_mode_duration: 0`: a challenger that
passes the offline gate is kept a `candidate` (KEEP_CHAMPION, "promote by hand"), which is
what makes `mlops promote VERSION` the operator's move. The champion is trained on a file whose
informative columns were permuted, the challenger on the clean file, so the gate passes with a
real significance result even at test size (400 rows, 2 epochs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from tests_support import free_port, lifecycle_of, project_env

from mlops_assets.datagen import generate_frame
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.states import STATE_TAG, Decision
from mlops_assets.settings import Settings, load_settings
from mlops_assets.validation import file_sha256
from tests.conftest import build_project, isolate_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MLOPS = Path(sys.executable).parent / "mlops"
ROWS = 400
INFORMATIVE = [
    "contract",
    "tenure_months",
    "monthly_charges",
    "total_charges",
    "num_support_calls",
    "avg_session_minutes",
    "days_since_last_login",
    "payment_method",
]


def mlops(
    root: Path, env: dict[str, str], *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `mlops ARGS` in `root`; with `ok`, assert it exits 0 (showing its output if not)."""
    proc = subprocess.run(
        [str(MLOPS), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if ok:
        assert proc.returncode == 0, (
            f"mlops {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


@dataclass
class CliProject:
    """A project driven through the console script, plus what its first two runs printed."""

    root: Path
    env: dict[str, str]
    settings: Settings
    champion_file: Path
    challenger_file: Path
    bootstrap: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `mlops ARGS` in the project."""
        return mlops(self.root, self.env, *args, ok=ok)

    def json(self, *args: str) -> Any:
        """Run a `--json` command and parse its standard output."""
        return json.loads(self.run(*args, "--json").stdout)

    def aliases(self) -> dict[str, str]:
        """alias -> version, read from the MLflow registry."""
        client = MlflowClient(self.settings.tracking_uri)
        model = client.get_registered_model(self.settings.model_name)
        return {k: str(v) for k, v in (model.aliases or {}).items()}

    def states(self) -> dict[str, str | None]:
        """version -> lifecycle.state, read from the MLflow registry."""
        client = MlflowClient(self.settings.tracking_uri)
        found = client.search_model_versions(f"name = '{self.settings.model_name}'")
        return {str(mv.version): (mv.tags or {}).get(STATE_TAG) for mv in found}

    def decisions(self) -> list[DecisionRecord]:
        """Every stored decision, newest first."""
        store = lifecycle_of(self.settings).store
        return store.decisions(model_name=self.settings.model_name, limit=None)


def _noised(frame: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = frame.copy()
    for column in INFORMATIVE:
        out[column] = rng.permutation(out[column].to_numpy())
    return out


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory: pytest.TempPathFactory):
    """A project bootstrapped by `train-challenger --auto-evaluate`, then given a second file."""
    config = {
        "champion_challenger": {"shadow_mode_duration": 0, "auto_promotion": False},
        # The challenger learns from the clean file alone, not also from the noised one.
        "training": {"window": "latest"},
        # A port of its own: manual moves ask a server there to reload.
        "serving": {"port": free_port()},
    }
    with pytest.MonkeyPatch.context() as mp:
        root = build_project(
            tmp_path_factory.mktemp("cli"), config, {"trainer": {"learning_rate": 0.02}}
        )
        isolate_env(mp, root)
        env = project_env(root)
        # Files arrive from outside the project; the CLI copies them into data/raw/.
        inbox = root / "inbox"
        inbox.mkdir()
        clean = generate_frame(ROWS, seed=31)
        champion_file = inbox / "noised.csv"
        challenger_file = inbox / "clean.csv"
        _noised(clean).to_csv(champion_file, index=False, float_format="%.4f")
        clean.to_csv(challenger_file, index=False, float_format="%.4f")
        train = ("train-challenger", "--auto-evaluate", "--data-path")
        bootstrap = mlops(root, env, *train, str(champion_file))
        second = mlops(root, env, *train, str(challenger_file))
        settings = load_settings(root / "config" / "config.yaml")
        yield CliProject(root, env, settings, champion_file, challenger_file, bootstrap, second)


def _between(a: datetime, b: datetime) -> datetime:
    return a + (b - a) / 2


def test_lifecycle_through_the_console_script(cli_project: CliProject) -> None:
    p = cli_project
    name = p.settings.model_name
    assert "decision: BOOTSTRAP (applied)  champion is now v1" in p.bootstrap.stdout
    assert "decision: KEEP_CHAMPION (applied)  champion is now v1" in p.second.stdout
    assert "promote by hand with `mlops promote 2`" in p.second.stdout
    # Staged copies keep their bytes: lineage names the file that arrived.
    assert (p.settings.raw_dir / "noised.csv").exists()
    assert file_sha256(p.settings.raw_dir / "clean.csv") == file_sha256(p.challenger_file)
    assert p.aliases() == {"champion": "1"}
    # auto_promotion is off: the challenger passed but stays promotable, not rejected.
    assert p.states() == {"1": "champion", "2": "candidate"}

    # --- status --json --------------------------------------------------------------------
    status = p.json("status")
    assert status["tracking_uri"] == p.settings.tracking_uri
    assert status["model_name"] == name
    client = MlflowClient(p.settings.tracking_uri)
    v1 = client.get_model_version(name, "1")
    assert status["champion"]["version"] == "1"
    assert status["champion"]["run_id"] == v1.run_id
    assert status["champion"]["data_sha256"] == file_sha256(p.champion_file)
    assert status["shadows"] == [] and status["previous_champion"] is None
    last = status["last_decisions"]
    assert [(d["decision"], d["status"], d["actor"]) for d in last] == [
        ("KEEP_CHAMPION", "applied", "cli"),
        ("BOOTSTRAP", "applied", "cli"),
    ]
    assert all(d["reasons"] and all(isinstance(r, str) and r for r in d["reasons"]) for d in last)
    keep = p.decisions()[0]
    assert keep.decision == Decision.KEEP_CHAMPION
    assert keep.test is not None and keep.test.p_value < p.settings.policy.significance_alpha
    assert any("auto_promotion is off" in r for r in last[0]["reasons"])

    lineage2 = p.json("lineage", "2")
    assert (lineage2["state"], lineage2["aliases"]) == ("candidate", [])
    assert lineage2["data_files"] == [
        {"file": "clean.csv", "sha256": file_sha256(p.challenger_file), "rows": ROWS}
    ]
    assert lineage2["mlflow_run_id"] == client.get_model_version(name, "2").run_id
    assert lineage2["dagster_run_id"]
    assert [d["decision"] for d in lineage2["decisions"]] == ["KEEP_CHAMPION"]

    # --- promote, then roll back ----------------------------------------------------------
    t_before = utcnow()
    out = p.run("promote", "2", "--reason", "operator approves v2").stdout
    t_promoted = utcnow()
    assert "PROMOTE applied" in out and "operator approves v2" in out
    assert p.aliases() == {"champion": "2", "previous-champion": "1"}
    assert p.states() == {"1": "archived", "2": "champion"}
    lineage2 = p.json("lineage", "2")
    assert (lineage2["state"], lineage2["aliases"]) == ("champion", ["champion"])
    assert [(d["decision"], d["status"]) for d in lineage2["decisions"]] == [
        ("PROMOTE", "applied"),
        ("KEEP_CHAMPION", "applied"),
    ]
    lineage1 = p.json("lineage", "1")
    assert (lineage1["state"], lineage1["aliases"]) == ("archived", ["previous-champion"])

    out = p.run("rollback").stdout
    t_rolled_back = utcnow()
    assert "ROLLBACK applied" in out
    assert p.aliases() == {"champion": "1"}
    assert p.states() == {"1": "champion", "2": "archived"}
    champion_lineage = p.json("lineage")  # no VERSION: the champion
    assert (champion_lineage["version"], champion_lineage["aliases"]) == ("1", ["champion"])
    assert champion_lineage["data_files"][0]["sha256"] == file_sha256(p.champion_file)
    assert p.json("lineage", "2")["aliases"] == []
    status = p.json("status")
    assert status["champion"]["version"] == "1" and status["previous_champion"] is None
    assert [d["decision"] for d in status["last_decisions"][:2]] == ["ROLLBACK", "PROMOTE"]

    # --- which version was champion at time T ---------------------------------------------
    store = lifecycle_of(p.settings).store
    moves = store.alias_history(name, "champion")
    assert [(m.from_version, m.to_version, m.actor) for m in moves] == [
        (None, "1", "cli"),
        ("1", "2", "cli"),
        ("2", "1", "cli"),
    ]
    bootstrapped, promoted, rolled_back = (m.time for m in moves)
    assert t_before <= promoted <= t_promoted <= rolled_back <= t_rolled_back
    assert store.version_at(name, "champion", bootstrapped - (promoted - bootstrapped)) is None
    assert store.version_at(name, "champion", _between(bootstrapped, promoted)) == "1"
    assert store.version_at(name, "champion", t_before) == "1"
    assert store.version_at(name, "champion", _between(promoted, rolled_back)) == "2"
    assert store.version_at(name, "champion", t_promoted) == "2"
    assert store.version_at(name, "champion", t_rolled_back) == "1"
    assert store.version_at(name, "previous-champion", t_promoted) == "1"
    assert store.version_at(name, "previous-champion", t_rolled_back) is None

    # --- cycle --dry-run changes nothing --------------------------------------------------
    third = p.settings.raw_dir / "third.csv"
    generate_frame(ROWS, seed=32).to_csv(third, index=False, float_format="%.4f")
    before = (len(p.decisions()), p.states(), p.aliases(), len(store.alias_history(name)))
    out = p.run("cycle", "--dry-run").stdout
    assert f"would train and judge a challenger on {third}" in out
    assert "(dry run: nothing was changed)" in out
    assert "noised.csv" not in out and "clean.csv" not in out  # already trained
    assert (len(p.decisions()), p.states(), p.aliases(), len(store.alias_history(name))) == before
    assert third.exists()

    # --- reject -----------------------------------------------------------------------------
    out = p.run("train-challenger", "--data-path", str(third)).stdout
    assert "challenger: churn-classifier v3" in out
    assert "decision:" not in out  # no --auto-evaluate: nothing judged
    assert p.states()["3"] == "candidate"
    assert len(p.decisions()) == before[0]
    out = p.run("reject", "3", "--reason", "not this one").stdout
    assert "REJECT applied" in out
    assert p.states() == {"1": "champion", "2": "archived", "3": "rejected"}
    assert p.aliases() == {"champion": "1"}
    rejected = p.decisions()[0]
    assert (rejected.decision, rejected.status) == (Decision.REJECT, DecisionStatus.APPLIED)
    assert (rejected.challenger_version, rejected.reasons) == ("3", ["not this one"])

    # --- a bad CSV is quarantined, exit 1 ---------------------------------------------------
    bad = p.root / "inbox" / "bad.csv"
    frame = pd.read_csv(p.challenger_file)
    frame["age"] = frame["age"].astype(object)
    frame.loc[5, "age"] = "forty"
    frame.to_csv(bad, index=False)
    n_decisions, states = len(p.decisions()), p.states()
    proc = p.run("train-challenger", "--data-path", str(bad), "--auto-evaluate", ok=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    quarantined = p.settings.quarantine_dir / "bad.csv"
    assert "bad.csv FAILED validation and was quarantined" in proc.stdout
    assert f"moved to {quarantined}" in proc.stdout
    assert "age" in proc.stdout
    assert quarantined.exists()
    assert (p.settings.quarantine_dir / "bad.csv.report.md").exists()
    assert not (p.settings.raw_dir / "bad.csv").exists()
    assert (len(p.decisions()), p.states(), p.aliases()) == (n_decisions, states, {"champion": "1"})


def test_an_illegal_manual_move_is_one_clear_error(cli_project: CliProject) -> None:
    p = cli_project
    champion = p.aliases()["champion"]
    proc = p.run("reject", champion, ok=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error: v{champion} is the champion" in proc.stderr
    assert p.aliases()["champion"] == champion
