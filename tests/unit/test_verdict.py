"""Checks as data: stored on the record, read back by old and new code, explained in one step."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from verdict_scenarios import SCENARIOS, pair, policy, shadow

from mlops_assets.lifecycle.policy import decide_offline
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.states import Actor, Decision
from mlops_assets.lifecycle.store import LifecycleStore
from mlops_assets.lifecycle.verdict import (
    TEMPLATES,
    Check,
    CheckName,
    Stage,
    awaiting_manual_promotion,
    check,
    explain,
)


def test_checks_survive_the_lifecycle_store(sqlite_url: str) -> None:
    manual = SCENARIOS["manual_keep"]()
    _, challenger = pair(flips=60)
    wrong = np.where(challenger.y_true == "1", "0", "1")  # the champion scores 0: an infinite gain
    champion = challenger.model_copy(update={"version": "1", "y_pred": wrong})
    relative = decide_offline(
        champion,
        challenger,
        policy(improvement="relative", metric_floors={}, max_metric_degradation=1.0),
        model_name="m",
        actor=Actor.CLI,
    )
    assert any(c.value == math.inf for c in relative.checks)
    with LifecycleStore(sqlite_url) as store:
        for rec in (manual, relative, SCENARIOS["undefined_guard_rail"]()):
            store.record_decision(rec)
            back = store.get_decision(rec.id)
            assert back is not None
            assert back.checks == rec.checks
            assert back.reasons == rec.reasons
        assert awaiting_manual_promotion(store.get_decision(manual.id))


def test_a_record_stored_before_checks_is_read_with_none() -> None:
    rec = SCENARIOS["start_shadow"]()
    data = json.loads(rec.model_dump_json())
    del data["checks"]
    old = DecisionRecord.model_validate(data)
    assert old.checks == [] and old.decision == Decision.START_SHADOW
    assert old.reasons == rec.reasons
    assert not awaiting_manual_promotion(old)


def test_check_values_are_finite_or_none() -> None:
    c = check(CheckName.THRESHOLD, False, value=math.nan, limit=0.05, detail={"x": math.nan})
    assert c.value is None and c.detail == {"x": None}
    inf = check(CheckName.THRESHOLD, True, value=math.inf, limit=0.05)
    assert Check.model_validate_json(inf.model_dump_json()) == inf
    with pytest.raises(ValueError, match="frozen"):
        inf.passed = False  # type: ignore[misc]


def test_a_significance_check_without_a_test_is_explained() -> None:
    rec = shadow(*pair(n=300, flips=50))
    sig = next(c for c in rec.checks if c.name == CheckName.SIGNIFICANCE)
    untested = sig.model_copy(
        update={"value": None, "passed": False, "detail": {**sig.detail, "test": None}}
    )
    checks = [untested if c is sig else c for c in rec.checks]
    lines = explain(Stage.SHADOW, checks, rec.model_copy(update={"decision": Decision.REJECT}))
    assert any(line.endswith("; no paired test could be run on these rows.") for line in lines)
    assert any("is not significant at alpha 0.05" in line for line in lines)


def test_every_template_is_a_plain_format_string() -> None:
    for key, text in TEMPLATES.items():
        assert text.strip() == text and text, key
        # Only named fields: a reworded template may drop any of them.
        assert "{}" not in text, key
