"""The decision engine end to end: real Ludwig training, real SQLite MLflow, real lifecycle store.

The data are designed so that each verdict is robust at test size (400 rows, 2 epochs):
- a champion trained on a file whose informative columns were permuted (so it learned
  nothing) against a challenger trained on the clean file: a large, significant improvement;
- a challenger trained on the champion's own file with the labels shuffled: no improvement.
Every evaluation scores both models on the challenger's holdout rows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from tests_support import free_port, lifecycle_of

from mlops_assets.datagen import generate_frame
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle, alias_version
from mlops_assets.lifecycle.manager import ChampionChallengerManager, StaleDecision
from mlops_assets.lifecycle.policy import awaiting_manual_promotion
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.registry import Registry
from mlops_assets.lifecycle.states import STATE_TAG, Actor, Alias, Decision, ModelState
from mlops_assets.settings import Settings, load_settings
from mlops_assets.validation import file_sha256
from tests.conftest import build_project, isolate_env

pytestmark = pytest.mark.slow

ROWS = 400
# Two epochs at the test trainer's learning rate barely move the weights; 0.02 lets a clean
# challenger learn the signal in those two epochs (measured: f1 gains of 0.4-0.8, p ~ 0.001,
# on 80 holdout rows over eight data seeds).
LUDWIG = {"trainer": {"learning_rate": 0.02}}
# Every column that carries signal in datagen's logit (total_charges via tenure x charges).
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


class Crash(Exception):
    """A simulated process death inside `Registry.apply`."""


# --- data ------------------------------------------------------------------------------------


def noised(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The same rows and labels, each informative column permuted on its own (no signal left)."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    for column in INFORMATIVE:
        out[column] = rng.permutation(out[column].to_numpy())
    return out


def shuffled_labels(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The same features with the target permuted."""
    out = frame.copy()
    out["target"] = np.random.default_rng(seed).permutation(out["target"].to_numpy())
    return out


def write_csv(settings: Settings, name: str, frame: pd.DataFrame) -> Path:
    """Write a frame into the project's data/raw/ as the generator does."""
    path = settings.raw_dir / name
    frame.to_csv(path, index=False, float_format="%.4f", lineterminator="\n")
    return path


# --- lifecycle steps -------------------------------------------------------------------------


def train_version(settings: Settings, path: Path) -> str:
    """Validate and train one file; return the registered version."""
    result, moved = manager.validate_file(lifecycle_of(settings), path)
    assert result.ok and moved is None, result.problems
    return manager.train(lifecycle_of(settings), result).version


def judge(settings: Settings, version: str) -> DecisionRecord:
    """Evaluate a challenger against the champion and apply the decision (as the assets do)."""
    return manager.apply_decision(
        lifecycle_of(settings), manager.evaluate(lifecycle_of(settings), version).record
    )


def client_of(settings: Settings) -> MlflowClient:
    """An MLflow client on the project's registry."""
    return MlflowClient(settings.tracking_uri)


def aliases(settings: Settings) -> dict[str, str]:
    """alias -> version of the registered model."""
    model = client_of(settings).get_registered_model(settings.model_name)
    return {k: str(v) for k, v in (model.aliases or {}).items()}


def states(settings: Settings) -> dict[str, str | None]:
    """version -> lifecycle.state tag."""
    found = client_of(settings).search_model_versions(f"name = '{settings.model_name}'")
    return {str(mv.version): (mv.tags or {}).get(STATE_TAG) for mv in found}


def champions_tagged(settings: Settings) -> list[str]:
    """Versions tagged champion (the contract allows at most one)."""
    return sorted(v for v, s in states(settings).items() if s == ModelState.CHAMPION)


def decisions(settings: Settings) -> list[DecisionRecord]:
    """Every stored decision of the model, newest first."""
    return lifecycle_of(settings).store.decisions(model_name=settings.model_name, limit=None)


def assert_consistent(settings: Settings) -> str:
    """One champion, and the tag agrees with the alias; return the champion version."""
    champion = aliases(settings)[Alias.CHAMPION.value]
    assert champions_tagged(settings) == [champion]
    previous = aliases(settings).get(Alias.PREVIOUS_CHAMPION.value)
    if previous is not None:
        assert states(settings)[previous] == ModelState.ARCHIVED
    return champion


def assert_significant_gain(record: DecisionRecord) -> None:
    """The record holds a real paired test of the primary metric, significant at alpha."""
    policy = record.policy
    assert record.test is not None
    assert record.test.sample_size == record.sample_size >= policy["min_holdout_rows"]
    assert record.test.p_value is not None
    assert record.test.p_value < policy["significance_alpha"]
    primary = {c.metric: c for c in record.comparisons}[policy["primary_metric"]]
    assert primary.delta is not None and primary.delta >= policy["champion_threshold"]
    assert primary.p_value == pytest.approx(record.test.p_value)
    assert primary.ci_low is not None and primary.ci_high is not None


