"""Fuzzing the HTTP API: whatever the body, the answer is 2xx or a 4xx with a reason, never 5xx.

Bodies are built by hypothesis around the real request shapes (right keys, wrong values;
wrong keys; random JSON; random bytes), so most of them reach the model replica's validation
rather than stopping at the JSON parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import Server, valid_features

pytestmark = [pytest.mark.serving, pytest.mark.slow]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
GOOD = valid_features(0)


@st.composite
def features(draw: st.DrawFn) -> dict[str, Any]:
    """A valid feature dict with some values replaced, some keys dropped or added."""
    out = dict(GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=4, unique=True)):
        if draw(st.booleans()):
            out[key] = draw(JSON)
        else:
            out.pop(key)
    out.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=2)))
    return out


def encode(value: Any) -> bytes:
    """JSON as lenient clients write it (NaN and Infinity included)."""
    return json.dumps(value, allow_nan=True).encode()


BODIES = st.one_of(
    features().map(lambda f: ("/predict", encode({"features": f}))),
    st.lists(features(), min_size=1, max_size=5).map(
        lambda rows: ("/batch_predict", encode({"instances": rows}))
    ),
    st.lists(st.lists(JSON, max_size=len(GOOD) + 1), max_size=3).map(
        lambda data: (
            "/batch_predict",
            encode({"dataframe_split": {"columns": sorted(GOOD), "data": data}}),
        )
    ),
    st.lists(
        st.fixed_dictionaries({"request_id": JSON, "label": JSON}), min_size=0, max_size=3
    ).map(lambda labels: ("/feedback", encode({"labels": labels}))),
    st.tuples(st.sampled_from(["/predict", "/batch_predict", "/feedback"]), JSON.map(encode)),
    st.tuples(st.sampled_from(["/predict", "/batch_predict"]), st.binary(max_size=64)),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(BODIES)
def test_no_body_gets_a_server_error(server: Server, case: tuple[str, bytes]) -> None:
    endpoint, body = case
    resp = server.client.post(
        f"{server.url}{endpoint}", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code < 500, (endpoint, body[:300], resp.status_code, resp.text[:300])
    payload = resp.json()
    if resp.status_code >= 400:
        assert payload["detail"], payload  # every refusal says why
    elif endpoint == "/predict":
        assert sum(payload["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert all(math.isfinite(p) for p in payload["probabilities"].values())
