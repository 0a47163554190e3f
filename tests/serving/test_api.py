"""Every endpoint of the serving API against a real Ray Serve app: answers and error codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from serving_support import (
    MAX_BATCH,
    MAX_BODY,
    MAX_INFLIGHT_SHADOW,
    Server,
    valid_features,
    wait_until,
)

pytestmark = [pytest.mark.serving, pytest.mark.slow]


def test_health_reports_champion_and_shadow(server: Server) -> None:
    resp = server.client.get(f"{server.url}/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["champion"]["version"] == "1"
    assert body["champion"]["mode"] == "torchscript"
    assert [s["version"] for s in body["shadows"]] == ["2"]
    # Shadows yield the CPU to the champion (Ray starts every worker at some niceness; a
    # shadow adds serving.shadow_nice to it, up to 19).
    assert body["shadows"][0]["nice"] > body["champion"]["nice"]


def test_model_info_describes_served_versions(server: Server) -> None:
    body = server.client.get(f"{server.url}/model/info").json()
    champ = body["champion"]
    assert champ["name"] == "churn-classifier"
    assert champ["version"] == "1"
    assert champ["run_id"] == server.registry.runs["a"]
    assert champ["state"] == "champion"
    assert champ["data_sha256"] == ["sha-a1", "sha-a2"]
    assert champ["metrics"]["accuracy"] == pytest.approx(0.71)
    assert champ["promoted_at"] == "2026-11-01T00:00:00Z"
    assert champ["mode"] == "fast path"
    names = [f["name"] for f in champ["input_schema"]["features"]]
    assert "age" in names and "contract" in names
    [shadow] = body["shadows"]
    assert shadow["version"] == "2"
    assert shadow["state"] == "shadow"
    assert body["mirroring"]["shadow_traffic_percent"] == 100


def test_predict_answers_with_champion(server: Server) -> None:
    resp = server.client.post(f"{server.url}/predict", json={"features": valid_features(3)})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"request_id", "prediction", "probabilities", "model_version"}
    assert body["model_version"] == "1"
    assert body["prediction"] in ("False", "True")
    assert set(body["probabilities"]) == {"False", "True"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    best = max(body["probabilities"], key=body["probabilities"].get)
    assert best == body["prediction"]


def test_same_input_same_answer(server: Server) -> None:
    features = valid_features(5)
    a = server.client.post(f"{server.url}/predict", json={"features": features}).json()
    b = server.client.post(f"{server.url}/predict", json={"features": features}).json()
    assert a["prediction"] == b["prediction"]
    assert a["probabilities"] == b["probabilities"]
    assert a["request_id"] != b["request_id"]


def test_batch_predict_matches_single_predictions(server: Server) -> None:
    rows = [valid_features(i) for i in range(7)]
    resp = server.client.post(f"{server.url}/batch_predict", json={"instances": rows})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["request_ids"]) == len(set(body["request_ids"])) == 7
    assert len(body["predictions"]) == len(body["probabilities"]) == 7
    assert body["model_version"] == "1"
    single = server.client.post(f"{server.url}/predict", json={"features": rows[2]}).json()
    assert body["predictions"][2] == single["prediction"]
    for cls, p in single["probabilities"].items():
        assert body["probabilities"][2][cls] == pytest.approx(p, abs=1e-6)


def test_batch_predict_takes_mlflow_dataframe_split_too(server: Server) -> None:
    rows = [valid_features(i) for i in range(5)]
    columns = list(rows[0])[::-1]  # any column order
    split = {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
    a = server.client.post(f"{server.url}/batch_predict", json={"dataframe_split": split})
    b = server.client.post(f"{server.url}/batch_predict", json={"instances": rows})
    assert a.status_code == b.status_code == 200, a.text
    assert a.json()["predictions"] == b.json()["predictions"]
    assert a.json()["probabilities"] == b.json()["probabilities"]


def test_warnings_are_answered_not_refused(server: Server) -> None:
    features = valid_features(1) | {"region": "atlantis", "age": 150, "extra_column": 1}
    resp = server.client.post(f"{server.url}/predict", json={"features": features})
    assert resp.status_code == 200, resp.text
    kinds = {w["field"]: w["kind"] for w in resp.json()["warnings"]}
    assert kinds["features.region"] == "unknown_category"
    assert kinds["features.age"] == "out_of_range"
    assert kinds["features.extra_column"] == "unknown_feature"
    assert server.metric("mlops_input_warnings_total", feature="region") >= 1


def _features(**changes: Any) -> dict[str, Any]:
    features = valid_features(0)
    for key, value in changes.items():
        if value is _DROP:
            features.pop(key)
        else:
            features[key] = value
    return features


_DROP = object()
_GOOD = valid_features(0)

# (name, endpoint, raw body, expected status, field the 422 must name)
MALFORMED: list[tuple[str, str, bytes, int, str | None]] = [
    ("empty body", "/predict", b"", 400, None),
    ("not json", "/predict", b"{features: 1", 400, None),
    ("not utf-8", "/predict", b"\xff\xfe\x00", 400, None),
    ("top-level array", "/predict", b"[]", 422, "body"),
    ("top-level string", "/predict", b'"hello"', 422, "body"),
    ("top-level null", "/predict", b"null", 422, "body"),
    ("no features key", "/predict", json.dumps({"feature": _GOOD}).encode(), 422, "features"),
    ("features is a list", "/predict", b'{"features": [1, 2]}', 422, "features"),
    ("features is empty", "/predict", b'{"features": {}}', 422, "features.age"),
    (
        "missing feature",
        "/predict",
        json.dumps({"features": _features(age=_DROP)}).encode(),
        422,
        "features.age",
    ),
    (
        "string for number",
        "/predict",
        json.dumps({"features": _features(age="old")}).encode(),
        422,
        "features.age",
    ),
    (
        "bool for number",
        "/predict",
        json.dumps({"features": _features(age=True)}).encode(),
        422,
        "features.age",
    ),
    (
        "NaN",
        "/predict",
        json.dumps({"features": _features(tenure_months=float("nan"))}).encode(),
        422,
        "features.tenure_months",
    ),
    (
        "Infinity",
        "/predict",
        json.dumps({"features": _features(monthly_charges=float("inf"))}).encode(),
        422,
        "features.monthly_charges",
    ),
    (
        "object for number",
        "/predict",
        json.dumps({"features": _features(age={"v": 1})}).encode(),
        422,
        "features.age",
    ),
    (
        "float for category",
        "/predict",
        json.dumps({"features": _features(contract=1.5)}).encode(),
        422,
        "features.contract",
    ),
    (
        "unknown closed category",
        "/predict",
        json.dumps({"features": _features(contract="weekly")}).encode(),
        422,
        "features.contract",
    ),
    (
        "null for non-nullable",
        "/predict",
        json.dumps({"features": _features(contract=None)}).encode(),
        422,
        "features.contract",
    ),
    ("instances missing", "/batch_predict", b'{"rows": []}', 422, "instances"),
    ("instances not a list", "/batch_predict", b'{"instances": {"a": 1}}', 422, "instances"),
    ("instances empty", "/batch_predict", b'{"instances": []}', 422, "instances"),
    (
        "instance not an object",
        "/batch_predict",
        json.dumps({"instances": [_GOOD, 7]}).encode(),
        422,
        "instances[1]",
    ),
    (
        "bad field in a row",
        "/batch_predict",
        json.dumps({"instances": [_GOOD, _GOOD, _features(region=3.5)]}).encode(),
        422,
        "instances[2].region",
    ),
    (
        "batch too large",
        "/batch_predict",
        json.dumps({"instances": [{"age": 1}] * (MAX_BATCH + 1)}).encode(),
        413,
        None,
    ),
    (
        "split data row of the wrong width",
        "/batch_predict",
        b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}',
        422,
        "dataframe_split.data[1]",
    ),
    (
        "split columns not names",
        "/batch_predict",
        b'{"dataframe_split": {"columns": [1, 2], "data": []}}',
        422,
        "dataframe_split.columns",
    ),
    (
        "split repeated column",
        "/batch_predict",
        b'{"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}',
        422,
        "dataframe_split.columns",
    ),
    (
        "split not an object",
        "/batch_predict",
        b'{"dataframe_split": [[1, 2]]}',
        422,
        "dataframe_split",
    ),
    (
        "split row with a bad value",
        "/batch_predict",
        json.dumps(
            {
                "dataframe_split": {
                    "columns": list(_GOOD),
                    "data": [list(_GOOD.values()), list(_features(region=3.5).values())],
                }
            }
        ).encode(),
        422,
        "dataframe_split.data[1].region",
    ),
    ("labels missing", "/feedback", b'{"label": []}', 422, "labels"),
    ("labels not a list", "/feedback", b'{"labels": "x"}', 422, "labels"),
    (
        "label without id",
        "/feedback",
        b'{"labels": [{"label": "True"}]}',
        422,
        "labels[0].request_id",
    ),
    (
        "label without label",
        "/feedback",
        b'{"labels": [{"request_id": "abc"}]}',
        422,
        "labels[0].label",
    ),
    ("feedback not json", "/feedback", b"labels=1", 400, None),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "status", "field"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_bodies_get_4xx(
    server: Server, endpoint: str, body: bytes, status: int, field: str | None
) -> None:
    resp = server.client.post(
        f"{server.url}{endpoint}", content=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    detail = resp.json()
    if field is not None:
        assert field in detail["detail"]
        assert field in [e["field"] for e in detail["errors"]]


def test_oversize_body_gets_413(server: Server) -> None:
    big = json.dumps({"features": valid_features(0) | {"pad": "x" * (MAX_BODY + 10)}})
    resp = server.client.post(
        f"{server.url}/predict", content=big, headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413


def test_oversize_chunked_body_without_length_gets_413(server: Server) -> None:
    def chunks():
        yield b'{"features": {"pad": "'
        for _ in range(MAX_BODY // 1000 + 5):
            yield b"x" * 1000
        yield b'"}}'

    resp = server.client.post(f"{server.url}/batch_predict", content=chunks())
    assert resp.status_code == 413


def test_unknown_route_and_method_are_4xx(server: Server) -> None:
    assert server.client.get(f"{server.url}/nope").status_code == 404
    assert server.client.get(f"{server.url}/predict").status_code == 405


def test_feedback_counts_and_reports_unknown_ids(server: Server) -> None:
    ids = [
        server.client.post(f"{server.url}/predict", json={"features": valid_features(i)}).json()[
            "request_id"
        ]
        for i in range(3)
    ]
    labels = [
        {"request_id": rid, "label": lab} for rid, lab in zip(ids, [1, "False", True], strict=True)
    ]
    labels.append({"request_id": "no-such-request", "label": "True"})
    resp = server.client.post(f"{server.url}/feedback", json={"labels": labels})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["unknown_ids"] == ["no-such-request"]
    assert body["accepted"] >= 3
    stored = server.store().labels(ids)
    assert stored == {ids[0]: "True", ids[1]: "False", ids[2]: "True"}


def test_prediction_log_holds_both_roles_and_joins_labels(server: Server) -> None:
    # Fewer requests than the mirror's bound (MAX_INFLIGHT_SHADOW), sent once earlier tests'
    # copies have landed: a copy over the bound is dropped by design, and never logged.
    assert wait_until(lambda: server.metric("mlops_shadow_inflight") == 0)
    ids = []
    for i in range(MAX_INFLIGHT_SHADOW - 2):
        resp = server.client.post(f"{server.url}/predict", json={"features": valid_features(i)})
        ids.append(resp.json()["request_id"])
    store = server.store()

    def logged() -> bool:
        rows = store.predictions(request_ids=ids)
        return {(r.request_id, r.role) for r in rows} >= {(i, "shadow") for i in ids}

    if not wait_until(logged):
        rows = store.predictions(request_ids=ids)
        names = [
            "mlops_shadow_mirrored_total",
            "mlops_shadow_mirror_dropped_total",
            "mlops_shadow_failures_total",
            "mlops_prediction_log_written_total",
            "mlops_prediction_log_dropped_total",
            "mlops_prediction_log_queued_rows",
        ]
        state = {name: server.metric(name) for name in names}
        health = server.client.get(f"{server.url}/health").text
        pytest.fail(
            f"shadow rows never reached the prediction log: logged roles "
            f"{sorted(r.role for r in rows)}; {state}; health {health}"
        )
    rows = store.predictions(request_ids=ids)
    champion = {r.request_id: r for r in rows if r.role == "champion"}
    shadow = {r.request_id: r for r in rows if r.role == "shadow"}
    assert set(champion) == set(shadow) == set(ids)
    row = champion[ids[0]]
    assert row.model_version == "1" and shadow[ids[0]].model_version == "2"
    assert row.inputs["contract"] == valid_features(0)["contract"]
    assert row.prediction in ("False", "True") and row.latency_ms is not None
    assert set(row.probabilities) == {"False", "True"}

    labels = [
        {"request_id": rid, "label": "True" if n % 2 else "False"} for n, rid in enumerate(ids)
    ]
    resp = server.client.post(f"{server.url}/feedback", json={"labels": labels})
    assert resp.status_code == 200 and resp.json()["unknown_ids"] == []
    pairs = store.labelled_pairs("1", "2")
    joined = pairs[pairs["request_id"].isin(ids)]
    assert len(joined) == len(ids)
    assert set(joined["label"]) == {"True", "False"}


def test_metrics_use_the_contract_names(server: Server) -> None:
    server.client.post(f"{server.url}/predict", json={"features": valid_features(0)})
    server.client.post(f"{server.url}/predict", content=b"[]")
    text = server.client.get(f"{server.url}/metrics").text
    assert (
        server.metric(
            "mlops_requests_total",
            role="champion",
            endpoint="/predict",
            code="200",
            model_version="1",
        )
        >= 1
    )
    assert server.metric("mlops_requests_total", endpoint="/predict", code="422") >= 1
    assert server.metric("mlops_request_latency_seconds_count", role="champion") >= 1
    assert server.metric("mlops_predictions_total", role="champion", model_version="1") >= 1
    assert server.metric("mlops_champion_info", model_version="1") == 1
    assert "mlops_shadow_mirror_dropped_total" in text
    assert server.metric("mlops_model_metric", role="champion", metric="accuracy") > 0
    assert wait_until(lambda: server.metric("mlops_prediction_log_written_total") > 0)


def test_metrics_export_drift_and_decisions_from_the_store(server: Server) -> None:
    from mlops_assets.lifecycle.drift import DriftResult
    from mlops_assets.lifecycle.records import DecisionRecord
    from mlops_assets.lifecycle.states import Actor, Decision

    name = server.settings.model_name
    store = server.store()
    before = store.decision_counts(name).get("KEEP_CHAMPION", 0)
    store.record_drift(
        name,
        "f" * 64,
        "1",
        [
            DriftResult(
                feature="monthly_charges",
                method="psi",
                statistic=0.42,
                p_value=None,
                threshold=0.2,
                drifted=True,
            ),
            DriftResult(
                feature="contract",
                method="chi_square",
                statistic=31.5,
                p_value=1e-6,
                threshold=0.01,
                drifted=True,
            ),
        ],
    )
    store.record_decision(
        DecisionRecord(
            decision=Decision.KEEP_CHAMPION,
            actor=Actor.CLI,
            model_name=name,
            champion_version="1",
            challenger_version="2",
        )
    )

    def exported() -> bool:
        return server.metric(
            "mlops_lifecycle_decisions_total", decision="KEEP_CHAMPION"
        ) == before + 1 and server.metric(
            "mlops_feature_drift", feature="monthly_charges", method="psi"
        ) == pytest.approx(0.42)

    assert wait_until(exported, timeout_s=30)
    assert server.metric(
        "mlops_feature_drift_p_value", feature="contract", method="chi_square"
    ) == pytest.approx(1e-6)
    assert server.metric("mlops_lifecycle_decisions_total", decision="ROLLBACK") == 0


def test_admin_reload_needs_the_token(server: Server) -> None:
    url = f"{server.url}/admin/reload"
    assert server.client.post(url).status_code == 401
    assert server.client.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert server.client.post(url, headers={"Authorization": "Basic abc"}).status_code == 403
    body = server.reload()
    assert body["slots"] == {"champion": "1", "shadow-1": "2"}
