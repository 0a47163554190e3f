"""HTTP plumbing of the ingress: bounded JSON bodies, API errors as responses, request ids."""

import json
import logging
import os
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error answer with a reason and, for 422, the fields at fault."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors

    def response(self) -> JSONResponse:
        """The JSON answer."""
        body: dict[str, Any] = {"detail": self.detail}
        if self.errors:
            body["errors"] = self.errors
        return JSONResponse(body, status_code=self.status)


def field_error(field: str, message: str) -> ApiError:
    """A 422 that names the offending field."""
    return ApiError(422, f"{field}: {message}", [{"field": field, "message": message}])


async def read_json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body; 413 past `limit` bytes (declared or actual), 400 when malformed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if size > limit:
            raise ApiError(413, f"body of {size} bytes exceeds max_body_bytes ({limit})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body exceeds max_body_bytes ({limit})")
    if not body:
        raise ApiError(400, "empty body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # The lenient parser reads what many clients send for non-finite floats (NaN, Infinity),
    # so such a request gets the 422 naming the field instead of a bare 400.
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8 text") from None
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON answer encoded with orjson (several times faster than the stdlib on batches)."""
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


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
