"""The typed OpenAPI document: built from the served InputSchema, agreeing with the validator.

The unit part checks the document's shape (3.1, every endpoint, enums, nullability, bounds that
are documentation only) and, with hypothesis, that a body is valid under the spec exactly when
`serving.validation` accepts it. The serving part checks that the running app serves this
document for its champion, that `/docs` renders it, and that it follows a hot swap.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from serving_support import MAX_BATCH, Server, churn_frame, valid_features

from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema, infer_schema
from serving import runner
from serving.http import MAX_STRING_CHARS
from serving.openapi import SPACE_CLASS, build_openapi, openapi_for
from serving.validation import MAX_ABS_NUMBER, validate_records

CLASSES = ["False", "True"]
ENDPOINTS = {
    "/predict": "post",
    "/batch_predict": "post",
    "/feedback": "post",
    "/admin/reload": "post",
    "/health": "get",
    "/model/info": "get",
    "/metrics": "get",
}
SCHEMA = InputSchema(
    target="target",
    classes=CLASSES,
    features=[
        FeatureSpec(name="age", type="number", nullable=False, min=18, max=100),
        FeatureSpec(name="usage", type="number", nullable=True, min=0),
        FeatureSpec(
            name="contract",
            type="category",
            nullable=False,
            categories=["month-to-month", "one-year", "two-year"],
            allow_unknown=False,
        ),
        FeatureSpec(name="region", type="category", categories=["north", "south"]),
        FeatureSpec(name="premium", type="binary", nullable=False),
        FeatureSpec(name="promo", type="binary", nullable=True),
    ],
)
DOC = build_openapi(SCHEMA, CLASSES, model_version="7", max_batch_size=MAX_BATCH)


def validator(doc: dict[str, Any], component: str) -> Draft202012Validator:
    """A JSON Schema 2020-12 validator for one component, resolving the document's $refs."""
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"urn:doc#/components/schemas/{component}"}, registry=registry
    )


PREDICT = validator(DOC, "PredictRequest")
BATCH = validator(DOC, "BatchPredictRequest")
GOOD = {
    "age": 40,
    "usage": 3.5,
    "contract": "one-year",
    "region": "north",
    "premium": True,
    "promo": None,
}