def make_champion(settings: Settings, version: str) -> None:
    """Make `version` the champion by a manual promotion unless it already is."""
    if aliases(settings).get(Alias.CHAMPION.value) != version:
        manager.manual_decision(
            lifecycle_of(settings), Decision.PROMOTE, version, actor=Actor.API, reason="test reset"
        )
    assert assert_consistent(settings) == version


# --- projects shared by a module ------------------------------------------------------------


@contextmanager
def project(
    factory: pytest.TempPathFactory, name: str, config: dict[str, Any] | None = None
) -> Iterator[Settings]:
    """An isolated project (own MLflow, store, MLOPS_HOME) for the life of a fixture."""
    with pytest.MonkeyPatch.context() as mp:
        # Its own serving port: apply_decision asks a server there to reload, and a server
        # another test (or engineer) runs on 8000 must not hear from this project.
        cfg = {"serving": {"port": free_port()}, **(config or {})}
        root = build_project(factory.mktemp(name), cfg, LUDWIG)
        isolate_env(mp, root)
        settings = load_settings(root / "config" / "config.yaml")
        settings.ensure_dirs()
        yield settings


@pytest.fixture(scope="module")
def clean_champion(tmp_path_factory: pytest.TempPathFactory):
    """Default policy; the champion learned from a clean file."""
    with project(tmp_path_factory, "clean") as settings:
        frame = generate_frame(ROWS, seed=11)
        path = write_csv(settings, "baseline.csv", frame)
        version = train_version(settings, path)
        assert judge(settings, version).decision == Decision.BOOTSTRAP
        yield settings, version, frame


@pytest.fixture(scope="module")
def blind_champion(tmp_path_factory: pytest.TempPathFactory):
    """Default policy (14-day shadow test); the champion learned from noise."""
    with project(tmp_path_factory, "blind") as settings:
        path = write_csv(settings, "noised.csv", noised(generate_frame(ROWS, seed=11)))
        version = train_version(settings, path)
        assert judge(settings, version).decision == Decision.BOOTSTRAP
        yield settings, version


@pytest.fixture(scope="module")
def direct_promotion(tmp_path_factory: pytest.TempPathFactory):
    """`shadow_mode_duration: 0`; the champion learned from noise. Tests reset the champion."""
    config = {"champion_challenger": {"shadow_mode_duration": 0}}
    with project(tmp_path_factory, "direct", config) as settings:
        path = write_csv(settings, "noised.csv", noised(generate_frame(ROWS, seed=11)))
        version = train_version(settings, path)
        assert judge(settings, version).decision == Decision.BOOTSTRAP
        yield settings, version


@pytest.fixture(scope="module")
def manual_only(tmp_path_factory: pytest.TempPathFactory):
    """`auto_promotion: false`, no shadow test: a blind champion and a judged clean challenger."""
    config = {"champion_challenger": {"shadow_mode_duration": 0, "auto_promotion": False}}
    with project(tmp_path_factory, "manual", config) as settings:
        blind = noised(generate_frame(ROWS, seed=11))
        champion = train_version(settings, write_csv(settings, "noised.csv", blind))
        assert judge(settings, champion).decision == Decision.BOOTSTRAP
        clean = generate_frame(ROWS, seed=12)
        version = train_version(settings, write_csv(settings, "clean.csv", clean))
        yield settings, champion, version, judge(settings, version)


# --- verdicts --------------------------------------------------------------------------------


def test_shuffled_labels_never_replace_the_champion(clean_champion) -> None:
    settings, champion, frame = clean_champion
    path = write_csv(settings, "shuffled.csv", shuffled_labels(frame))
    version = train_version(settings, path)
    assert version != champion

    applied = judge(settings, version)

    assert applied.decision == Decision.KEEP_CHAMPION
    assert applied.status == DecisionStatus.APPLIED
    assert (applied.champion_version, applied.challenger_version) == (champion, version)
    stored = lifecycle_of(settings).store.get_decision(applied.id)
    assert stored is not None and stored.status == DecisionStatus.APPLIED
    assert stored.decision == Decision.KEEP_CHAMPION
    assert stored.sample_size and stored.sample_size >= settings.policy.min_holdout_rows
    # Both models were scored on the same rows, and the primary metric was really tested.
    assert stored.test is not None and stored.test.sample_size == stored.sample_size
    primary = settings.policy.primary_metric
    assert primary in {c.metric for c in stored.comparisons}
    text = " ".join(stored.reasons)
    assert any(
        phrase in text for phrase in ("not significant", "below champion_threshold", "Guard rail:")
    ), stored.reasons
    assert f"keep champion version {champion}" in text
    assert aliases(settings) == {"champion": champion}
    assert states(settings) == {champion: "champion", version: "rejected"}
    assert (
        client_of(settings)
        .get_model_version(settings.model_name, version)
        .tags["lifecycle.decision_id"]
        == applied.id
    )


