"""The total body parser (serving/http.py): every body is a value or a 4xx, never a 5xx."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema
from serving.http import (
    DEFAULT_LIMITS,
    MAX_DEPTH,
    MAX_KEYS,
    MAX_NUMBER_CHARS,
    MAX_STRING_CHARS,
    MAX_VALUES,
    MIN_DRAIN_BYTES,
    SMALL_BODY_BYTES,
    ApiError,
    BodyLimits,
    _walk,
    drain_bound,
    field_error,
    json_response,
    parse_json,
    read_json_body,
)
from serving.validation import MAX_ABS_NUMBER, validate_batch, validate_records

SCHEMA = InputSchema(
    target="target",
    classes=["False", "True"],
    features=[
        FeatureSpec(name="age", type="number"),
        FeatureSpec(name="contract", type="category", categories=["monthly", "yearly"]),
        FeatureSpec(name="paperless", type="binary"),
    ],
)
GOOD = {"age": 30, "contract": "monthly", "paperless": True}
# Padding that pushes a body past SMALL_BODY_BYTES, so the byte-level checks run.
PAD = "p" * 100


def refused(body: bytes, limits: BodyLimits = DEFAULT_LIMITS) -> str:
    """The 400's detail for `body` (fails the test if it parses)."""
    with pytest.raises(ApiError) as info:
        parse_json(body, limits)
    assert info.value.status == 400
    return info.value.detail


