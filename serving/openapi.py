"""The typed OpenAPI 3.1 document of the HTTP API, built from the champion's stored input schema.

`build_openapi(schema, classes, ...)` declares a request and response model for every endpoint.
The `/predict` and `/batch_predict` bodies come from the served version's `InputSchema`:
feature names (all required), types, categories (an enum when the feature refuses unknowns)
and nullability. Training ranges are documentation only (`x-training-min`/`x-training-max`
and the description): the server answers an out-of-range number with a warning, so the spec
must not call it invalid, or a fuzzer's "negative" cases would expect a 4xx that never comes.
The hard bounds in the spec are the ones the server refuses past: the float32 range of the
models and the body limits of `serving.http` (string length, keys per object).

`openapi_for(info)` takes a ModelServer `info()` dict, so the ingress can serve the spec of the
version loaded right now and the document follows a hot swap. No Ray, no Dagster here.
"""

from __future__ import annotations

from typing import Any

from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from mlops_assets.lifecycle.bundle import BOOL_FALSE_STRS, BOOL_TRUE_STRS
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema
from serving.http import MAX_KEYS, MAX_STRING_CHARS
from serving.validation import MAX_ABS_NUMBER

MAX_REQUEST_ID_LENGTH = 64
_JSON = "application/json"
_STR = {"type": "string"}
# The characters str.strip() removes (str.isspace), spelled out: `\s` means other sets in
# Python and ECMA-262 regexes (\x1c-\x1f and \x85 against \ufeff).
SPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# The hard bounds the server refuses past (serving.http body limits, the models' float32 range).
_TEXT = {"type": "string", "maxLength": MAX_STRING_CHARS}
_NUMBER = {"type": "number", "minimum": -MAX_ABS_NUMBER, "maximum": MAX_ABS_NUMBER}
_REQUEST_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "128-bit hex id"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


def _nullable(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    """Allow JSON null: `type: [t, "null"]`, a null enum member, or a null branch."""
    if not nullable:
        return schema
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [*schema["anyOf"], {"type": "null"}], **_doc(schema)}


def _doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k in ("description", "examples")}


def _caseless(token: str) -> str:
    """A regex matching `token` in any letter case (JSON Schema regexes have no flags)."""
    return "".join(
        f"[{c.lower()}{c.upper()}]" if c.isalpha() else c.replace(".", r"\.") for c in token
    )


def _binary_strings(extra: set[str] | None) -> dict[str, Any]:
    tokens = sorted(BOOL_TRUE_STRS | BOOL_FALSE_STRS)
    words = "|".join(_caseless(t) for t in tokens)
    pattern = f"^[{SPACE_CLASS}]*({words})[{SPACE_CLASS}]*$"
    branch: dict[str, Any] = {**_TEXT, "pattern": pattern}
    if extra:
        return {"anyOf": [branch, {"type": "string", "enum": sorted(extra)}]}
    return branch


def feature_schema(spec: FeatureSpec, binary_strings: set[str] | None = None) -> dict[str, Any]:
    """The JSON Schema of one feature's value, as the server validates it."""
    out: dict[str, Any]
    if spec.type == "number":
        out = dict(_NUMBER)
        lo, hi = spec.min, spec.max
        if lo is not None or hi is not None:
            out["x-training-min"], out["x-training-max"] = lo, hi
            out["description"] = (
                f"training range [{'-inf' if lo is None else f'{lo:g}'}, "
                f"{'inf' if hi is None else f'{hi:g}'}]; values outside it are answered with "
                "an out_of_range warning, not refused"
            )
            out["examples"] = [lo if lo is not None else hi]
    elif spec.type == "category":
        cats = spec.categories or []
        if cats and not spec.allow_unknown:
            out = {"enum": list(cats), "description": "one of the training categories"}
        else:
            # The server also reads an integer as its text; the spec asks for the string,
            # because JSON Schema cannot tell 2 from 2.0 and the server refuses a float.
            out = {**_TEXT, "description": "values not seen in training get a warning"}
            if cats:
                out["examples"] = cats[:1]
    else:
        string = _binary_strings(binary_strings)
        branches = string.get("anyOf", [string])
        out = {
            "anyOf": [{"type": "boolean"}, {"enum": [0, 1]}, *branches],
            "description": "true/false, 0/1 or a boolean word (yes/no, t/f, ...)",
            "examples": [True],
        }
    return _nullable(out, spec.nullable)