def test_more_informative_data_starts_a_shadow_test(blind_champion) -> None:
    settings, champion = blind_champion
    path = write_csv(settings, "clean.csv", generate_frame(ROWS, seed=12))
    version = train_version(settings, path)

    result = manager.evaluate(lifecycle_of(settings), version)
    assert result.champion_version == champion
    assert result.holdout_rows == result.record.sample_size
    applied = manager.apply_decision(lifecycle_of(settings), result.record)

    assert applied.decision == Decision.START_SHADOW, applied.reasons
    assert_significant_gain(applied)
    assert aliases(settings) == {"champion": champion, "challenger": version}
    assert states(settings) == {champion: "champion", version: "shadow"}
    tests = lifecycle_of(settings).store.open_shadow_tests(settings.model_name)
    assert [(t.version, t.opened_by) for t in tests] == [(version, applied.id)]
    assert tests[0].expires_at - tests[0].started_at == timedelta(days=14)
    status = manager.status(lifecycle_of(settings))
    assert status["champion"]["version"] == champion
    assert [s["version"] for s in status["shadows"]] == [version]


def test_zero_shadow_duration_promotes_and_archives_the_old_champion(direct_promotion) -> None:
    settings, blind = direct_promotion
    make_champion(settings, blind)
    path = write_csv(settings, "clean12.csv", generate_frame(ROWS, seed=12))
    version = train_version(settings, path)

    applied = judge(settings, version)

    assert applied.decision == Decision.PROMOTE, applied.reasons
    assert applied.status == DecisionStatus.APPLIED
    assert_significant_gain(applied)
    assert any("shadow_mode_duration is 0" in r for r in applied.reasons)
    assert aliases(settings) == {"champion": version, "previous-champion": blind}
    assert states(settings)[blind] == ModelState.ARCHIVED
    assert assert_consistent(settings) == version
    champ = client_of(settings).get_model_version_by_alias(settings.model_name, "champion")
    assert champ.tags["data.sha256"] == file_sha256(path)
    assert champ.tags["lifecycle.decision_id"] == applied.id


def test_reconcile_finishes_a_promote_that_crashed_after_the_aliases(direct_promotion) -> None:
    settings, blind = direct_promotion
    make_champion(settings, blind)
    version = train_version(
        settings, write_csv(settings, "clean13.csv", generate_frame(ROWS, seed=13))
    )
    record = manager.evaluate(lifecycle_of(settings), version).record
    assert record.decision == Decision.PROMOTE, record.reasons

    previous = aliases(settings).get(Alias.PREVIOUS_CHAMPION.value)

    def fault(step: str) -> None:
        if step == "after_aliases":
            raise Crash(step)

    store = lifecycle_of(settings).store
    registry = Registry(client_of(settings), settings.model_name, store, fault=fault)
    with store.transition_lock(settings.model_name, owner="crash-test"), pytest.raises(Crash):
        registry.apply(record)

    # The process "died" with the aliases moved and the tags not: they disagree now.
    assert aliases(settings)["champion"] == version
    assert states(settings)[version] == ModelState.CANDIDATE
    assert states(settings)[blind] == ModelState.CHAMPION
    assert store.get_decision(record.id).status == DecisionStatus.PENDING

    repaired = manager.reconcile(lifecycle_of(settings))

    assert [r.id for r in repaired] == [record.id]
    assert store.get_decision(record.id).status == DecisionStatus.APPLIED
    assert aliases(settings) == {"champion": version, "previous-champion": blind}
    assert states(settings)[version] == ModelState.CHAMPION
    assert states(settings)[blind] == ModelState.ARCHIVED
    assert assert_consistent(settings) == version
    moves = store.alias_history(settings.model_name, decision_id=record.id)
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        ("previous-champion", previous, blind),
        ("champion", blind, version),
    ]
    assert manager.reconcile(lifecycle_of(settings)) == []


