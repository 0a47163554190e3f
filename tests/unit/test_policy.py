"""The decision rules: offline gate, shadow test and probation, with property tests."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from verdict_scenarios import (
    CLASSES,
    SCENARIOS,
    offline,
    pair,
    policy,
    reword_every_template,
    shadow,
)

from mlops_assets.lifecycle.metrics import HIGHER_IS_BETTER
from mlops_assets.lifecycle.policy import (
    ModelEvaluation,
    awaiting_manual_promotion,
    check_probation,
    offline_decision,
    probation_checks,
    probation_rollback,
    shadow_decision,
    verdict_rank,
)
from mlops_assets.lifecycle.records import DecisionRecord, DecisionStatus
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.verdict import CheckName, gate_passed
from mlops_assets.settings import ChampionChallengerPolicy, load_settings


def improvement(record: DecisionRecord, metric: str) -> float:
    comp = next(c for c in record.comparisons if c.metric == metric)
    return comp.delta if HIGHER_IS_BETTER[metric] else -comp.delta


# --- offline gate ------------------------------------------------------------------------------


def test_first_model_is_bootstrapped() -> None:
    _, challenger = pair(flips=60)
    rec = offline(None, challenger, policy(), dagster_run_id="run-1")
    assert rec.decision == Decision.BOOTSTRAP
    assert rec.champion_version is None and rec.challenger_version == "2"
    assert rec.status == DecisionStatus.PENDING
    assert rec.dagster_run_id == "run-1" and rec.actor == Actor.CLI
    assert set(rec.challenger_metrics) == {"accuracy", "precision", "recall", "f1_score"}
    assert rec.sample_size == 400
    assert any("first champion" in r for r in rec.reasons)


def test_first_model_below_floor_is_not_bootstrapped() -> None:
    _, challenger = pair(champion_accuracy=0.4)
    rec = offline(None, challenger, policy())
    assert rec.decision == Decision.KEEP_CHAMPION
    assert rec.champion_version is None
    text = " ".join(rec.reasons)
    assert "No champion yet" in text
    assert re.search(r"accuracy 0\.\d{3} is below its floor 0\.5", text)


def test_too_few_rows_keep_the_champion() -> None:
    champion, challenger = pair(n=20, flips=5)
    for champ in (champion, None):
        rec = offline(champ, challenger, policy())
        assert rec.decision == Decision.KEEP_CHAMPION
        assert any("20 rows, fewer than min_holdout_rows 30" in r for r in rec.reasons)


def test_clear_improvement_starts_a_shadow_test_with_a_full_record() -> None:
    champion, challenger = pair(flips=60)
    pol = policy()
    rec = offline(champion, challenger, pol)
    assert rec.decision == Decision.START_SHADOW
    assert rec.champion_version == "1" and rec.challenger_version == "2"
    assert rec.policy == pol.model_dump(mode="json")
    assert [c.metric for c in rec.comparisons] == ["accuracy", "precision", "recall", "f1_score"]
    f1 = next(c for c in rec.comparisons if c.metric == "f1_score")
    assert f1.ci_low < f1.delta < f1.ci_high
    assert f1.test == "paired_bootstrap" and f1.p_value < 0.05
    assert rec.test is not None and rec.test.name == "paired_bootstrap"
    assert rec.test.sample_size == 400 and rec.test.p_value < 0.05
    text = "\n".join(rec.reasons)
    assert re.search(
        r"f1_score improved by 0\.\d{3} \(0\.\d{3} -> 0\.\d{3}\), 95% CI of the improvement "
        r"\[0\.\d{3}, 0\.\d{3}\], one-sided p=[0-9.e-]+ < alpha 0\.05\.",
        text,
    )
    assert "meets champion_threshold 0.05" in text
    assert "Guard rails hold" in text
    assert "shadow test of version 2 for 14d on 100% of traffic" in text
    # Records survive a JSON round trip (the lifecycle store keeps them as JSON).
    assert DecisionRecord.model_validate_json(rec.model_dump_json()) == rec


def test_same_seed_same_record_numbers() -> None:
    champion, challenger = pair(flips=30)
    one = offline(champion, challenger, policy(), seed=3)
    two = offline(champion, challenger, policy(), seed=3)
    assert one.comparisons == two.comparisons and one.reasons == two.reasons


def test_zero_duration_or_large_margin_promotes() -> None:
    champion, challenger = pair(flips=60)
    rec = offline(champion, challenger, policy(shadow_mode_duration=0))
    assert rec.decision == Decision.PROMOTE
    assert any("shadow_mode_duration is 0" in r for r in rec.reasons)
    rec = offline(champion, challenger, policy(direct_promotion_margin=0.1))
    assert rec.decision == Decision.PROMOTE
    assert any("reaches direct_promotion_margin 0.1" in r for r in rec.reasons)
    rec = offline(champion, challenger, policy(direct_promotion_margin=0.5))
    assert rec.decision == Decision.START_SHADOW


def test_auto_promotion_off_never_promotes() -> None:
    champion, challenger = pair(flips=60)
    rec = offline(champion, challenger, policy(auto_promotion=False, direct_promotion_margin=0.1))
    assert rec.decision == Decision.START_SHADOW
    assert awaiting_manual_promotion(rec)
    rec = offline(champion, challenger, policy(auto_promotion=False, shadow_mode_duration="0s"))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert awaiting_manual_promotion(rec)
    assert any("promote by hand with `mlops promote 2`" in r for r in rec.reasons)
    # A challenger that fails is a plain KEEP_CHAMPION.
    rec = offline(champion, challenger, policy(auto_promotion=False, champion_threshold=0.5))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert not awaiting_manual_promotion(rec)


def test_improvement_below_threshold_keeps_the_champion() -> None:
    champion, challenger = pair(flips=60)
    rec = offline(champion, challenger, policy(champion_threshold=0.3))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any(
        re.search(r"absolute improvement 0\.\d{3} is below champion_threshold 0\.3", r)
        for r in rec.reasons
    )
    assert rec.reasons[-1].startswith("Decision: keep champion version 1")


def test_relative_improvement() -> None:
    champion, challenger = pair(flips=20, seed=2)
    rec = offline(
        champion,
        challenger,
        policy(primary_metric="accuracy", improvement="relative", champion_threshold=0.2),
    )
    acc = next(c for c in rec.comparisons if c.metric == "accuracy")
    assert rec.decision == Decision.KEEP_CHAMPION
    shown = f"{acc.delta / acc.champion:.1%}"
    assert any(
        f"relative improvement {shown} is below champion_threshold 20.0%" in r for r in rec.reasons
    )
    rec = offline(
        champion,
        challenger,
        policy(primary_metric="accuracy", improvement="relative", champion_threshold=0.05),
    )
    assert rec.decision == Decision.START_SHADOW


def test_not_significant_keeps_the_champion_and_accuracy_uses_mcnemar() -> None:
    champion, challenger = pair(n=40, flips=2)
    rec = offline(champion, challenger, policy(primary_metric="accuracy", champion_threshold=0.01))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert rec.test is not None and rec.test.name == "mcnemar_exact"
    assert rec.test.detail["c_challenger_only_right"] == 2
    assert rec.test.detail["b_champion_only_right"] == 0
    assert rec.test.p_value == pytest.approx(0.25)
    text = " ".join(rec.reasons)
    assert "exact McNemar test: the challenger alone is right on 2 rows" in text
    assert "not significant at alpha 0.05" in text


def test_guard_rail_blocks_a_better_primary_metric() -> None:
    # Predicting "1" everywhere maximises recall and wrecks precision.
    champion, _ = pair(n=400)
    challenger = ModelEvaluation(version="2", y_true=champion.y_true, y_pred=np.full(400, "1"))
    rec = offline(champion, challenger, policy(primary_metric="recall", metric_floors={}))
    assert improvement(rec, "recall") > 0.2
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any(
        re.search(
            r"Guard rail: precision worsened by 0\.\d{3} \(0\.\d{3} -> 0\.\d{3}\), "
            r"more than max_metric_degradation 0\.02",
            r,
        )
        for r in rec.reasons
    )


def test_metric_floor_blocks_an_improvement() -> None:
    champion, challenger = pair(flips=60)
    rec = offline(
        champion,
        challenger,
        policy(
            metric_floors={"accuracy": 0.95, "roc_auc": 0.5},
            evaluation_metrics=["f1_score", "roc_auc"],
        ),
    )
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any(re.search(r"accuracy 0\.\d{3} is below its floor 0\.95", r) for r in rec.reasons)
    # Floor-only metrics are recorded too.
    assert "accuracy" in rec.challenger_metrics


def test_log_loss_primary_is_oriented_and_its_floor_is_a_ceiling() -> None:
    champion, challenger = pair(flips=80)
    pol = policy(
        evaluation_metrics=["log_loss", "accuracy"],
        primary_metric="log_loss",
        champion_threshold=0.01,
    )
    rec = offline(champion, challenger, pol)
    ll = next(c for c in rec.comparisons if c.metric == "log_loss")
    assert ll.delta < 0  # the record keeps challenger - champion
    assert ll.ci_low < ll.delta < ll.ci_high
    assert rec.decision == Decision.START_SHADOW
    assert any(r.startswith("log_loss improved by") for r in rec.reasons)
    rec = offline(champion, challenger, pol.model_copy(update={"metric_floors": {"log_loss": 0.1}}))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any("is above its ceiling 0.1" in r for r in rec.reasons)


def test_undefined_roc_auc_is_never_relied_on() -> None:
    y = np.array(["1"] * 200)
    a = np.where(np.arange(200) % 3 == 0, "0", "1")
    z = np.where(np.arange(200) % 10 == 0, "0", "1")
    p = np.linspace(0.1, 0.9, 200)
    champion = ModelEvaluation(version="1", y_true=y, y_pred=a, probabilities=p, classes=CLASSES)
    challenger = ModelEvaluation(version="2", y_true=y, y_pred=z, probabilities=p, classes=CLASSES)
    pol = policy(evaluation_metrics=["accuracy", "roc_auc"], primary_metric="accuracy")
    rec = offline(champion, challenger, pol)
    assert rec.decision == Decision.START_SHADOW
    assert any("roc_auc is undefined on these rows; it is not used" in r for r in rec.reasons)
    assert "roc_auc" not in rec.challenger_metrics
    assert DecisionRecord.model_validate_json(rec.model_dump_json()) == rec
    rec = offline(champion, challenger, pol.model_copy(update={"primary_metric": "roc_auc"}))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any("primary metric roc_auc is undefined" in r for r in rec.reasons)


def test_evaluations_must_cover_the_same_rows() -> None:
    champion, challenger = pair(n=100)
    short = ModelEvaluation(
        version="2", y_true=challenger.y_true[:-1], y_pred=challenger.y_pred[:-1]
    )
    with pytest.raises(ValueError, match="different rows"):
        offline(champion, short, policy())
    other = ModelEvaluation(version="2", y_true=challenger.y_true[::-1], y_pred=challenger.y_pred)
    with pytest.raises(ValueError, match="different true labels"):
        offline(champion, other, policy())
    ids = np.arange(100).astype(str)
    a = champion.model_copy(update={"row_ids": ids})
    z = challenger.model_copy(update={"row_ids": ids[::-1]})
    with pytest.raises(ValueError, match="different row ids"):
        offline(a, z, policy())
    with pytest.raises(ValueError, match="y_pred has 3"):
        ModelEvaluation(version="x", y_true=["0", "1"], y_pred=["0", "1", "1"])


def test_single_class_needs_explicit_classes() -> None:
    only = ModelEvaluation(version="1", y_true=["1"] * 40, y_pred=["1"] * 40)
    with pytest.raises(ValueError, match="pass `classes`"):
        offline(None, only, policy())
    with_classes = only.model_copy(update={"classes": CLASSES})
    assert offline(None, with_classes, policy()).decision == Decision.BOOTSTRAP


# --- properties --------------------------------------------------------------------------------

POLICIES = st.builds(
    lambda primary, thr, deg, margin, duration, auto: policy(
        bootstrap_resamples=200,
        primary_metric=primary,
        champion_threshold=thr,
        max_metric_degradation=deg,
        direct_promotion_margin=margin,
        shadow_mode_duration=duration,
        auto_promotion=auto,
    ),
    st.sampled_from(["accuracy", "precision", "recall", "f1_score"]),
    st.sampled_from([0.0, 0.01, 0.05]),
    st.sampled_from([0.0, 0.02, 0.1]),
    st.sampled_from([None, 0.05, 0.1]),
    st.sampled_from(["0s", "14d"]),
    st.booleans(),
)
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(
    pol=POLICIES,
    n=st.integers(30, 200),
    seed=st.integers(0, 10_000),
    flips=st.integers(0, 60),
    breaks=st.integers(0, 30),
)
def test_property_no_shadow_or_promotion_when_a_check_fails(
    pol: ChampionChallengerPolicy, n: int, seed: int, flips: int, breaks: int
) -> None:
    champion, challenger = pair(n=n, seed=seed, flips=flips, breaks=breaks)
    rec = offline(champion, challenger, pol)
    if rec.decision not in (Decision.PROMOTE, Decision.START_SHADOW):
        return
    for metric in pol.evaluation_metrics:
        if metric != pol.primary_metric:
            assert improvement(rec, metric) >= -pol.max_metric_degradation - 1e-9, metric
    assert improvement(rec, pol.primary_metric) >= pol.champion_threshold - 1e-9
    assert rec.test is not None and rec.test.p_value < pol.significance_alpha
    for metric, floor in pol.metric_floors.items():
        assert rec.challenger_metrics[metric] >= floor
    assert n >= pol.min_holdout_rows


@PROPS
@given(pol=POLICIES, n=st.integers(1, 200), seed=st.integers(0, 10_000))
def test_property_identical_models_keep_the_champion(
    pol: ChampionChallengerPolicy, n: int, seed: int
) -> None:
    champion, _ = pair(n=n, seed=seed)
    twin = champion.model_copy(update={"version": "2"})
    assume(len(set(champion.y_true) | set(champion.y_pred)) == 2)
    assert offline(champion, twin, pol).decision == Decision.KEEP_CHAMPION


@PROPS
@given(
    pol=POLICIES,
    n=st.integers(30, 200),
    seed=st.integers(0, 10_000),
    fewer=st.integers(0, 40),
    extra=st.integers(0, 40),
)
def test_property_a_larger_improvement_never_lowers_the_verdict(
    pol: ChampionChallengerPolicy, n: int, seed: int, fewer: int, extra: int
) -> None:
    small = offline(*pair(n=n, seed=seed, flips=fewer), pol)
    large = offline(*pair(n=n, seed=seed, flips=fewer + extra), pol)
    assert verdict_rank(small.decision) <= verdict_rank(large.decision)


# --- shadow test -------------------------------------------------------------------------------


def test_shadow_promotes_a_better_model() -> None:
    rec = shadow(*pair(n=300, flips=50))
    assert rec.decision == Decision.PROMOTE
    assert rec.sample_size == 300 and rec.test is not None
    assert any("p50 latency: shadow 12.0 ms, champion 10.0 ms" in r for r in rec.reasons)
    assert rec.reasons[-1] == "Decision: promote version 2; it passed the shadow test."


def test_shadow_extends_while_labels_are_few_then_rejects() -> None:
    champion, candidate = pair(n=50, flips=10)
    rec = shadow(champion, candidate, extensions_so_far=1)
    assert rec.decision == Decision.EXTEND_SHADOW
    assert any(
        "Only 50 labelled requests, fewer than shadow_min_labelled_samples 100; "
        "extension 2 of 2" in r
        for r in rec.reasons
    )
    rec = shadow(champion, candidate, extensions_so_far=2)
    assert rec.decision == Decision.REJECT
    assert any("after 2 extensions" in r for r in rec.reasons)
    # No labels at all is just as valid an input.
    empty = ModelEvaluation(version="1", y_true=[], y_pred=[], classes=CLASSES)
    rec = shadow(empty, empty.model_copy(update={"version": "2"}))
    assert rec.decision == Decision.EXTEND_SHADOW


def test_shadow_rejects_a_worse_model() -> None:
    rec = shadow(*pair(n=300, breaks=40))
    assert rec.decision == Decision.REJECT
    assert any(r.startswith("f1_score worsened by") for r in rec.reasons)
    assert rec.reasons[-1] == "Decision: end the shadow test of version 2 without promotion."


def test_shadow_rejects_on_error_rate_or_opt_in_latency() -> None:
    champion, candidate = pair(n=300, flips=50)
    rec = shadow(champion, candidate, champion_error_rate=0.01, shadow_error_rate=0.05)
    assert rec.decision == Decision.REJECT
    assert any(
        "Error rate: shadow 5.00%, champion 1.00%: more than 1.00% above" in r for r in rec.reasons
    )
    slow = {"champion_p50_latency_ms": 10.0, "shadow_p50_latency_ms": 40.0}
    assert shadow(champion, candidate, **slow).decision == Decision.PROMOTE
    rec = shadow(champion, candidate, max_latency_ratio=2.0, **slow)
    assert rec.decision == Decision.REJECT
    assert any("more than 2 times the champion's" in r for r in rec.reasons)


def test_shadow_passing_without_auto_promotion_waits_for_a_person() -> None:
    rec = shadow(*pair(n=300, flips=50), policy(auto_promotion=False))
    assert rec.decision == Decision.EXTEND_SHADOW
    assert awaiting_manual_promotion(rec)
    assert any("awaiting manual promotion with `mlops promote 2`" in r for r in rec.reasons)


# --- probation ---------------------------------------------------------------------------------


def test_probation_rolls_back_on_a_quality_drop() -> None:
    pol = policy()
    back, reasons = check_probation(0.80, 0.70, 500, 0.0, pol)
    assert back
    assert any(
        "fell 0.100 below its evaluation 0.800, more than rollback_threshold 0.05" in r
        for r in reasons
    )
    back, reasons = check_probation(0.80, 0.77, 500, 0.0, pol)
    assert not back and any("within rollback_threshold" in r for r in reasons)


def test_probation_waits_for_samples_but_not_for_errors() -> None:
    pol = policy()
    back, reasons = check_probation(0.80, 0.30, 20, 0.0, pol)
    assert not back and any("Only 20 labelled live requests" in r for r in reasons)
    back, reasons = check_probation(0.80, 0.80, 20, 0.2, pol)
    assert back and any("error rate 20.00% is above the bound 5.00%" in r for r in reasons)
    assert check_probation(0.80, 0.30, 20, 0.0, pol, min_samples=10)[0]


def test_probation_orientation_and_relative_mode() -> None:
    pol = policy(evaluation_metrics=["log_loss"], primary_metric="log_loss")
    assert check_probation(0.40, 0.50, 500, 0.0, pol)[0]  # log loss rose by 0.1
    assert not check_probation(0.40, 0.30, 500, 0.0, pol)[0]
    rel = policy(improvement="relative", rollback_threshold=0.1)
    assert not check_probation(0.80, 0.73, 500, 0.0, rel)[0]  # 8.75% drop
    assert check_probation(0.80, 0.70, 500, 0.0, rel)[0]  # 12.5% drop
    assert not check_probation(math.nan, 0.7, 500, 0.0, rel)[0]


def test_too_few_resamples_for_alpha_is_explained() -> None:
    champion, challenger = pair(flips=60)
    rec = offline(champion, challenger, policy(significance_alpha=0.001, bootstrap_resamples=500))
    assert rec.decision == Decision.KEEP_CHAMPION
    assert any("raise bootstrap_resamples to at least 1000" in r for r in rec.reasons)


# --- verdicts are data -------------------------------------------------------------------------


def _outcome(result: Any) -> Any:
    """What a scenario decided, without its sentences."""
    if isinstance(result, DecisionRecord):
        return (result.decision, result.checks)
    rollback, _reasons = result
    return rollback


def _sentences(result: Any) -> list[str]:
    return result.reasons if isinstance(result, DecisionRecord) else result[1]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rewording_every_reason_template_changes_no_decision(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = SCENARIOS[name]()
    reword_every_template(monkeypatch)
    after = SCENARIOS[name]()
    assert _outcome(after) == _outcome(before)
    said, now = _sentences(before), _sentences(after)
    assert said and now
    assert all(s.startswith("Reworded ") for s in now), now
    assert not set(said) & set(now)


def test_the_decision_is_a_function_of_the_checks_alone() -> None:
    for name, run in SCENARIOS.items():
        result = run()
        if not isinstance(result, DecisionRecord):
            continue
        if any(c.name == CheckName.ERROR_RATE for c in result.checks):
            assert shadow_decision(result.checks) == result.decision, name
        else:
            has_champion = result.champion_version is not None
            assert offline_decision(result.checks, has_champion=has_champion) == result.decision
        # The record keeps its checks through the JSON the lifecycle store writes.
        assert DecisionRecord.model_validate_json(result.model_dump_json()) == result, name


def test_every_rule_that_decides_is_a_check() -> None:
    rec = offline(*pair(flips=60), policy(direct_promotion_margin=0.5))
    names = [c.name for c in rec.checks]
    assert names == [
        CheckName.MIN_HOLDOUT_ROWS,
        CheckName.SIGNIFICANCE,
        CheckName.THRESHOLD,
        *[CheckName.GUARD_RAIL] * 3,
        CheckName.METRIC_FLOOR,
        CheckName.AUTO_PROMOTION,
        CheckName.SHADOW_DURATION,
        CheckName.DIRECT_PROMOTION,
    ]
    assert gate_passed(rec.checks)
    rails = {c.metric: c for c in rec.checks if c.name == CheckName.GUARD_RAIL}
    assert set(rails) == {"accuracy", "precision", "recall"}
    assert all(c.limit == 0.02 for c in rails.values())
    thr = next(c for c in rec.checks if c.name == CheckName.THRESHOLD)
    assert (
        thr.passed
        and thr.limit == 0.05
        and thr.value == pytest.approx(improvement(rec, "f1_score"))
    )
    sig = next(c for c in rec.checks if c.name == CheckName.SIGNIFICANCE)
    assert sig.value == rec.test.p_value and sig.limit == 0.05
    margin = next(c for c in rec.checks if c.name == CheckName.DIRECT_PROMOTION)
    assert not margin.passed and margin.limit == 0.5

    rec = shadow(*pair(n=50, flips=10), extensions_so_far=1)
    assert [c.name for c in rec.checks] == [
        CheckName.ERROR_RATE,
        CheckName.LATENCY,
        CheckName.LABELLED_SAMPLES,
        CheckName.SHADOW_EXTENSIONS,
    ]
    samples = rec.checks[2]
    assert not samples.passed and (samples.value, samples.limit) == (50, 100)
    assert rec.checks[3].passed and (rec.checks[3].value, rec.checks[3].limit) == (1, 2)

    checks = probation_checks(0.80, 0.70, 500, 0.0, policy())
    assert [c.name for c in checks] == [
        CheckName.LIVE_ERROR_RATE,
        CheckName.LABELLED_SAMPLES,
        CheckName.ROLLBACK_THRESHOLD,
    ]
    assert probation_rollback(checks)
    assert checks[2].value == pytest.approx(0.1) and checks[2].limit == 0.05


def test_awaiting_manual_promotion_reads_checks_not_sentences() -> None:
    rec = offline(*pair(flips=60), policy(auto_promotion=False, shadow_mode_duration="0s"))
    assert awaiting_manual_promotion(rec)
    # The sentences do not matter ...
    assert awaiting_manual_promotion(rec.model_copy(update={"reasons": []}))
    plain = offline(*pair(flips=60), policy(champion_threshold=0.5))
    noted = plain.model_copy(update={"reasons": ["auto_promotion is off; promote by hand."]})
    assert not awaiting_manual_promotion(noted)
    # ... and a record stored before checks existed (no `checks` in its JSON) never awaits.
    data = rec.model_dump(mode="json")
    del data["checks"]
    old = DecisionRecord.model_validate(data)
    assert old.checks == [] and old.reasons == rec.reasons
    assert not awaiting_manual_promotion(old)


# --- policy keys that decide outcomes ----------------------------------------------------------


def _policy_from_config(make_project: Any, **keys: Any) -> ChampionChallengerPolicy:
    root = make_project(config={"champion_challenger": keys}, name=uuid.uuid4().hex)
    return load_settings(root / "config" / "config.yaml").policy


def test_outcome_constants_have_their_defaults_in_config(make_project: Any) -> None:
    pol = _policy_from_config(make_project)
    assert pol.error_rate_tolerance == 0.01
    assert pol.max_latency_ratio is None
    assert pol.max_error_rate == 0.05
    assert (pol.error_rate_tolerance, pol.max_latency_ratio, pol.max_error_rate) == (
        ChampionChallengerPolicy().error_rate_tolerance,
        ChampionChallengerPolicy().max_latency_ratio,
        ChampionChallengerPolicy().max_error_rate,
    )


def test_error_rate_tolerance_is_set_in_config(make_project: Any) -> None:
    champion, candidate = pair(n=300, flips=50)
    rates = {"champion_error_rate": 0.01, "shadow_error_rate": 0.05}
    strict = _policy_from_config(make_project, bootstrap_resamples=300)
    assert shadow(champion, candidate, strict, **rates).decision == Decision.REJECT
    loose = _policy_from_config(make_project, bootstrap_resamples=300, error_rate_tolerance=0.1)
    rec = shadow(champion, candidate, loose, **rates)
    assert rec.decision == Decision.PROMOTE
    assert any(r == "Error rate: shadow 5.00%, champion 1.00%." for r in rec.reasons)
    # The keyword argument still overrides the policy.
    overridden = shadow(champion, candidate, loose, error_rate_tolerance=0.01, **rates)
    assert overridden.decision == Decision.REJECT


def test_max_latency_ratio_is_set_in_config(make_project: Any) -> None:
    champion, candidate = pair(n=300, flips=50)
    slow = {"champion_p50_latency_ms": 10.0, "shadow_p50_latency_ms": 40.0}
    off = _policy_from_config(make_project, bootstrap_resamples=300)
    assert shadow(champion, candidate, off, **slow).decision == Decision.PROMOTE
    on = _policy_from_config(make_project, bootstrap_resamples=300, max_latency_ratio=2)
    rec = shadow(champion, candidate, on, **slow)
    assert rec.decision == Decision.REJECT
    assert any("more than 2 times the champion's" in r for r in rec.reasons)
    assert shadow(champion, candidate, on, max_latency_ratio=5.0, **slow).decision == (
        Decision.PROMOTE
    )


def test_probation_max_error_rate_is_set_in_config(make_project: Any) -> None:
    default = _policy_from_config(make_project)
    assert check_probation(0.80, 0.80, 20, 0.08, default)[0]
    lenient = _policy_from_config(make_project, max_error_rate=0.1)
    back, reasons = check_probation(0.80, 0.80, 20, 0.08, lenient)
    assert not back and "Live error rate 8.00% is within 10.00%." in reasons
    # The keyword argument still overrides the policy.
    assert check_probation(0.80, 0.80, 20, 0.08, lenient, max_error_rate=0.05)[0]
