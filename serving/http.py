"""HTTP plumbing of the ingress: bounded JSON bodies, API errors as responses, request ids.

Every step between the socket and validation is total: any body gives a parsed value or an
`ApiError` with a 4xx, never an exception that would be answered (and counted) as a 5xx.

- The body is read up to `limit` bytes; past it the rest is read and thrown away up to a
  bound (a lingering close, as nginx does), so a client that sends the whole body before
  reading the answer (Python's urllib) gets the 413 instead of a connection reset.
- orjson parses normal bodies. What it refuses goes to the lenient stdlib parser, which also
  reads NaN and Infinity (validation then answers a 422 naming the field), with hooks that
  bound number literals and a strict UTF-8 decode.
- `BodyLimits` bounds nesting depth, keys per object, values in all, string length and (on
  the lenient path) number literals, and refuses lone UTF-16 surrogates, before validation.
  On the orjson path a single pass over the body's bytes finds the depth and the longest
  string; only bodies it cannot read that way (escapes, brackets inside strings, small
  bodies) are walked value by value.
"""

import json
import logging
import os
import re
from dataclasses import dataclass
from itertools import compress
from typing import Any

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from serving.validation import safe_text

log = logging.getLogger(__name__)

MAX_DEPTH = 32
MAX_KEYS = 1024
MAX_VALUES = 250_000
MAX_STRING_CHARS = 4096
MAX_NUMBER_CHARS = 64
# Past the body limit, read and discard the rest so the client reads the 413: up to
# DRAIN_FACTOR times the limit, at least MIN_DRAIN_BYTES (a small limit must not make the
# bound small) and at most MAX_DRAIN_BYTES. A larger declared body is refused unread.
DRAIN_FACTOR = 8
MIN_DRAIN_BYTES = 16 * 1024 * 1024
MAX_DRAIN_BYTES = 64 * 1024 * 1024


def drain_bound(limit: int) -> int:
    """How many bytes of an oversize body are read and discarded before the 413."""
    return min(max(DRAIN_FACTOR * limit, MIN_DRAIN_BYTES), MAX_DRAIN_BYTES)


# Bodies up to this size are walked value by value (a few microseconds); larger ones that
# orjson read are checked on their bytes first.
SMALL_BODY_BYTES = 4096

_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1  # orjson's integer range; beyond it, a float
_CONTAINER = frozenset((dict, list)).__contains__
_STRING = frozenset((str,)).__contains__
_SURROGATE = re.compile("[\ud800-\udfff]").search
_STRUCTURAL = b'[]{}"'
_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in _STRUCTURAL)


@dataclass(frozen=True)
class BodyLimits:
    """Bounds a JSON body must keep before it reaches validation (each breach is a 400)."""

    max_depth: int = MAX_DEPTH
    max_keys: int = MAX_KEYS
    max_values: int = MAX_VALUES
    max_string_chars: int = MAX_STRING_CHARS
    max_number_chars: int = MAX_NUMBER_CHARS


DEFAULT_LIMITS = BodyLimits()


