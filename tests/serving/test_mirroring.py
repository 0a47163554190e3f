"""Mirroring: sampled at the configured rate, bounded, and invisible to the caller."""

from __future__ import annotations

from typing import Any

import pytest
from serving_support import MAX_INFLIGHT_SHADOW, Server, valid_features, wait_until

pytestmark = [pytest.mark.serving, pytest.mark.slow]


def _answers(server: Server, n: int, probe: list[float] | None = None) -> list[tuple]:
    """Status and answer of /predict for n fixed inputs (plus shadow in-flight samples)."""
    out = []
    for i in range(n):
        resp = server.client.post(f"{server.url}/predict", json={"features": valid_features(i)})
        body = resp.json()
        out.append(
            (
                resp.status_code,
                body.get("prediction"),
                body.get("probabilities"),
                body.get("model_version"),
            )
        )
        if probe is not None:
            probe.append(server.metric("mlops_shadow_inflight"))
    return out


def _sampled(server: Server) -> float:
    """Requests picked for mirroring so far: copies mirrored to version 2, plus copies dropped."""
    return server.metric("mlops_shadow_mirrored_total", model_version="2") + server.metric(
        "mlops_shadow_mirror_dropped_total"
    )


def _idle(server: Server) -> bool:
    return server.metric("mlops_shadow_inflight") == 0


def test_mirroring_follows_the_configured_rate(server: Server) -> None:
    server.reconfigure(shadow_traffic_percent=50)
    try:
        info = server.client.get(f"{server.url}/model/info").json()
        assert info["mirroring"]["shadow_traffic_percent"] == 50
        before = _sampled(server)
        answers = _answers(server, 200)
        assert all(a[0] == 200 for a in answers)
        assert wait_until(lambda: _idle(server))
        # Sampled = mirrored + dropped: at this rate a copy over max_inflight_shadow (8 in the
        # tests) is dropped by design, which says nothing about the sampling rate.
        sampled = _sampled(server) - before
        assert 0.30 * 200 <= sampled <= 0.70 * 200, sampled
    finally:
        server.reconfigure()
    assert (
        server.client.get(f"{server.url}/model/info").json()["mirroring"]["shadow_traffic_percent"]
        == 100
    )


def test_zero_percent_mirrors_nothing(server: Server) -> None:
    server.reconfigure(shadow_traffic_percent=0)
    try:
        before = server.metric("mlops_shadow_mirrored_total")
        assert all(a[0] == 200 for a in _answers(server, 20))
        assert wait_until(lambda: _idle(server))
        assert server.metric("mlops_shadow_mirrored_total") == before
    finally:
        server.reconfigure()


FAULTS: list[dict[str, Any]] = [
    {"kind": "raise"},
    {"kind": "sleep", "seconds": 5.0},
    {"kind": "crash"},
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f["kind"] for f in FAULTS])
def test_a_failing_shadow_changes_nothing_for_the_caller(
    server: Server, fault: dict[str, Any]
) -> None:
    n = 5 if fault["kind"] == "crash" else 20
    assert wait_until(lambda: _idle(server))
    baseline = _answers(server, n)
    assert all(a[0] == 200 for a in baseline)
    server.reconfigure(faults={"shadow-1": fault})
    try:
        assert (
            server.client.get(f"{server.url}/health").json()["shadows"][0]["fault"] == fault["kind"]
        )
        failed_before = server.metric("mlops_shadow_failures_total", model_version="2")
        inflight: list[float] = []
        faulty = _answers(server, n, probe=inflight)
        assert faulty == baseline
        assert wait_until(lambda: _idle(server), timeout_s=60)
        failed = server.metric("mlops_shadow_failures_total", model_version="2") - failed_before
        assert failed >= 1
        if fault["kind"] == "sleep":
            # Answers came back while shadow calls were still running: nobody waited for them.
            assert max(inflight) >= 1
            assert max(inflight) <= MAX_INFLIGHT_SHADOW
            assert server.metric("mlops_shadow_failures_total", kind="timeout") >= 1
    finally:
        server.reconfigure()
    assert _answers(server, n) == baseline


def test_in_flight_shadow_calls_are_bounded(server: Server) -> None:
    # The shadow holds every call for 10 s and the timeout is longer: slots are not freed
    # while the requests below run, so past the bound calls must be dropped, not queued.
    server.reconfigure(
        faults={"shadow-1": {"kind": "sleep", "seconds": 10.0}}, shadow_timeout_s=30.0
    )
    try:
        dropped_before = server.metric("mlops_shadow_mirror_dropped_total")
        n = 3 * MAX_INFLIGHT_SHADOW
        answers = _answers(server, n)
        inflight = server.metric("mlops_shadow_inflight")
        dropped = server.metric("mlops_shadow_mirror_dropped_total") - dropped_before
        assert all(a[0] == 200 for a in answers)
        assert inflight <= MAX_INFLIGHT_SHADOW
        assert dropped >= 1
        assert wait_until(lambda: _idle(server), timeout_s=60)
    finally:
        server.reconfigure()
