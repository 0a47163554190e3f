"""Telling "MLflow has no such thing" from "MLflow did not answer" (issue 12, §4).

A lifecycle step that asks MLflow for the champion, its schema or an earlier training must
not take "the tracking server is down" for "there is none": that would retrain identical
data, validate a file without the champion's schema, or bootstrap over a champion it could
not see. So:

- `is_not_found`: MLflow answered RESOURCE_DOES_NOT_EXIST (no such model, version, artifact);
- `is_unreachable`: the request never got an answer (connection refused or reset, timeout,
  DNS, a 503 from a proxy), after MLflow's own HTTP retries (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`,
  `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`, `MLFLOW_HTTP_REQUEST_TIMEOUT`);
- `reaching` turns the second into `TrackingUnreachable`, which names the tracking URI and
  the step; `missing_as_none` maps only the first to None; anything else is raised as is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_UNAVAILABLE = {"TEMPORARILY_UNAVAILABLE", "SERVICE_UNAVAILABLE"}


class TrackingUnreachable(RuntimeError):
    """The MLflow tracking server did not answer; the step failed and may be retried as is."""

    def __init__(self, uri: str, during: str, cause: BaseException) -> None:
        self.uri = uri
        self.during = during
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else repr(cause)
        super().__init__(
            f"the MLflow tracking server at {uri} is unreachable while {during}: "
            f"{first_line[:400]}. Nothing was decided on its silence: start the server (or "
            "fix MLFLOW_TRACKING_URI / mlflow.tracking_uri) and run the step again"
        )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_not_found(exc: BaseException) -> bool:
    """Whether MLflow answered that the thing asked for does not exist."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == NOT_FOUND


def is_unreachable(exc: BaseException) -> bool:
    """Whether a request to the tracking server got no answer (not an answer saying no)."""
    import requests
    import urllib3.exceptions
    from mlflow.exceptions import MlflowException

    for link in _chain(exc):
        if isinstance(link, MlflowException) and link.error_code in _UNAVAILABLE:
            return True
        if isinstance(
            link,
            requests.ConnectionError
            | requests.Timeout
            | urllib3.exceptions.MaxRetryError
            | urllib3.exceptions.ProtocolError
            | ConnectionError
            | TimeoutError,
        ):
            return True
    return False


def tracking_uri_of(client: object) -> str:
    """The tracking URI a client talks to (for messages)."""
    return str(getattr(client, "tracking_uri", None) or "the configured tracking URI")


@contextmanager
def reaching(uri: str, during: str) -> Iterator[None]:
    """Raise TrackingUnreachable (naming `uri` and `during`) for a request that got no answer."""
    try:
        yield
    except TrackingUnreachable:
        raise
    except Exception as exc:
        if is_unreachable(exc):
            raise TrackingUnreachable(uri, during, exc) from exc
        raise


def missing_as_none(call: Callable[[], T], uri: str, during: str) -> T | None:
    """`call()`, or None when MLflow says the thing does not exist; unreachable raises."""
    with reaching(uri, during):
        try:
            return call()
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise


def retry_unreachable(
    call: Callable[[], T], uri: str, during: str, *, attempts: int = 4, wait_s: float = 5.0
) -> T:
    """`call()` retried (bounded) while the server is unreachable; only for idempotent calls."""
    attempt = 1
    while True:
        try:
            with reaching(uri, during):
                return call()
        except TrackingUnreachable as exc:
            if attempt >= attempts:
                raise
            attempt += 1
            log.warning("%s; try %d of %d in %.0f s", exc, attempt, attempts, wait_s)
            time.sleep(wait_s)