class ApiError(Exception):
    """An HTTP error answer with a reason and, for 422, the fields at fault."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors

    def response(self) -> Response:
        """The JSON answer (encoded safely whatever the detail holds)."""
        body: dict[str, Any] = {"detail": self.detail}
        if self.errors:
            body["errors"] = self.errors
        return json_response(body, self.status)


def field_error(field: str, message: str) -> ApiError:
    """A 422 that names the offending field."""
    field = safe_text(field)
    return ApiError(422, f"{field}: {message}", [{"field": field, "message": message}])


class _Refused(ValueError):
    """A body outside `BodyLimits` (raised inside the parser hooks and the walk)."""


def _refuse(message: str) -> ApiError:
    return ApiError(400, message)


def _walk(
    root: Any, limits: BodyLimits, *, strings: bool, surrogates: bool, depth: int | None = None
) -> None:
    """Check depth, keys, values (and string lengths, surrogates) of a parsed body, level by
    level; every per-value step runs in C (map, compress), only containers loop in Python.

    With the body's `depth` known, the deepest level is not scanned for children.
    """
    if type(root) is str:
        root = [root]
    elif not _CONTAINER(type(root)):
        return
    level: list[Any] = [root]
    current = 0
    values = 1
    while level:
        current += 1
        if current > limits.max_depth:
            raise _refuse(f"body is nested deeper than max_depth ({limits.max_depth})")
        scan = depth is None or current < depth
        children: list[Any] = []
        for container in level:
            size = len(container)
            values += size
            if type(container) is dict:
                if size > limits.max_keys:
                    raise _refuse(
                        f"an object has {size} keys, more than max_keys ({limits.max_keys})"
                    )
                items = container.values()
                keys: Any = container
            else:
                items, keys = container, ()
            if strings:
                _check_strings(keys, limits, surrogates)
                _check_strings(compress(items, map(_STRING, map(type, items))), limits, surrogates)
            if scan:
                children.extend(compress(items, map(_CONTAINER, map(type, items))))
        if values > limits.max_values:
            raise _refuse(f"body holds more than max_values ({limits.max_values}) values")
        level = children


def _check_strings(texts: Any, limits: BodyLimits, surrogates: bool) -> None:
    texts = list(texts)
    if not texts:
        return
    if max(map(len, texts)) > limits.max_string_chars:
        raise _refuse(f"a string is longer than max_string_chars ({limits.max_string_chars})")
    if surrogates and any(map(_SURROGATE, texts)):
        raise _refuse(
            "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode"
        )


def _shape_of_bytes(body: bytes | bytearray, limit: int) -> tuple[int, int] | None:
    """(nesting depth, containers) read off the raw bytes, or None when they cannot tell.

    For a body without backslashes: once all bytes but brackets and quotes are dropped, every
    string is an adjacent quote pair unless it holds a bracket (then a quote is left over and
    the walk decides). What remains is the structure itself, checked here before any parser
    builds it (orjson spends 0.4 s on 2 MB of `[],`); if the body is not valid JSON, the
    parser refuses it anyway. Each round removes the innermost containers; stops past `limit`.
    """
    skeleton = body.translate(None, _NOT_STRUCTURAL).replace(b'""', b"")
    if b'"' in skeleton:
        return None
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    depth = 0
    while skeleton:
        depth += 1
        if depth > limit:
            break
        rest = skeleton.replace(b"[]", b"\0").replace(b"{}", b"\0").replace(b"\0", b"")
        if len(rest) == len(skeleton):
            return None  # unbalanced: not JSON, the parser says why
        skeleton = rest
    return depth, containers


def _longest_string_bytes(body: bytes | bytearray) -> int:
    """Bytes of the longest string of a body without backslashes (quotes pair up in order)."""
    quotes = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord('"'))
    if len(quotes) < 2:
        return 0
    return int((quotes[1::2] - quotes[0::2]).max()) - 1


def _check_fast(value: Any, body: bytes | bytearray, depth: int | None, limits: BodyLimits) -> None:
    """Bounds of a body orjson parsed (so: valid UTF-8, no lone surrogate, 64-bit numbers);
    `depth` is the one read off its bytes, if any."""
    if depth is None:
        _walk(value, limits, strings=len(body) > limits.max_string_chars, surrogates=False)
    elif _longest_string_bytes(body) > limits.max_string_chars:
        _walk(value, limits, strings=True, surrogates=False)
    else:  # depth and strings known: keys and values are all that is left to count
        _walk(value, limits, strings=False, surrogates=False, depth=depth)


def parse_json(body: bytes | bytearray, limits: BodyLimits = DEFAULT_LIMITS) -> Any:
    """The parsed body, or an ApiError 400 that says why; never any other exception."""
    if not body:
        raise ApiError(400, "empty body; send a JSON object")
    depth = None
    if len(body) > SMALL_BODY_BYTES and b"\\" not in body:
        shape = _shape_of_bytes(body, limits.max_depth)
        if shape is not None:
            depth, containers = shape
            if depth > limits.max_depth:
                raise _refuse(f"body is nested deeper than max_depth ({limits.max_depth})")
            if containers > limits.max_values:
                raise _refuse(f"body holds more than max_values ({limits.max_values}) values")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise _refuse(f"body is nested deeper than max_depth ({limits.max_depth})") from None
    else:
        _check_fast(value, body, depth, limits)
        return value
    # The lenient parser reads what many clients send for non-finite floats (NaN, Infinity),
    # so such a request gets the 422 naming the field instead of a bare 400.
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8 text") from None
    try:
        value = json.loads(
            text,
            parse_int=lambda s: _parse_int(s, limits),
            parse_float=lambda s: _parse_float(s, limits),
            parse_constant=float,
        )
    except _Refused as exc:
        raise _refuse(str(exc)) from None
    except RecursionError:
        raise _refuse(f"body is nested deeper than max_depth ({limits.max_depth})") from None
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    _walk(value, limits, strings=True, surrogates=True)
    return value


def _check_number(literal: str, limits: BodyLimits) -> None:
    if len(literal) > limits.max_number_chars:
        raise _Refused(
            f"a number literal of {len(literal)} characters is longer than "
            f"max_number_chars ({limits.max_number_chars})"
        )


def _parse_int(literal: str, limits: BodyLimits) -> int | float:
    _check_number(literal, limits)
    number = int(literal)
    return number if _INT_MIN <= number <= _UINT_MAX else float(number)


def _parse_float(literal: str, limits: BodyLimits) -> float:
    _check_number(literal, limits)
    return float(literal)  # past the double range: inf, which validation refuses by name


async def read_json_body(request: Request, limit: int, limits: BodyLimits = DEFAULT_LIMITS) -> Any:
    """The parsed JSON body; 413 past `limit` bytes (declared or actual), 400 when malformed."""
    drain = drain_bound(limit)
    declared = request.headers.get("content-length")
    size = None
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if size > drain:  # too big to read away: refuse unread (the client may see a reset)
            raise ApiError(413, f"body of {size} bytes exceeds max_body_bytes ({limit})")
    body = bytearray()
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= limit:
                body += chunk
            elif seen > drain:
                break
    except ClientDisconnect:
        raise ApiError(400, "the client closed the connection before the body ended") from None
    if seen > limit:
        detail = f"body of {size} bytes" if size is not None else "body"
        raise ApiError(413, f"{detail} exceeds max_body_bytes ({limit})")
    return parse_json(body, limits)


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON answer encoded with orjson (several times faster than the stdlib on batches).

    What orjson cannot encode (a lone surrogate in an echoed key, a huge integer, an odd
    type) is made encodable rather than raised: an answer never fails on its own body.
    """
    try:
        content = orjson.dumps(payload)
    except TypeError:
        content = orjson.dumps(_encodable(payload, 0))
    return Response(content, status_code=status, media_type="application/json")


