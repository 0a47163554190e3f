"""The guards of the HTTP edge that are not about model input: bearer tokens and label bodies.

Both servers' model input goes through `serving.http` (the total body parser) and
`serving.validation` (the schema); this module holds what `/feedback` and `/admin/*` check
before anything reaches the lifecycle store or the registry.
"""

import hmac
import ipaddress
import os
from typing import Any

from fastapi import Request

from mlops_assets.lifecycle.classes import normalise_label
from serving.http import ApiError, field_error

FEEDBACK_TOKEN_ENV = "MLOPS_FEEDBACK_TOKEN"
MAX_REQUEST_ID_CHARS = 128


def check_token(request: Request, env: str, what: str) -> None:
    """401/403 unless the bearer token matches `$env` (no check when it is unset)."""
    token = os.environ.get(env)
    if not token:
        return
    header = request.headers.get("authorization", "")
    if not header:
        raise ApiError(401, f"{what} token required (Authorization: Bearer <token>)")
    scheme, _, value = header.partition(" ")
    # Constant time: the comparison must not tell how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode("utf-8", "replace"), token.encode()
    ):
        raise ApiError(403, f"invalid {what} token")


def parse_labels(
    body: Any, classes: list[str] | None
) -> tuple[list[tuple[str, str]], list[dict[str, str]]]:
    """A `/feedback` body -> ((request_id, label) to store, labels refused with a reason).

    A malformed body or item is a 400/422 for the whole request (nothing is stored); a label
    outside the served model's classes is refused on its own (`unknown_class`).
    """
    if not isinstance(body, dict):
        raise field_error("body", "expected a JSON object with 'labels'")
    if "labels" not in body:
        raise field_error("labels", "is missing")
    labels = body["labels"]
    if not isinstance(labels, list) or not labels:
        raise field_error("labels", "expected a non-empty array")
    items: list[tuple[str, str]] = []
    refused: list[dict[str, str]] = []
    for i, item in enumerate(labels):
        where = f"labels[{i}]"
        if not isinstance(item, dict):
            raise field_error(where, "expected an object with request_id and label")
        rid, label = item.get("request_id"), item.get("label")
        if not isinstance(rid, str) or not rid.strip():
            raise field_error(f"{where}.request_id", "expected a non-empty string")
        if len(rid) > MAX_REQUEST_ID_CHARS:
            raise field_error(f"{where}.request_id", f"longer than {MAX_REQUEST_ID_CHARS}")
        if isinstance(label, dict | list) or label is None or str(label).strip() == "":
            raise field_error(f"{where}.label", "expected a string, number or boolean")
        value = normalise_label(label, classes)
        if classes and value not in classes:
            refused.append({"request_id": rid.strip(), "reason": "unknown_class"})
            continue
        items.append((rid.strip(), value))
    return items, refused


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_error(host: str, admin_token_env: str) -> str | None:
    """Why serving on `host` is refused (None: allowed).

    Off loopback, anyone who reaches the port could hot-swap models through `/admin/reload`
    unless an admin token is set, so a non-loopback host needs one. `/feedback` without its
    own token stays open by design (documented in the README), but is logged at start-up.
    """
    if is_loopback(host) or os.environ.get(admin_token_env):
        return None
    return (
        f"serving.host is {host!r}, reachable from other machines, but ${admin_token_env} is "
        f"not set: anyone who reaches the port could reload models. Set {admin_token_env} "
        "(and MLOPS_FEEDBACK_TOKEN for /feedback), or serve on 127.0.0.1"
    )