def test_two_concurrent_promotions_against_one_champion(direct_promotion) -> None:
    settings, blind = direct_promotion
    make_champion(settings, blind)
    records = []
    for seed in (14, 15):
        version = train_version(
            settings, write_csv(settings, f"clean{seed}.csv", generate_frame(ROWS, seed=seed))
        )
        record = manager.evaluate(lifecycle_of(settings), version).record
        assert record.decision == Decision.PROMOTE, record.reasons
        assert record.champion_version == blind
        records.append(record)

    barrier = threading.Barrier(len(records))
    outcomes: dict[str, DecisionRecord | Exception] = {}

    def apply(record: DecisionRecord) -> None:
        barrier.wait()
        try:
            # Its own context, as a second cycle in another process would have.
            with Lifecycle.open(settings) as lc:
                outcomes[record.id] = manager.apply_decision(lc, record)
        except Exception as exc:  # the test inspects it
            outcomes[record.id] = exc

    threads = [threading.Thread(target=apply, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)

    applied = [r for r in records if isinstance(outcomes[r.id], DecisionRecord)]
    stale = [r for r in records if isinstance(outcomes[r.id], StaleDecision)]
    assert len(applied) == 1 and len(stale) == 1, outcomes
    winner, loser = applied[0], stale[0]
    store = lifecycle_of(settings).store
    assert store.get_decision(winner.id).status == DecisionStatus.APPLIED
    failed = store.get_decision(loser.id)
    assert failed.status == DecisionStatus.FAILED
    assert failed.error and "stale" in failed.error
    assert aliases(settings) == {
        "champion": winner.challenger_version,
        "previous-champion": blind,
    }
    assert assert_consistent(settings) == winner.challenger_version
    # The loser was not touched: it can be judged again against the new champion.
    assert states(settings)[loser.challenger_version] == ModelState.CANDIDATE
    assert store.pending_decisions(settings.model_name) == []


def test_auto_promotion_off_keeps_a_passing_challenger_promotable(manual_only) -> None:
    settings, champion, version, applied = manual_only

    assert applied.decision == Decision.KEEP_CHAMPION
    assert applied.status == DecisionStatus.APPLIED
    assert awaiting_manual_promotion(applied)
    assert_significant_gain(applied)
    assert any(f"`mlops promote {version}`" in r for r in applied.reasons)
    assert aliases(settings) == {"champion": champion}
    # Kept a candidate, not rejected: the decision is on it, and a person can still promote it.
    assert states(settings) == {champion: "champion", version: "candidate"}
    tags = client_of(settings).get_model_version(settings.model_name, version).tags
    assert tags["lifecycle.decision_id"] == applied.id
    assert "lifecycle.rejected_at" not in tags


def test_a_challenger_awaiting_promotion_is_not_judged_twice(manual_only) -> None:
    settings, _champion, version, applied = manual_only
    before = len(decisions(settings))

    again = manager.evaluate(lifecycle_of(settings), version)

    assert again.already_decided
    assert again.record.id == applied.id
    manager.apply_decision(lifecycle_of(settings), again.record)
    assert len(decisions(settings)) == before


# --- the Python API --------------------------------------------------------------------------


def test_python_api_trains_evaluates_and_reports(make_project) -> None:
    root = make_project(config={"serving": {"port": free_port()}}, ludwig=LUDWIG)
    config = root / "config" / "config.yaml"
    api = ChampionChallengerManager(config)
    path = root / "data" / "raw" / "baseline.csv"
    generate_frame(ROWS, seed=21).to_csv(path, index=False, float_format="%.4f")

    assert api.get_status()["champion"] is None
    outcome = api.train_challenger(path)
    assert outcome.version == "1"
    assert outcome.data_sha256 == file_sha256(path)
    record = api.evaluate_challenger(outcome.version)

    assert isinstance(record, DecisionRecord)
    assert record.decision == Decision.BOOTSTRAP
    assert record.actor == Actor.API
    assert record.status == DecisionStatus.APPLIED
    status = api.get_status()
    assert status["model_name"] == api.settings.model_name
    assert status["champion"]["version"] == outcome.version
    assert status["champion"]["run_id"] == outcome.run_id
    assert status["champion"]["data_sha256"] == file_sha256(path)
    assert [d["id"] for d in status["last_decisions"]] == [record.id]

    # Judging the same version again returns the earlier decision and records nothing new.
    again = ChampionChallengerManager(config).evaluate_challenger(outcome.version)
    assert again.id == record.id
    assert len(decisions(api.settings)) == 1
    # Training the same bytes again reuses the version.
    assert api.train_challenger(path).reused is True

    bad = root / "data" / "raw" / "bad.csv"
    pd.read_csv(path).drop(columns=["target"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="failed validation"):
        api.train_challenger(bad)
    assert not bad.exists()
    assert (api.settings.quarantine_dir / "bad.csv").exists()
    champion = alias_version(client_of(api.settings), api.settings.model_name, Alias.CHAMPION)
    assert champion == outcome.version