def big(value: Any, *, nan: bool = False) -> bytes:
    """`value` inside an object padded past SMALL_BODY_BYTES (optionally with a NaN too)."""
    body = {"x": value, "pad": [PAD] * (SMALL_BODY_BYTES // 100)}
    if nan:
        body["n"] = math.nan
        return json.dumps(body).encode()
    return orjson.dumps(body)


def nested(depth: int, leaf: str = "1") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


# --- depth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2000, 1025, 1000, MAX_DEPTH + 1])
def test_deep_nesting_is_a_400_at_any_depth(depth: int) -> None:
    assert "max_depth" in refused(nested(depth))
    assert "max_depth" in refused(nested(depth, "NaN"))  # the lenient parser's path


def test_nesting_up_to_the_limit_parses() -> None:
    value = parse_json(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == 1


@pytest.mark.parametrize("nan", [False, True])
def test_depth_is_counted_in_big_bodies_too(nan: bool) -> None:
    ok = json.loads(nested(MAX_DEPTH - 1))
    parse_json(big(ok, nan=nan))
    deep = json.loads(nested(MAX_DEPTH))
    assert "max_depth" in refused(big(deep, nan=nan))


def test_brackets_and_escapes_inside_strings_do_not_fool_the_depth_check() -> None:
    # Strings full of closing brackets next to a body nested one level too deep.
    deep = json.loads(nested(MAX_DEPTH))
    assert "max_depth" in refused(big([deep, "]]]]}}}}" * 20]))
    assert "max_depth" in refused(big([deep, 'a "quoted" ]] \\ value']))
    # Strings full of opening brackets in a shallow body: fine.
    assert parse_json(big(["[[[[{{{{" * 20, '"[" \\']))["x"][0].startswith("[[[[")


# --- numbers -------------------------------------------------------------------------------


def test_an_integer_of_309_digits_parses_as_a_double_and_validation_refuses_it() -> None:
    body = b'{"features": {"age": ' + b"9" * 309 + b"}}"
    with pytest.raises(ApiError):  # 309 nines overflow a double: number literal too long
        parse_json(body)
    value = parse_json(b'{"features": {"age": ' + b"1" * 309 + b"}}")
    out = validate_records(SCHEMA, [value["features"] | GOOD_REST], "features", single=True)
    assert [e.field for e in out.errors] == ["features.age"]
    assert "number range" in out.errors[0].message


GOOD_REST = {"contract": "monthly", "paperless": True}


@pytest.mark.parametrize("nan", [False, True])
def test_number_literals_past_the_limit_are_a_400(nan: bool) -> None:
    long_int = "1" * (MAX_NUMBER_CHARS + 400)
    text = f'{{"a": {long_int}' + (', "b": NaN}' if nan else "}")
    assert "number" in refused(text.encode())
    float_text = "1." + "5" * (MAX_NUMBER_CHARS + 10)
    assert "max_number_chars" in refused(f'{{"a": {float_text}, "b": NaN}}'.encode())


def test_lenient_path_reads_big_integers_as_doubles_like_orjson() -> None:
    # A 30-digit integer: orjson gives a double; so does the lenient path (a body with NaN).
    number = 123456789012345678901234567890
    fast = parse_json(b'{"a": 123456789012345678901234567890}')["a"]
    lenient = parse_json(b'{"a": 123456789012345678901234567890, "b": NaN}')["a"]
    assert type(fast) is type(lenient) is float
    assert fast == lenient == float(number)
    assert parse_json(b'{"a": 1e400, "b": 1}')["a"] == math.inf  # validation names it


def test_nan_and_infinity_still_parse_so_validation_names_the_field() -> None:
    value = parse_json(b'{"features": {"age": NaN, "contract": "monthly", "paperless": true}}')
    assert math.isnan(value["features"]["age"])
    assert parse_json(b'{"a": -Infinity}')["a"] == -math.inf
    out = validate_records(SCHEMA, [value["features"]], "features", single=True)
    assert [(e.field, e.message) for e in out.errors] == [
        ("features.age", "must be a finite number")
    ]


# --- strings and surrogates -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"\\ud800": 1}',
        b'{"features": {"\\udfff": 1}}',
        b'{"labels": [{"request_id": "a\\ud800b", "label": "True"}]}',
        b'{"a": "\\udc00\\ud800"}',
        b'["\\ud800", NaN]',
        big("\\ud800").replace(b"\\\\ud800", b"\\ud800"),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400(body: bytes) -> None:
    assert "surrogate" in refused(body)


def test_raw_surrogate_bytes_are_not_utf8() -> None:
    assert "UTF-8" in refused(b'{"a": "\xed\xa0\x80"}')


def test_a_surrogate_pair_is_one_character() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


@pytest.mark.parametrize("size", ["small", "big", "escaped", "nan"])
def test_strings_longer_than_the_limit_are_a_400(size: str) -> None:
    text = "x" * (MAX_STRING_CHARS + 1)
    if size == "small":
        body = orjson.dumps({"a": text})
    elif size == "big":
        body = big(text)
    elif size == "escaped":
        body = big(text + "\n")
    else:
        body = big(text, nan=True)
    assert "max_string_chars" in refused(body)
    assert "max_string_chars" in refused(orjson.dumps({text: 1, "pad": [PAD] * 50}))


def test_string_limit_counts_characters_not_bytes() -> None:
    text = "é" * MAX_STRING_CHARS  # twice as many bytes: the byte check defers to the walk
    assert parse_json(big(text))["x"] == text


# --- keys and values -----------------------------------------------------------------------


@pytest.mark.parametrize("nan", [False, True])
def test_objects_with_more_keys_than_the_limit_are_a_400(nan: bool) -> None:
    ok = {f"k{i}": 1 for i in range(MAX_KEYS)}
    parse_json(big(ok, nan=nan))
    too_many = ok | {"one_more": 1}
    assert "max_keys" in refused(big(too_many, nan=nan))
    assert "max_keys" in refused(big({"features": too_many}))


@pytest.mark.parametrize(
    "body",
    [
        b"[" + b",".join([b"0"] * (MAX_VALUES + 1)) + b"]",
        b"[" + b",".join([b"[]"] * (MAX_VALUES + 1)) + b"]",
        b"[" + b",".join([b"{}"] * (MAX_VALUES + 1)) + b",NaN]",
        b'["\\n",' + b",".join([b"0"] * (MAX_VALUES + 1)) + b"]",
    ],
)
def test_bodies_with_more_values_than_the_limit_are_a_400(body: bytes) -> None:
    assert "max_values" in refused(body)


def test_limits_are_parameters() -> None:
    tight = BodyLimits(max_depth=2, max_keys=2, max_values=10, max_string_chars=3)
    parse_json(b'{"a": [1, 2]}', tight)
    assert "max_depth" in refused(b"[[[1]]]", tight)
    assert "max_keys" in refused(b'{"a":1,"b":2,"c":3}', tight)
    assert "max_values" in refused(b"[1,2,3,4,5,6,7,8,9,10,11]", tight)
    assert "max_string_chars" in refused(b'["abcd"]', tight)


# --- the whole parser: any input ------------------------------------------------------------

# Bodies made of JSON's own pieces, and of the ones that broke the old parser.
PIECES = ["[", "]", "{", "}", '"', ",", ":", " ", "1", "-", ".5", "e400", "9" * 400, "NaN"]
PIECES += ["Infinity", '"a"', '"\\ud800"', '"\\udc00x"', "\\", "true", "null", "\ud800"]
TOKENS = st.lists(st.sampled_from(PIECES), max_size=120).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
)


def surrogatepass(text: str) -> bytes:
    """Text as UTF-8, lone surrogates kept as their (invalid) bytes."""
    return text.encode("utf-8", "surrogatepass")


TEXT = st.characters(blacklist_categories=("Cs",))  # no surrogates: valid JSON text
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=20),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(TEXT, max_size=8), children, max_size=6)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | TOKENS | st.text(max_size=300).map(surrogatepass))
def test_any_bytes_give_a_value_or_a_400(body: bytes) -> None:
    try:
        parse_json(body)
    except ApiError as err:
        assert 400 <= err.status < 500
        json_response({"detail": err.detail})  # the message itself is encodable


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values, st.booleans())
def test_the_byte_level_checks_agree_with_the_walk(value: Any, pad: bool) -> None:
    """Whatever path a body takes, the verdict is the walk's (tight limits to hit them)."""
    wrapped = [value, [PAD[:9]] * (SMALL_BODY_BYTES // 8)] if pad else value
    body = json.dumps(wrapped, ensure_ascii=False).encode()
    padding = SMALL_BODY_BYTES // 8 + 2 if pad else 0
    wide = BodyLimits(max_depth=4, max_keys=4, max_values=40 + padding, max_string_chars=10)
    parsed = orjson.loads(body)
    try:
        _walk(parsed, wide, strings=True, surrogates=True)
        expected = None
    except ApiError as err:
        expected = err.detail.split(" (")[0]
    try:
        assert parse_json(body, wide) == parsed
        got = None
    except ApiError as err:
        got = err.detail.split(" (")[0]
    assert (got is None) == (expected is None), (got, expected)


# --- encoding answers -----------------------------------------------------------------------


def test_answers_encode_whatever_they_echo() -> None:
    resp = json_response(
        {"\ud800key": "\udc00", "big": 10**30, "arr": np.arange(3), "nan": math.nan}, 422
    )
    body = orjson.loads(resp.body)
    assert body["\\ud800key"] == "\\udc00"
    assert body["big"] == str(10**30)
    assert body["arr"] == [0, 1, 2]
    assert body["nan"] is None
    err = field_error("features.\ud800", "not a model input")
    assert orjson.loads(err.response().body)["errors"][0]["field"] == "features.\\ud800"


# --- validation is total --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": 10**400}, "features.age"),
        ({"age": -(10**400)}, "features.age"),
        ({"age": 10**5000}, "features.age"),  # past the int->str digit limit as well
        ({"age": 1e300}, "features.age"),  # finite, but inf in float32
        ({"age": 2**63 * 10**30}, "features.age"),
        ({"age": object()}, "features.age"),
        ({"age": b"30"}, "features.age"),
        ({"contract": 10**5000}, "features.contract"),
        ({"contract": {1, 2}}, "features.contract"),
        ({"paperless": 10**5000}, "features.paperless"),
        ({"paperless": float("nan")}, "features.paperless"),
    ],
)
def test_validation_turns_any_value_into_a_field_issue(change: dict[str, Any], field: str) -> None:
    record = GOOD | change
    out = validate_records(SCHEMA, [record], "features", single=True)
    assert [e.field for e in out.errors] == [field]
    json_response({"errors": [e.model_dump() for e in out.errors]})
    batch = validate_batch(SCHEMA, [record, GOOD], "instances")
    assert [e.field for e in batch.errors] == [field.replace("features", "instances[0]")]


