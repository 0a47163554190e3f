"""Promotion and rollback through the lifecycle while /predict takes load (issue 12, §5).

A real detached serving app (its own Ray) serves the tmp registry's v1. Load threads post
/predict on loopback without pause. The lifecycle then promotes v3 with
`manager.manual_decision(PROMOTE)` and rolls it back with `manual_decision(ROLLBACK)`, both
with the `on_applied` the CLI and the Dagster resource use (`server_reloader`): after each
registry move the app re-resolves the aliases and hot-swaps (`POST /admin/reload`), no
`reconfigure` from the test. No request may fail, the achieved rate must be >= 50 req/s, and
the answers' model_version must go 1 -> 3 -> 1.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import httpx
import pytest
from tests_support import detached_serving_app, serving_tests

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.context import Lifecycle, server_reloader
from mlops_assets.lifecycle.records import DecisionStatus
from mlops_assets.lifecycle.states import Actor, Decision

Stream = serving_tests("test_hot_swap").Stream  # CLIENTS threads posting /predict
wait_until = serving_tests("serving_support").wait_until

MIN_RATE = 50.0  # requests per second
PER_PHASE = 200  # answers to wait for after each swap


def versions_in_order(results: list[tuple[float, int, str | None]]) -> list[str | None]:
    """The served versions by send time, runs of one version collapsed."""
    return [v for v, _ in itertools.groupby(v for _, _, v in sorted(results))]


def test_promotion_and_rollback_under_load_fail_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with detached_serving_app(tmp_path / "proj", monkeypatch) as (settings, _, info):
        lc = Lifecycle.open(settings, on_applied=server_reloader(settings))
        try:
            with Stream(info.url) as stream:
                assert wait_until(lambda: len(stream.results) >= PER_PHASE, timeout_s=120)
                started = time.monotonic()
                promoted = manager.manual_decision(lc, Decision.PROMOTE, "3", actor=Actor.CLI)
                promoted_at = time.monotonic()  # the app's reload has answered
                assert wait_until(lambda: stream.count_after(promoted_at) >= PER_PHASE, 120)
                rolling = time.monotonic()
                rolled = manager.manual_decision(lc, Decision.ROLLBACK, actor=Actor.CLI)
                rolled_at = time.monotonic()
                assert wait_until(lambda: stream.count_after(rolled_at) >= PER_PHASE, 120)
                ended = time.monotonic()
            health = httpx.get(f"{info.url}/health", timeout=30).json()
        finally:
            lc.close()

    sent = len([1 for t, _, _ in stream.results if started <= t <= ended])
    rate = sent / (ended - started)
    print(
        f"lifecycle under load: {len(stream.results)} requests, {rate:.0f} req/s while "
        f"promoting and rolling back; swaps took {promoted_at - started:.1f} s and "
        f"{rolled_at - rolling:.1f} s"
    )
    assert stream.errors == []
    assert {code for _, code, _ in stream.results} == {200}
    assert rate >= MIN_RATE
    assert (promoted.decision, promoted.status) == (Decision.PROMOTE, DecisionStatus.APPLIED)
    assert (rolled.decision, rolled.status) == (Decision.ROLLBACK, DecisionStatus.APPLIED)
    assert rolled.challenger_version == "1"
    assert versions_in_order(stream.results) == ["1", "3", "1"]
    # Once the lifecycle's call returned, the app served the new champion.
    assert {v for t, _, v in stream.results if promoted_at < t < rolling} == {"3"}
    assert {v for t, _, v in stream.results if t > rolled_at} == {"1"}
    assert health["champion"]["version"] == "1"
