"""Lifecycle automation on a real MLflow registry (SQLite) and a real lifecycle store.

No model is trained: versions are registered cheaply (a run with `schema.json` and a stub
`model/MLmodel`), and the prediction log is filled with the rows the server would write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle, alias_version
from mlops_assets.lifecycle.labels import ingest_label_files
from mlops_assets.lifecycle.manager import StaleDecision
from mlops_assets.lifecycle.probation import check_probation_now, run_probation
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus, utcnow
from mlops_assets.lifecycle.registry import ROLLED_BACK_TAG
from mlops_assets.lifecycle.retention import run_retention
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema
from mlops_assets.lifecycle.shadow import (
    apply_shadow_decision,
    evaluate_shadow,
    expired_shadows,
    run_shadow_expiry,
)
from mlops_assets.lifecycle.states import STATE_TAG, Actor, Alias, Decision, ModelState
from mlops_assets.lifecycle.store import LifecycleStore, PredictionRow
from mlops_assets.settings import Settings, load_settings

pytestmark = pytest.mark.slow

CLASSES = ["False", "True"]
DURATION = timedelta(seconds=90)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite database for the module (creating its schema takes seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return uri


@dataclass
class World:
    """A project with its own registered model, experiment and lifecycle store."""

    settings: Settings
    client: MlflowClient
    store: LifecycleStore
    experiment_id: str

    @cached_property
    def lc(self) -> Lifecycle:
        """The lifecycle context over this world's client and store (no server to reload)."""
        return Lifecycle(self.settings, self.client, self.store)

    @property
    def name(self) -> str:
        return self.settings.model_name

    def new_version(self, holdout_f1: float | None = None) -> str:
        """Register a version backed by its own run, with schema.json and a stub model."""
        run = self.client.create_run(self.experiment_id)
        run_id = run.info.run_id
        src = self.settings.home / "src" / run_id
        (src / "model").mkdir(parents=True)
        (src / "model" / "MLmodel").write_text("flavors: {}\n")
        schema = InputSchema(
            target="target", classes=CLASSES, features=[FeatureSpec(name="age", type="number")]
        )
        (src / "schema.json").write_text(schema.to_json())
        self.client.log_artifacts(run_id, str(src / "model"), "model")
        self.client.log_artifact(run_id, str(src / "schema.json"))
        if holdout_f1 is not None:
            self.client.log_metric(run_id, "holdout.f1_score", holdout_f1)
        self.client.set_terminated(run_id)
        source = f"{run.info.artifact_uri}/model"
        return str(self.client.create_model_version(self.name, source, run_id).version)

    def record(self, kind: Decision, challenger: str, champion: str | None = None, **kw):
        return DecisionRecord(
            decision=kind,
            actor=Actor.CLI,
            model_name=self.name,
            champion_version=champion,
            challenger_version=challenger,
            policy=self.settings.policy.model_dump(mode="json"),
            reasons=[f"{kind.value} set up by the test."],
            **kw,
        )

    def bootstrap(self) -> str:
        v = self.new_version(holdout_f1=0.8)
        reg = self.lc.registry
        reg.set_candidate(v, {})
        reg.apply(self.record(Decision.BOOTSTRAP, v))
        return v

    def start_shadow(self, champion: str, started: datetime) -> str:
        v = self.new_version(holdout_f1=0.85)
        reg = self.lc.registry
        reg.set_candidate(v, {})
        reg.apply(self.record(Decision.START_SHADOW, v, champion, time=started))
        return v

    def reject_candidate(self, when: datetime) -> str:
        v = self.new_version()
        reg = self.lc.registry
        reg.set_candidate(v, {})
        reg.apply(self.record(Decision.REJECT, v, time=when))
        return v

    def aliases(self) -> dict[str, str]:
        model = self.client.get_registered_model(self.name)
        return {k: str(v) for k, v in model.aliases.items()}

    def state(self, version: str) -> str | None:
        return self.client.get_model_version(self.name, version).tags.get(STATE_TAG)