def _features_schema(
    schema: InputSchema | None, binary_strings: dict[str, set[str]] | None
) -> dict[str, Any]:
    if schema is None:
        return {
            "type": "object",
            "maxProperties": MAX_KEYS,
            "description": "no champion is loaded: inputs are unknown",
        }
    strings = binary_strings or {}
    return {
        "type": "object",
        "properties": {f.name: feature_schema(f, strings.get(f.name)) for f in schema.features},
        "required": schema.names,
        "maxProperties": MAX_KEYS,
        "description": "every model input; other keys are ignored with an unknown_feature warning",
    }


def _dataframe_split(schema: InputSchema | None, max_batch_size: int) -> dict[str, Any]:
    row: dict[str, Any] = {"type": "array"}
    columns: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
    if schema is not None:
        n = len(schema.features)
        columns = {**columns, "const": schema.names}
        row = {**row, "prefixItems": [_ref(f"Feature_{i}") for i in range(n)]}
        row.update(minItems=n, maxItems=n)
    data = {"type": "array", "items": row, "minItems": 1, "maxItems": max_batch_size}
    return {
        "type": "object",
        "properties": {"columns": columns, "data": data},
        "required": ["columns", "data"],
        "description": "MLflow's split orientation: column names and rows of values",
    }


def _components(
    schema: InputSchema | None,
    classes: list[str] | None,
    max_batch_size: int,
    binary_strings: dict[str, set[str]] | None,
) -> dict[str, Any]:
    label: dict[str, Any] = {"type": "string"}
    probs: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}
    if classes:
        label = {"type": "string", "enum": list(classes)}
        prob = {"type": "number", "minimum": 0, "maximum": 1}
        probs = {"type": "object", "properties": dict.fromkeys(classes, prob)}
        probs |= {"required": list(classes), "additionalProperties": False}
    issue = _obj(["field", "message"], **dict.fromkeys(("field", "message", "kind"), _STR))
    feature_refs: dict[str, Any] = {}
    if schema is not None:
        strings = binary_strings or {}
        for i, spec in enumerate(schema.features):
            feature_refs[f"Feature_{i}"] = {
                "title": spec.name,
                **feature_schema(spec, strings.get(spec.name)),
            }
    version = {"type": "string", "description": "the registry version that answered"}
    warnings = {"type": "array", "items": _ref("Issue")}
    instances = {"type": "array", "items": _ref("Features"), "minItems": 1}
    split = _obj(["dataframe_split"], dataframe_split=_dataframe_split(schema, max_batch_size))
    # Not blank: the server strips the id before it looks it up.
    request_id = {"type": "string", "pattern": f"[^{SPACE_CLASS}]"}
    request_id["maxLength"] = MAX_REQUEST_ID_LENGTH
    label_item = _obj(["request_id", "label"], request_id=request_id, label=_ref("Label"))
    objects = {"type": "array", "items": {"type": "object"}}
    nullable_object = {"type": ["object", "null"]}
    return {
        "Features": _features_schema(schema, binary_strings),
        "Label": label,
        "Probabilities": probs,
        "Issue": issue,
        "Error": _obj(["detail"], detail=_STR, errors=warnings),
        "PredictRequest": _obj(["features"], features=_ref("Features")),
        "BatchPredictRequest": {
            "oneOf": [
                _obj(["instances"], instances={**instances, "maxItems": max_batch_size}),
                {**split, "not": {"required": ["instances"]}},
            ]
        },
        "PredictResponse": _obj(
            ["request_id", "prediction", "probabilities", "model_version"],
            request_id=_REQUEST_ID,
            prediction=_ref("Label"),
            probabilities=_ref("Probabilities"),
            model_version=version,
            warnings=warnings,
        ),
        "BatchPredictResponse": _obj(
            ["request_ids", "predictions", "probabilities", "model_version"],
            request_ids={"type": "array", "items": _REQUEST_ID},
            predictions={"type": "array", "items": _ref("Label")},
            probabilities={"type": "array", "items": _ref("Probabilities")},
            model_version=version,
            warnings=warnings,
        ),
        "FeedbackRequest": _obj(
            ["labels"], labels={"type": "array", "minItems": 1, "items": label_item}
        ),
        # How many labels were stored; the other keys (rejections and why) are not pinned here.
        "FeedbackResponse": _obj(["accepted"], accepted={"type": "integer", "minimum": 0}),
        "Health": _obj(
            ["status", "champion", "shadows"],
            status={"enum": ["ok", "unavailable"]},
            champion=nullable_object,
            shadows=objects,
            detail=_STR,
        ),
        "ModelInfo": _obj(
            ["model_name", "champion", "shadows"],
            model_name=_STR,
            champion=nullable_object,
            shadows=objects,
            mirroring={"type": "object"},
        ),
        "ReloadResponse": _obj(
            ["status", "slots"],
            status={"const": "reloaded"},
            slots={"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            seconds={"type": "number"},
        ),
        **feature_refs,
    }


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(name)}}}