def _encodable(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return safe_text(value, limit=None)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _UINT_MAX else safe_text(repr_int(value))
    if depth > 64:
        return "..."
    if isinstance(value, dict):
        return {safe_text(str(k), limit=None): _encodable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v, depth + 1) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return _encodable(tolist(), depth + 1)
        except Exception:  # fall through to the text form
            pass
    try:
        return safe_text(str(value))
    except Exception:  # a value whose str() raises
        return f"<{type(value).__name__}>"


def repr_int(value: int) -> str:
    """An integer as text, or its size when it is too long to print."""
    try:
        return str(value)
    except ValueError:  # past sys.get_int_max_str_digits
        return f"<an integer of {value.bit_length()} bits>"


def split_records(split: Any) -> list[dict[str, Any]]:
    """Rows of MLflow's `dataframe_split` (`{"columns": [...], "data": [[...], ...]}`)."""
    where = "dataframe_split"
    if not isinstance(split, dict):
        raise field_error(where, "expected an object with 'columns' and 'data'")
    columns, data = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise field_error(f"{where}.columns", "expected an array of column names")
    if len(set(columns)) != len(columns):
        raise field_error(f"{where}.columns", "names must be unique")
    if not isinstance(data, list):
        raise field_error(f"{where}.data", "expected an array of rows")
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            raise field_error(f"{where}.data[{i}]", f"expected an array of {width} values")
    return [dict(zip(columns, row, strict=True)) for row in data]


def new_request_ids(n: int) -> list[str]:
    """n random 128-bit ids as 32 hex characters (one urandom call for the whole batch)."""
    raw = os.urandom(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def extract_records(body: Any, single: bool, max_batch_size: int) -> tuple[list[Any], str]:
    """The request's rows, and how error messages name them (`instances[3].age`)."""
    if single:
        if not isinstance(body, dict):
            raise field_error("body", "expected a JSON object with 'features'")
        if "features" not in body:
            raise field_error("features", "is missing")
        if not isinstance(body["features"], dict):
            raise field_error("features", "expected an object of feature values")
        return [body["features"]], "features"
    prefix = "instances"
    if isinstance(body, dict) and "dataframe_split" in body and "instances" not in body:
        records = split_records(body["dataframe_split"])
        prefix = "dataframe_split.data"
    else:
        if not isinstance(body, dict):
            raise field_error("body", "expected a JSON object with 'instances'")
        if "instances" not in body:
            raise field_error("instances", "is missing")
        records = body["instances"]
        if not isinstance(records, list):
            raise field_error("instances", "expected an array of objects")
    if not records:
        raise field_error("instances", "must not be empty")
    if len(records) > max_batch_size:
        raise ApiError(
            413,
            f"{len(records)} instances exceed max_batch_size ({max_batch_size})",
        )
    return records, prefix