@pytest.fixture
def world(make_project: Callable[..., Path], mlflow_uri: str):
    name = f"churn-{uuid.uuid4().hex[:8]}"
    root = make_project(
        {
            "mlflow": {"tracking_uri": mlflow_uri, "registered_model_name": name},
            "champion_challenger": {
                "shadow_mode_duration": "90s",
                "shadow_min_labelled_samples": 40,
                "max_shadow_extensions": 1,
                "probation_period": "1d",
                "rollback_threshold": 0.05,
            },
            "automation": {"retention": "90s"},
        }
    )
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    client.create_registered_model(name)
    exp = client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
    store = LifecycleStore(settings.lifecycle_db_url)
    yield World(settings, client, store, exp)
    store.close()


# --- traffic -------------------------------------------------------------------------------


def truth(n: int) -> list[str]:
    return ["True" if i % 2 == 0 else "False" for i in range(n)]


def answers(n: int, accuracy: float, seed: int) -> list[str]:
    """Predictions that are right on (about) `accuracy` of the rows, deterministically."""
    rng = np.random.default_rng(seed)
    wrong = set(rng.choice(n, size=round(n * (1 - accuracy)), replace=False).tolist())
    flip = {"True": "False", "False": "True"}
    return [flip[t] if i in wrong else t for i, t in enumerate(truth(n))]


def rows(
    w: World,
    version: str,
    role: str,
    ids: list[str],
    predictions: list[str],
    at: datetime,
    latency_ms: float,
) -> list[PredictionRow]:
    out = []
    for rid, pred in zip(ids, predictions, strict=True):
        p_true = 0.8 if pred == "True" else 0.2
        out.append(
            PredictionRow(
                request_id=rid,
                time=at,
                role=role,
                model_name=w.name,
                model_version=version,
                inputs={"age": 40},
                prediction=pred,
                probabilities={"False": 1 - p_true, "True": p_true},
                latency_ms=latency_ms,
            )
        )
    return out


def mirrored_traffic(
    w: World,
    champion: str,
    shadow: str,
    n: int,
    at: datetime,
    champion_accuracy: float,
    shadow_accuracy: float,
) -> list[str]:
    """Log n requests answered by both; return their ids (labels: `truth(n)`)."""
    ids = [f"req-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    w.store.log_predictions(
        rows(w, champion, "champion", ids, answers(n, champion_accuracy, 1), at, 5.0)
        + rows(w, shadow, "shadow", ids, answers(n, shadow_accuracy, 2), at, 6.0)
    )
    return ids