_ERRORS = {
    "400": _json("Error", "the body is not JSON, or is empty"),
    "413": _json("Error", "the body or the batch is too large"),
    "422": _json("Error", "a field is invalid; `errors` names each one"),
    "4XX": _json("Error", "any other client error"),
}
_AUTH = {
    "401": _json("Error", "no bearer token"),
    "403": _json("Error", "wrong bearer token"),
}
_UNAVAILABLE = {
    "503": _json("Error", "no champion is loaded, or the store is down"),
    "504": _json("Error", "the champion did not answer in time"),
}


def _post(
    summary: str, body: str, ok: str, extra: dict[str, Any], auth: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref(body)}}},
        "responses": {"200": _json(ok, "success"), **_ERRORS, **extra},
    }
    if auth:
        op["security"] = [{"bearerAuth": []}, {}]
        op["description"] = "A bearer token is required when one is configured on the server."
    return {"post": op}


def _get(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": responses}}


def build_openapi(
    schema: InputSchema | None,
    classes: list[str] | None,
    *,
    title: str = "mlops model server",
    version: str = "1",
    model_version: str | None = None,
    max_batch_size: int = 1000,
    binary_strings: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """The complete OpenAPI 3.1 document for a champion with this schema and these classes."""
    served = f"version {model_version}" if model_version else "no version (none loaded)"
    metrics_text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": f"Champion-challenger model server; inputs of the champion, {served}.",
            "x-model-version": model_version,
        },
        "paths": {
            "/predict": _post("Predict one row", "PredictRequest", "PredictResponse", _UNAVAILABLE),
            "/batch_predict": _post(
                f"Predict up to {max_batch_size} rows ({{instances}} or MLflow dataframe_split)",
                "BatchPredictRequest",
                "BatchPredictResponse",
                _UNAVAILABLE,
            ),
            "/feedback": _post(
                "Label earlier predictions by request id",
                "FeedbackRequest",
                "FeedbackResponse",
                {**_AUTH, "503": _UNAVAILABLE["503"]},
                auth=True,
            ),
            "/admin/reload": {
                "post": {
                    "summary": "Re-resolve the registry aliases and hot-swap the models",
                    "security": [{"bearerAuth": []}, {}],
                    "responses": {
                        "200": _json("ReloadResponse", "reloaded"),
                        **_AUTH,
                        "500": _json("Error", "the reload failed"),
                    },
                }
            },
            "/health": _get(
                "Served versions",
                {
                    "200": _json("Health", "a champion is loaded"),
                    "503": _json("Health", "no champion is loaded"),
                },
            ),
            "/model/info": _get(
                "Champion and shadows: versions, metrics, schema",
                {"200": _json("ModelInfo", "what is served")},
            ),
            "/metrics": _get(
                "Prometheus metrics",
                {"200": {"description": "text exposition format", "content": metrics_text}},
            ),
        },
        "components": {
            "schemas": _components(schema, classes, max_batch_size, binary_strings),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_for(info: dict[str, Any] | None, **kwargs: Any) -> dict[str, Any]:
    """The document for a ModelServer `info()` dict (keys `schema`, `classes`, `version`)."""
    info = info or {}
    loaded = bool(info.get("schema")) and info.get("loaded", True)
    schema = InputSchema.model_validate(info["schema"]) if loaded else None
    kwargs.setdefault("model_version", info.get("version") if loaded else None)
    return build_openapi(schema, info.get("classes") if loaded else None, **kwargs)


def swagger_ui(
    openapi_url: str = "/openapi.json", title: str = "mlops model server"
) -> HTMLResponse:
    """The `/docs` page: Swagger UI over the typed document."""
    return get_swagger_ui_html(openapi_url=openapi_url, title=title)