def feature(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The schema of one feature inside the /predict body."""
    return doc["components"]["schemas"]["Features"]["properties"][name]


# ------------------------------------------------------------------------------- the document


def test_document_is_openapi_31_with_every_endpoint() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert {p: next(iter(ops)) for p, ops in DOC["paths"].items()} == ENDPOINTS
    for path, method in ENDPOINTS.items():
        op = DOC["paths"][path][method]
        assert "200" in op["responses"], path
        if method == "post" and path != "/admin/reload":
            assert op["requestBody"]["required"] is True
            for code in ("400", "413", "422"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error"
    assert "text/plain" in DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert DOC["info"]["x-model-version"] == "7"
    # Every $ref points at a component that exists.
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOC)
    names = set(DOC["components"]["schemas"])
    assert refs and {r.removeprefix("#/components/schemas/") for r in refs} <= names


def test_features_are_typed_from_the_schema() -> None:
    features = DOC["components"]["schemas"]["Features"]
    assert features["required"] == SCHEMA.names
    assert feature(DOC, "contract")["enum"] == ["month-to-month", "one-year", "two-year"]
    assert "enum" not in feature(DOC, "region")  # unknown categories are warnings
    assert feature(DOC, "age")["type"] == "number"
    assert feature(DOC, "usage")["type"] == ["number", "null"]
    assert {"type": "null"} in feature(DOC, "promo")["anyOf"]
    assert {"type": "null"} not in feature(DOC, "premium")["anyOf"]
    # Training ranges are documentation (a fuzzer would call 1000 invalid, the server warns);
    # the hard bounds are the float32 range the server refuses past.
    age = feature(DOC, "age")
    assert (age["minimum"], age["maximum"]) == (-MAX_ABS_NUMBER, MAX_ABS_NUMBER)
    assert (age["x-training-min"], age["x-training-max"]) == (18, 100)
    assert feature(DOC, "region")["maxLength"] == MAX_STRING_CHARS


def test_security_and_feedback_bounds() -> None:
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
    }
    for path in ("/feedback", "/admin/reload"):
        assert {"bearerAuth": []} in DOC["paths"][path]["post"]["security"]
        assert {"401", "403"} <= set(DOC["paths"][path]["post"]["responses"])
    feedback = validator(DOC, "FeedbackRequest")
    ok = {"labels": [{"request_id": "a" * 32, "label": "True"}]}
    assert feedback.is_valid(ok)
    assert not feedback.is_valid({"labels": [{"request_id": "a" * 65, "label": "True"}]})
    assert not feedback.is_valid({"labels": [{"request_id": "a", "label": "maybe"}]})
    assert not feedback.is_valid({"labels": [{"request_id": " \t", "label": "True"}]})
    assert not feedback.is_valid({"labels": []})


def test_the_whitespace_class_is_what_strip_removes() -> None:
    # A regex engine's `\s` would do for Python, not for a fuzzer's ECMA-262 one (\x85, \ufeff).
    space = re.compile(f"[{SPACE_CLASS}]").fullmatch
    chars = (chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    assert [hex(ord(c)) for c in chars if bool(space(c)) != c.isspace()] == []
    feedback = validator(DOC, "FeedbackRequest")
    for rid in ("\x85", "\x1c \u3000"):
        assert not feedback.is_valid({"labels": [{"request_id": rid, "label": "True"}]})
    assert feedback.is_valid({"labels": [{"request_id": "\ufeff", "label": "True"}]})
    assert PREDICT.is_valid({"features": {**GOOD, "premium": "\x85yes\u2028"}})
    assert not PREDICT.is_valid({"features": {**GOOD, "premium": "\ufeffyes"}})


def test_request_bodies() -> None:
    assert PREDICT.is_valid({"features": GOOD})
    assert PREDICT.is_valid({"features": {**GOOD, "age": 1000, "extra": [1]}})  # warnings
    for bad in (
        {"contract": "weekly"},
        {"contract": None},
        {"age": "40"},
        {"premium": 2},
        {"premium": "maybe"},
    ):
        assert not PREDICT.is_valid({"features": {**GOOD, **bad}}), bad
    for word in ("yes", " No ", "TRUE", "t", "0", "1.0", "-1"):
        assert PREDICT.is_valid({"features": {**GOOD, "premium": word}}), word
    assert not PREDICT.is_valid({"features": {k: v for k, v in GOOD.items() if k != "age"}})
    assert BATCH.is_valid({"instances": [GOOD] * MAX_BATCH})
    assert not BATCH.is_valid({"instances": [GOOD] * (MAX_BATCH + 1)})
    assert not BATCH.is_valid({"instances": []})
    split = {"columns": SCHEMA.names, "data": [[GOOD[n] for n in SCHEMA.names]] * 2}
    assert BATCH.is_valid({"dataframe_split": split})
    assert not BATCH.is_valid({"dataframe_split": {**split, "data": [[1, 2]]}})


def test_classes_shape_the_responses() -> None:
    schemas = DOC["components"]["schemas"]
    assert schemas["Label"]["enum"] == CLASSES
    assert schemas["Probabilities"]["required"] == CLASSES
    response = validator(DOC, "PredictResponse")
    body = {
        "request_id": "0" * 32,
        "prediction": "True",
        "probabilities": {"False": 0.25, "True": 0.75},
        "model_version": "7",
        "warnings": [{"field": "features.age", "message": "above", "kind": "out_of_range"}],
    }
    assert response.is_valid(body)
    assert not response.is_valid({**body, "prediction": "Maybe"})


def test_openapi_for_a_model_server_info_dict() -> None:
    frame = churn_frame(200, seed=3)
    schema = infer_schema(frame, "target")
    info = {
        "loaded": True,
        "version": "4",
        "classes": CLASSES,
        "schema": schema.model_dump(mode="json"),
    }
    doc = openapi_for(info, max_batch_size=10)
    assert doc["info"]["x-model-version"] == "4"
    assert doc["components"]["schemas"]["Features"]["required"] == schema.names
    row = valid_features(0)
    assert validator(doc, "PredictRequest").is_valid({"features": row})
    # Nothing loaded: still a complete document, with untyped features.
    empty = openapi_for({"loaded": False, "slot": "champion"})
    assert set(empty["paths"]) == set(ENDPOINTS)
    assert "properties" not in empty["components"]["schemas"]["Features"]
    assert empty["info"]["x-model-version"] is None


# ---------------------------------------------------------------- the spec agrees with the server

WORDS = [
    "yes",
    "No",
    " true ",
    "\x85t\x1c",
    "\ufeffno",
    "T",
    "0",
    "1.0",
    "-1",
    "maybe",
    "",
    "one-year",
    "weekly",
    "north",
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, 1, 0.0, 1.0, 2, -1, 1e39, -1e300, "x" * (MAX_STRING_CHARS + 1)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(WORDS),
    st.text(alphabet="aeinorstuyTFYN01. \t\n-", max_size=6),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@st.composite
def records(draw: st.DrawFn) -> Any:
    """A feature dict around GOOD: values replaced, keys dropped or added; or not a dict."""
    if draw(st.integers(0, 20)) == 0:
        return draw(VALUES)
    out = dict(GOOD)
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            out.pop(key)
        else:
            out[key] = draw(VALUES)
    out.update(draw(st.dictionaries(st.sampled_from(["x", "y"]), VALUES, max_size=1)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_a_body_is_valid_under_the_spec_exactly_when_the_server_accepts_it(record: Any) -> None:
    accepted = validate_records(SCHEMA, [record], "features", single=True).ok
    valid = PREDICT.is_valid({"features": record})
    if valid:
        assert accepted, record  # a client that follows the spec is never refused
    # The one leniency the spec leaves out: the server reads an integer category as its text.
    lenient = isinstance(record, dict) and type(record.get("region")) is int
    if not lenient:
        assert valid == accepted, record


# ---------------------------------------------------------------------------- the running app


@pytest.mark.serving
@pytest.mark.slow
def test_the_app_serves_the_champions_spec_and_docs(server: Server) -> None:
    doc = server.client.get(f"{server.url}/openapi.json").json()
    info = server.client.get(f"{server.url}/model/info").json()["champion"]
    assert doc["openapi"] == "3.1.0" and set(ENDPOINTS) <= set(doc["paths"])
    assert doc["info"]["x-model-version"] == info["version"]
    features = doc["components"]["schemas"]["Features"]
    assert features["required"] == [f["name"] for f in info["input_schema"]["features"]]
    assert features["properties"]["contract"]["enum"] == ["month-to-month", "one-year", "two-year"]
    assert doc["components"]["schemas"]["Label"]["enum"] == info["classes"]
    assert validator(doc, "PredictRequest").is_valid({"features": valid_features(1)})
    docs = server.client.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text


@pytest.mark.serving
@pytest.mark.slow
def test_the_spec_follows_a_hot_swap(server: Server) -> None:
    def spec() -> dict[str, Any]:
        return server.client.get(f"{server.url}/openapi.json").json()

    def charges_max(doc: dict[str, Any]) -> float:
        return feature(doc, "monthly_charges")["x-training-max"]

    before = spec()
    assert before["info"]["x-model-version"] == "1"
    try:
        server.registry.set_alias("champion", "2")  # trained on drifted data: other ranges
        server.reload()
        after = spec()
        info = server.client.get(f"{server.url}/model/info").json()["champion"]
        assert after["info"]["x-model-version"] == "2"
        schema = InputSchema.model_validate(info["input_schema"])
        assert charges_max(after) == schema.feature("monthly_charges").max
        assert charges_max(after) != charges_max(before)
    finally:
        server.registry.set_alias("champion", "1")
        server.registry.set_alias("challenger", "2")
        assert runner.reload(server.settings) == {"champion": "1", "shadow-1": "2"}
    assert spec()["info"]["x-model-version"] == "1"
