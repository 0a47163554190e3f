"""An unreachable MLflow retries the Dagster step instead of failing the run for good.

`TrackingUnreachable` means nothing was decided on MLflow's silence, so running the step
again as is is safe: training finds a finished training by its data, config and seed
(`find_existing_version`), and `register_version` looks for a version of the run before it
creates one, so a retry registers nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from mlops_assets.lifecycle.tracking import TrackingUnreachable

# After MLflow's own HTTP retries; 4 tries over ~3 minutes cover a server restart.
TRACKING_RETRIES = 3
TRACKING_RETRY_WAIT_S = 60.0


@contextmanager
def retrying_when_down(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Turn TrackingUnreachable inside the block into a retry of this step, logged."""
    try:
        yield
    except TrackingUnreachable as exc:
        tries = context.retry_number + 1
        if tries <= TRACKING_RETRIES:
            context.log.warning(
                f"{exc} (try {tries} of {TRACKING_RETRIES + 1}; the step runs again in "
                f"{TRACKING_RETRY_WAIT_S:g} s)"
            )
        raise dg.RetryRequested(
            max_retries=TRACKING_RETRIES, seconds_to_wait=TRACKING_RETRY_WAIT_S
        ) from exc