def test_in_range_big_numbers_pass_and_stay_within_float32() -> None:
    for value in (10**30, 3e38, -3e38):
        out = validate_batch(SCHEMA, [GOOD | {"age": value}], "instances")
        assert out.ok, out.errors
    assert not validate_batch(SCHEMA, [GOOD | {"age": MAX_ABS_NUMBER * 2}], "instances").ok


def test_echoed_unknown_keys_are_encodable_and_bounded() -> None:
    record = GOOD | {"\ud800": 1, "k" * 10_000: 2, 7: 3}
    out = validate_records(SCHEMA, [record], "features", single=True)  # type: ignore[list-item]
    assert out.ok
    fields = [w.field for w in out.warnings]
    assert "features.\\ud800" in fields
    assert all(len(f) < 100 for f in fields)
    orjson.dumps([w.model_dump() for w in out.warnings])


# --- reading the body: lingering close ------------------------------------------------------


def _request(chunks: list[bytes], declared: int | None) -> tuple[Request, list[int]]:
    """A Starlette request whose body arrives in `chunks`; the list counts what was read."""
    read = [0]
    queue = list(chunks)

    async def receive() -> dict[str, Any]:
        if not queue:
            return {"type": "http.disconnect"}
        chunk = queue.pop(0)
        read[0] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    return Request(scope, receive), read


@pytest.mark.parametrize("declared", [True, False])
def test_an_oversize_body_is_read_to_its_end_before_the_413(declared: bool) -> None:
    chunks = [b"x" * 1000] * 50  # 50 kB against a 10 kB limit: within the drain bound
    request, read = _request(chunks, 50_000 if declared else None)
    with pytest.raises(ApiError) as info:
        asyncio.run(read_json_body(request, 10_000))
    assert info.value.status == 413
    assert read[0] == 50_000  # every byte was read, so the client can read the answer


def test_a_body_past_the_drain_bound_is_not_read_to_its_end() -> None:
    bound = drain_bound(10_000)  # 8x a 10 kB limit is raised to MIN_DRAIN_BYTES
    assert bound == MIN_DRAIN_BYTES
    chunks = [b"x" * 100_000] * (2 * bound // 100_000)  # twice the bound
    request, read = _request(chunks, None)
    with pytest.raises(ApiError) as info:
        asyncio.run(read_json_body(request, 10_000))
    assert info.value.status == 413 and bound <= read[0] < 2 * bound
    request, read = _request(chunks, 2 * bound)  # declared that big: refused unread
    with pytest.raises(ApiError):
        asyncio.run(read_json_body(request, 10_000))
    assert read[0] == 0


def test_a_client_that_leaves_mid_body_is_a_400() -> None:
    read = [0]

    async def receive() -> dict[str, Any]:
        read[0] += 1
        if read[0] == 1:
            return {"type": "http.request", "body": b'{"a"', "more_body": True}
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    with pytest.raises(ApiError) as info:
        asyncio.run(read_json_body(request, 10_000))
    assert info.value.status == 400
