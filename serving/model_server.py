"""`ModelServer`: the deployment of one shadow slot, serving the version its alias names.

The champion is hosted in the ingress itself (serving/app.py); shadows run here, each in its
own replica, so a slow or crashing shadow cannot take the champion's CPU or process with it.
The version is in the deployment's `user_config`; `reconfigure` loads the new bundle beside
the old one and swaps atomically (serving/host.py).
"""

# No `from __future__ import annotations`: Serve pickles deployment classes (see serving/app.py).
import asyncio
import logging
import os
import time
from typing import Any

from ray import serve

from serving.config import LOGGING_CONFIG, FaultSpec, SlotConfig
from serving.host import ModelHost, answer

log = logging.getLogger(__name__)


@serve.deployment(
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=10,
    health_check_period_s=5,
    logging_config=LOGGING_CONFIG,
)
class ModelServer:
    """Serves one shadow slot: validates inputs and predicts with the bundle."""

    def __init__(self, slot: str, tracking_uri: str, model_name: str, nice: int = 0) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if nice > 0:
            # A shadow is best effort: on a small machine its CPU must go to the champion first.
            # The replica owns its worker process, so this lowers nothing else.
            os.nice(nice)
        self._host = ModelHost(slot, tracking_uri, model_name)
        self._fault: FaultSpec | None = None

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Apply a new user_config: load the named version beside the old one, then swap."""
        cfg = SlotConfig.model_validate(config or {})
        self._fault = cfg.fault
        await self._host.reconfigure(cfg)

    async def _apply_fault(self) -> float:
        """Act out the injected fault, if any; return the seconds it took."""
        fault = self._fault
        if fault is None:
            return 0.0
        started = time.perf_counter()
        if fault.kind == "raise":
            raise RuntimeError(f"injected fault in {self._host.slot}")
        if fault.kind == "sleep":
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "block":
            time.sleep(fault.seconds)
        elif fault.kind == "crash":
            os._exit(1)
        return time.perf_counter() - started

    async def predict(
        self, records: list[Any], prefix: str = "instances", single: bool = False
    ) -> dict[str, Any]:
        """Validate and predict; a dict with `status` ok, invalid or unavailable."""
        fault_s = await self._apply_fault()
        loaded = self._host.loaded
        if loaded is None:
            return self._host.unavailable()
        if loaded.predictor.mode == "torchscript":
            return answer(loaded, records, prefix, single, fault_s)
        return await asyncio.to_thread(answer, loaded, records, prefix, single, fault_s)

    async def predict_many(self, requests: list[tuple[list[Any], bool]]) -> list[dict[str, Any]]:
        """Answer several mirrored requests in one call, each validated and timed on its own."""
        fault_s = await self._apply_fault()
        loaded = self._host.loaded
        if loaded is None:
            return [self._host.unavailable() for _ in requests]

        def answer_all() -> list[dict[str, Any]]:
            return [
                answer(loaded, records, "features" if single else "instances", single, fault_s)
                for records, single in requests
            ]

        if loaded.predictor.mode == "torchscript":
            return answer_all()
        return await asyncio.to_thread(answer_all)

    async def info(self) -> dict[str, Any]:
        """What this replica serves right now."""
        return self._host.info(self._fault.kind if self._fault else None)

    def __del__(self) -> None:
        host = getattr(self, "_host", None)
        if host is not None:
            host.close()