def write_label_file(w: World, name: str, ids: list[str], labels: list[str]) -> Path:
    path = w.settings.labels_dir / name
    lines = ["request_id,label"] + [f"{i},{lab}" for i, lab in zip(ids, labels, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def as_digits(labels: list[str]) -> list[str]:
    """Labels as a label file might spell them (1/0), not as the model's classes."""
    return ["1" if lab == "True" else "0" for lab in labels]


# --- shadow expiry -------------------------------------------------------------------------


def test_a_clearly_better_shadow_is_promoted_at_expiry(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    ids = mirrored_traffic(w, v1, v2, 60, t0 + timedelta(seconds=10), 0.6, 0.95)
    write_label_file(w, "labels.csv", ids, as_digits(truth(60)))
    assert ingest_label_files(w.lc).accepted == 60

    now = t0 + DURATION + timedelta(seconds=1)
    assert [t.version for t in expired_shadows(w.lc, now)] == [v2]
    assert expired_shadows(w.lc, t0 + timedelta(seconds=30)) == []

    evidence = evaluate_shadow(w.lc, v2, actor=Actor.SENSOR, now=now)
    assert evidence.record.decision == Decision.PROMOTE
    assert (evidence.champion_version, evidence.labelled, evidence.classes) == (v1, 60, CLASSES)
    assert (evidence.champion.requests, evidence.shadow.requests) == (60, 60)
    assert evidence.champion_error_rate == evidence.shadow_error_rate == 0.0
    assert (evidence.champion.p50_latency_ms, evidence.shadow.p50_latency_ms) == (5.0, 6.0)
    assert (
        evidence.record.challenger_metrics["f1_score"]
        > evidence.record.champion_metrics["f1_score"] + w.settings.policy.champion_threshold
    )

    decisions = run_shadow_expiry(w.lc, actor=Actor.SENSOR, now=now)
    assert [(d.decision, d.status) for d in decisions] == [
        (Decision.PROMOTE, DecisionStatus.APPLIED)
    ]
    assert decisions[0].sample_size == 60
    assert decisions[0].actor == Actor.SENSOR
    assert w.aliases() == {"champion": v2, "previous-champion": v1}
    assert (w.state(v1), w.state(v2)) == ("archived", "champion")
    test = w.store.shadow_test(v2, w.name)
    assert (test.status, test.decision_id) == ("closed", decisions[0].id)
    # Re-running the step changes nothing and records nothing.
    assert run_shadow_expiry(w.lc, actor=Actor.SENSOR, now=now) == []
    assert len(w.store.decisions(decision=Decision.PROMOTE, model_name=w.name)) == 1


def test_too_few_labels_extend_then_reject_after_the_last_extension(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    ids = mirrored_traffic(w, v1, v2, 30, t0 + timedelta(seconds=5), 0.8, 0.8)

    # No label at all: the test is extended (max_shadow_extensions is 1), not crashed.
    now1 = t0 + DURATION + timedelta(seconds=1)
    evaluation = evaluate_shadow(w.lc, v2, actor=Actor.SENSOR, now=now1)
    assert evaluation.labelled == 0
    assert evaluation.record.decision == Decision.EXTEND_SHADOW
    first = apply_shadow_decision(w.lc, evaluation)
    again = apply_shadow_decision(w.lc, evaluation)  # a retried step
    assert first.status == again.status == DecisionStatus.APPLIED
    assert first.id == again.id
    test = w.store.shadow_test(v2, w.name)
    assert test.status == "open"
    assert test.expires_at == now1 + DURATION
    assert test.extensions == 1
    assert w.aliases() == {"champion": v1, "challenger": v2}
    assert w.state(v2) == "shadow"
    assert any("extend the shadow test" in r for r in first.reasons)
    assert run_shadow_expiry(w.lc, actor=Actor.SENSOR, now=now1) == []

    # Five labels by the second expiry: still too few, and no extension left.
    w.store.add_labels(list(zip(ids[:5], truth(5), strict=True)), source="api")
    now2 = test.expires_at + timedelta(seconds=1)
    decisions = run_shadow_expiry(w.lc, actor=Actor.SCHEDULE, now=now2)
    assert [(d.decision, d.status) for d in decisions] == [
        (Decision.REJECT, DecisionStatus.APPLIED)
    ]
    assert decisions[0].sample_size == 5
    assert any("after 1 extensions" in r for r in decisions[0].reasons)
    assert w.aliases() == {"champion": v1}
    assert w.state(v2) == "rejected"
    assert w.store.shadow_test(v2, w.name).status == "closed"
    kinds = [d.decision for d in w.store.decisions(version=v2, model_name=w.name, limit=None)]
    assert kinds.count(Decision.EXTEND_SHADOW) == 1


def test_a_worse_shadow_is_rejected(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    ids = mirrored_traffic(w, v1, v2, 60, t0 + timedelta(seconds=10), 0.9, 0.6)
    w.store.add_labels(list(zip(ids, truth(60), strict=True)), source="api")

    now = t0 + DURATION + timedelta(seconds=1)
    (decision,) = run_shadow_expiry(w.lc, actor=Actor.SENSOR, now=now)
    assert (decision.decision, decision.status) == (Decision.REJECT, DecisionStatus.APPLIED)
    assert decision.sample_size == 60
    assert any("below champion_threshold" in r for r in decision.reasons)
    assert w.aliases() == {"champion": v1}
    assert w.state(v2) == "rejected"


def test_a_concurrent_second_extension_is_refused_as_stale(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    now = t0 + DURATION + timedelta(seconds=1)
    # Two runs evaluate the same expired test before either applies.
    a = evaluate_shadow(w.lc, v2, actor=Actor.SENSOR, now=now)
    b = evaluate_shadow(w.lc, v2, actor=Actor.SCHEDULE, now=now + timedelta(seconds=2))
    apply_shadow_decision(w.lc, a)
    with pytest.raises(StaleDecision, match="changed since it was evaluated"):
        apply_shadow_decision(w.lc, b)
    assert w.store.get_decision(b.record.id).status == DecisionStatus.FAILED
    assert w.store.shadow_test(v2, w.name).extensions == 1


def test_an_extension_recorded_before_a_crash_is_finished_not_repeated(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    now = t0 + DURATION + timedelta(seconds=1)
    evaluation = evaluate_shadow(w.lc, v2, actor=Actor.SENSOR, now=now)
    # The crash: the decision was recorded and applied, the expiry was never moved.
    w.lc.registry.apply(evaluation.record)
    assert w.store.shadow_test(v2, w.name).extensions == 0

    assert run_shadow_expiry(w.lc, actor=Actor.SENSOR, now=now) == []
    test = w.store.shadow_test(v2, w.name)
    assert (test.extensions, test.expires_at) == (1, now + DURATION)
    extends = w.store.decisions(decision=Decision.EXTEND_SHADOW, model_name=w.name)
    assert [d.id for d in extends] == [evaluation.record.id]


# --- probation -----------------------------------------------------------------------------


def promoted(w: World) -> tuple[str, str]:
    """v1 champion, then v2 promoted after a shadow test it clearly won."""
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    ids = mirrored_traffic(w, v1, v2, 60, t0 + timedelta(seconds=10), 0.6, 0.95)
    w.store.add_labels(list(zip(ids, truth(60), strict=True)), source="api")
    (decision,) = run_shadow_expiry(
        w.lc, actor=Actor.SENSOR, now=t0 + DURATION + timedelta(seconds=1)
    )
    assert decision.decision == Decision.PROMOTE
    return v1, v2


def live_traffic(w: World, champion: str, n: int, accuracy: float) -> None:
    promoted_at = w.store.alias_history(w.name, "champion")[-1].time
    ids = [f"live-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    at = promoted_at + timedelta(seconds=1)
    w.store.log_predictions(rows(w, champion, "champion", ids, answers(n, accuracy, 3), at, 5.0))
    w.store.add_labels(list(zip(ids, truth(n), strict=True)), source="api")


def test_probation_rolls_back_a_champion_whose_live_quality_fell(world: World):
    w = world
    v1, v2 = promoted(w)
    live_traffic(w, v2, 60, accuracy=0.55)

    result = check_probation_now(w.lc)
    assert result.in_probation and result.rollback
    assert (result.champion_version, result.previous_champion_version) == (v2, v1)
    assert result.live_samples == 60
    assert result.evaluated_metric > result.live_metric + w.settings.policy.rollback_threshold
    assert "PROMOTE" in result.evaluated_source

    record = run_probation(w.lc, actor=Actor.SENSOR, dagster_run_id="run-1")
    assert record is not None
    assert (record.decision, record.status) == (Decision.ROLLBACK, DecisionStatus.APPLIED)
    assert (record.champion_version, record.challenger_version) == (v2, v1)
    assert record.dagster_run_id == "run-1"
    assert any("more than rollback_threshold" in r for r in record.reasons)
    assert alias_version(w.client, w.name, Alias.CHAMPION) == v1
    assert w.state(v1) == ModelState.CHAMPION
    assert w.state(v2) == ModelState.ARCHIVED
    assert w.client.get_model_version(w.name, v2).tags[ROLLED_BACK_TAG] == "true"
    stored = w.store.get_decision(record.id)
    assert stored.reasons == record.reasons
    # The restored champion came back by ROLLBACK: it is not in probation, nothing more happens.
    assert run_probation(w.lc, actor=Actor.SENSOR) is None
    assert len(w.store.decisions(decision=Decision.ROLLBACK, model_name=w.name)) == 1


def test_probation_keeps_a_champion_whose_quality_holds(world: World):
    w = world
    _, v2 = promoted(w)
    live_traffic(w, v2, 60, accuracy=0.95)

    result = check_probation_now(w.lc)
    assert result.in_probation and not result.rollback
    assert any("within rollback_threshold" in r for r in result.reasons)
    assert run_probation(w.lc, actor=Actor.SCHEDULE) is None
    assert alias_version(w.client, w.name, Alias.CHAMPION) == v2

    later = result.promoted_at + w.settings.policy.probation_period + timedelta(seconds=1)
    assert not check_probation_now(w.lc, now=later).in_probation


# --- retention -----------------------------------------------------------------------------


def test_retention_prunes_every_role_by_age(world: World):
    w = world
    now = utcnow()
    old, recent = now - timedelta(hours=1), now - timedelta(seconds=10)
    v1 = w.bootstrap()
    v2 = w.reject_candidate(when=old)
    w.store.log_predictions(
        rows(w, v1, "champion", ["c-old"], ["True"], old, 5.0)
        + rows(w, v2, "shadow", ["c-old"], ["True"], old, 5.0)
        + rows(w, v2, "shadow", ["s-old"], ["True"], old, 5.0)
        + rows(w, v2, "shadow", ["s-new"], ["True"], recent, 5.0)
    )

    report = run_retention(w.lc, now=now)
    assert report.predictions_deleted == 3
    assert report.kept_versions == [v1]
    left = {(r.request_id, r.model_version) for r in w.store.predictions(model_name=w.name)}
    assert left == {("s-new", v2)}
    assert [a.version for a in report.runs_archived] == [v2]
    run_v2 = w.client.get_model_version(w.name, v2).run_id
    run_v1 = w.client.get_model_version(w.name, v1).run_id
    assert w.client.get_run(run_v2).data.tags["mlops.archived"] == "true"
    assert "mlops.archived" not in w.client.get_run(run_v1).data.tags
    assert w.state(v2) == "rejected"  # reversible: nothing deleted, the registry unchanged

    again = run_retention(w.lc, now=now)
    assert (again.predictions_deleted, again.runs_archived) == (0, [])


# --- label files ---------------------------------------------------------------------------


def test_label_files_are_ingested_once_and_bad_ones_quarantined(world: World):
    w = world
    t0 = utcnow() - timedelta(minutes=5)
    v1 = w.bootstrap()
    ids = [f"r{i}" for i in range(5)]
    w.store.log_predictions(rows(w, v1, "champion", ids, truth(5), t0, 5.0))
    good = write_label_file(w, "batch1.csv", [*ids, "never-served"], as_digits(truth(6)))
    content = good.read_bytes()

    first = ingest_label_files(w.lc)
    (entry,) = first.files
    assert (entry.status, entry.accepted, entry.unknown_ids) == ("ingested", 6, 1)
    assert not good.exists()
    assert Path(entry.moved_to).parent == w.settings.labels_dir / "processed"
    assert Path(entry.moved_to).read_bytes() == content
    assert w.store.labels(ids) == dict(zip(ids, as_digits(truth(5)), strict=True))
    assert ingest_label_files(w.lc).files == []

    # An API label cannot override a file label; the same file dropped again changes nothing.
    res = w.store.add_labels([("r0", "False")], source="api")
    assert [(r.request_id, r.reason) for r in res.rejected] == [("r0", "conflict")]
    good.write_bytes(content)
    (dup,) = ingest_label_files(w.lc).files
    assert (dup.status, dup.accepted) == ("duplicate", 0)
    assert w.store.labels(["r0"]) == {"r0": "1"}
    assert len(list((w.settings.labels_dir / "processed").iterdir())) == 2

    bad_columns = w.settings.labels_dir / "wrong_columns.csv"
    bad_columns.write_text("id,value\nr1,1\n")
    bad_encoding = w.settings.labels_dir / "latin1.csv"
    bad_encoding.write_bytes("request_id,label\nr1,caf\xe9\n".encode("latin-1"))
    bad_class = write_label_file(w, "unknown_class.csv", ["r2"], ["maybe"])
    result = ingest_label_files(w.lc)
    assert {f.name: f.status for f in result.files} == {
        "latin1.csv": "quarantined",
        "unknown_class.csv": "quarantined",
        "wrong_columns.csv": "quarantined",
    }
    checks = {f.name: [p.check for p in f.problems] for f in result.files}
    assert checks == {
        "latin1.csv": ["encoding"],
        "unknown_class.csv": ["label_classes"],
        "wrong_columns.csv": ["required_column"],
    }
    for path in (bad_columns, bad_encoding, bad_class):
        assert not path.exists()
        moved = w.settings.quarantine_dir / path.name
        assert moved.exists()
        report = json.loads((moved.parent / f"{path.name}.report.json").read_text())
        assert report["problems"] and report["sha256"]
        assert (moved.parent / f"{path.name}.report.md").exists()
    assert w.store.labels(["r1", "r2"]) == {"r1": "0", "r2": "1"}  # unchanged by the bad files


# --- one context per process ---------------------------------------------------------------


def test_a_whole_cycle_opens_the_store_once(world: World, monkeypatch: pytest.MonkeyPatch):
    """Bootstrap, a shadow test and its expiry, probation, retention, status: one store engine."""
    import sqlalchemy

    store_url = sqlalchemy.make_url(world.settings.lifecycle_db_url)
    engines: list[sqlalchemy.Engine] = []
    create_engine = sqlalchemy.create_engine

    def counting(url, *args, **kwargs):
        engine = create_engine(url, *args, **kwargs)
        if engine.url == store_url:
            engines.append(engine)
        return engine

    monkeypatch.setattr(sqlalchemy, "create_engine", counting)
    with Lifecycle.open(world.settings) as lc:
        w = World(world.settings, lc.client, lc.store, world.experiment_id)
        t0 = utcnow() - timedelta(minutes=10)
        v1 = w.new_version(holdout_f1=0.8)
        lc.registry.set_candidate(v1, {})
        boot = manager.manual_decision(lc, Decision.PROMOTE, v1, actor=Actor.API)
        assert boot.decision == Decision.BOOTSTRAP
        v2 = w.start_shadow(v1, t0)
        ids = mirrored_traffic(w, v1, v2, 60, t0 + timedelta(seconds=10), 0.6, 0.95)
        write_label_file(w, "labels.csv", ids, as_digits(truth(60)))
        assert ingest_label_files(lc).accepted == 60
        now = t0 + DURATION + timedelta(seconds=1)
        (decision,) = run_shadow_expiry(lc, actor=Actor.SENSOR, now=now)
        assert decision.decision == Decision.PROMOTE
        live_traffic(w, v2, 60, accuracy=0.55)
        rollback = run_probation(lc, actor=Actor.SENSOR)
        assert rollback is not None and rollback.decision == Decision.ROLLBACK
        run_retention(lc)
        assert manager.status(lc)["champion"]["version"] == v1
        assert manager.lineage(lc, v2)["version"] == v2
    assert len(engines) == 1


def test_the_maintenance_job_judges_an_expired_shadow_test(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    """A shadow test whose own expiry run failed (its run key used) is judged by maintenance."""
    from mlops_assets.jobs import lifecycle_maintenance
    from mlops_assets.lifecycle import context
    from resources import LifecycleResource

    w = world
    t0 = utcnow() - timedelta(minutes=10)
    v1 = w.bootstrap()
    v2 = w.start_shadow(v1, t0)
    ids = mirrored_traffic(w, v1, v2, 60, t0 + timedelta(seconds=10), 0.9, 0.6)
    write_label_file(w, "labels.csv", ids, truth(60))
    assert w.store.expired_shadow_tests(w.name)  # expired by the database's clock

    monkeypatch.setattr(context, "_shared", {})
    config = w.settings.config_path
    result = lifecycle_maintenance.execute_in_process(
        resources={"lifecycle": LifecycleResource(config_path=str(config))}
    )
    assert result.success
    (decision,) = [
        d
        for d in w.store.decisions(model_name=w.name)
        if d.challenger_version == v2 and d.decision == Decision.REJECT
    ]
    assert decision.status == DecisionStatus.APPLIED
    assert w.aliases() == {"champion": v1}
    assert w.state(v2) == "rejected"
    assert not w.store.expired_shadow_tests(w.name)
