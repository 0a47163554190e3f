"""The edge guards: who may serve off loopback, and how a /feedback body is read."""

from __future__ import annotations

import pytest

from serving.edge import MAX_REQUEST_ID_CHARS, exposure_error, is_loopback, parse_labels
from serving.http import ApiError

TOKEN_ENV = "MLOPS_TEST_EDGE_TOKEN"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org", ""])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_serving_off_loopback_needs_the_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert exposure_error("127.0.0.1", TOKEN_ENV) is None
    message = exposure_error("0.0.0.0", TOKEN_ENV)
    assert message is not None and TOKEN_ENV in message and "0.0.0.0" in message
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    assert exposure_error("0.0.0.0", TOKEN_ENV) is None


def test_labels_outside_the_classes_are_refused_one_by_one() -> None:
    body = {
        "labels": [
            {"request_id": " a ", "label": 1},
            {"request_id": "b", "label": "maybe"},
            {"request_id": "c", "label": False},
        ]
    }
    items, refused = parse_labels(body, ["False", "True"])
    assert items == [("a", "True"), ("c", "False")]
    assert refused == [{"request_id": "b", "reason": "unknown_class"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({}, "labels"),
        ({"labels": []}, "labels"),
        ({"labels": ["x"]}, "labels[0]"),
        ({"labels": [{"request_id": "", "label": "True"}]}, "labels[0].request_id"),
        ({"labels": [{"request_id": "x" * (MAX_REQUEST_ID_CHARS + 1), "label": 1}]}, "request_id"),
        ({"labels": [{"request_id": "a", "label": None}]}, "labels[0].label"),
        ({"labels": [{"request_id": "a", "label": [1]}]}, "labels[0].label"),
    ],
)
def test_a_malformed_body_is_refused_whole(body: object, field: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_labels(body, ["False", "True"])
    assert 400 <= info.value.status < 500 and field in str(info.value.detail)
