"""The ingress's shadow traffic: which requests are mirrored, and what the answers become.

`ShadowTraffic` samples answered requests (`shadow_traffic_percent`), hands each active shadow
slot a copy through its `ShadowMirror` (serving/mirror.py: bounded, batched, never awaited by
the caller), and reports every outcome as metrics and a `shadow` prediction-log row. The
ingress keeps the HTTP side; this module holds no Ray state beyond the slots' handles.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from serving.config import IngressConfig
from serving.metrics import ServingMetrics
from serving.mirror import MirrorCopy, MirrorOutcome, ShadowMirror
from serving.predlog import LogEntry

Count = Callable[[str, str | None, str, int | str], None]


class ShadowTraffic:
    """Sampled, fire-and-forget mirroring to the shadow slots, with metrics and log rows."""

    def __init__(
        self,
        shadows: dict[str, Any],
        metrics: ServingMetrics,
        log_entry: Callable[[LogEntry], None],
        count: Count,
        *,
        percent: float,
        timeout_s: float,
        max_inflight: int,
        linger_s: float,
        max_rows: int,
    ) -> None:
        self._shadows = shadows  # slot -> DeploymentHandle of its ModelServer
        self._metrics = metrics
        self._log = log_entry
        self._count = count
        self.percent, self.timeout_s, self.max_inflight = percent, timeout_s, max_inflight
        self._linger_s, self._max_rows = linger_s, max_rows
        self._rng = random.Random()
        self._mirrors: dict[str, ShadowMirror] = {}
        # slot -> version it serves, as of the last role refresh: the slots that get copies.
        self.active: dict[str, str] = {}

    def configure(self, percent: float, timeout_s: float, max_inflight: int) -> None:
        """Apply new mirroring knobs, also to the mirrors already running."""
        self.percent, self.timeout_s, self.max_inflight = percent, timeout_s, max_inflight
        for mirror in self._mirrors.values():
            mirror.max_pending, mirror.timeout_s = max_inflight, timeout_s

    def knobs(self) -> IngressConfig:
        """The mirroring knobs in force."""
        return IngressConfig(
            shadow_traffic_percent=self.percent,
            shadow_timeout_s=self.timeout_s,
            max_inflight_shadow=self.max_inflight,
        )

    def offer(
        self, endpoint: str, request_ids: list[str], records: list[Any], single: bool
    ) -> None:
        """Sample this request for the shadows; hand each a copy without waiting for it."""
        percent = self.percent
        if percent <= 0 or not self.active:
            return
        if percent < 100 and self._rng.random() * 100 >= percent:
            return
        for slot, version in list(self.active.items()):
            mirror = self._mirrors.get(slot)
            if mirror is None:
                mirror = self._mirrors[slot] = ShadowMirror(
                    slot,
                    send=lambda batch, slot=slot: self._send(slot, batch),
                    report=self.report,
                    max_pending=self.max_inflight,
                    timeout_s=self.timeout_s,
                    linger_s=self._linger_s,
                    max_rows=self._max_rows,
                    on_pending=self._pending_changed,
                )
            copy = MirrorCopy(endpoint, request_ids, records, single, version)
            if not mirror.offer(copy):
                self._metrics.shadow_dropped.inc()

    def _pending_changed(self, _: int) -> None:
        self._metrics.shadow_inflight.set(sum(m.pending for m in self._mirrors.values()))

    async def _send(self, slot: str, batch: list[tuple[list[Any], bool]]) -> list[dict[str, Any]]:
        response = self._shadows[slot].predict_many.remote(batch)
        try:
            return await response
        except asyncio.CancelledError:  # timed out: stop the replica's work too
            response.cancel()
            raise

    def report(self, copy: MirrorCopy, outcome: MirrorOutcome) -> None:
        """Metrics and prediction-log rows for one mirrored request."""
        if outcome.code == 503:
            return  # the slot was emptied since the last refresh: nothing was mirrored
        answer = outcome.answer or {}
        version = answer.get("version") or copy.version
        self._metrics.shadow_mirrored.labels(model_version=version).inc()
        self._count("shadow", version, copy.endpoint, outcome.code)
        result: dict[str, Any]
        if outcome.code == 200:
            # The shadow's answer reaches no client: its latency is the model's own.
            self._metrics.observe_answer("shadow", version, answer["model_ms"] / 1000, answer)
            result = {
                "latency_ms": answer["model_ms"],
                "labels": answer["labels"],
                "probabilities": answer["probabilities"],
                "classes": answer["classes"],
                "features": answer.get("features"),
            }
        else:
            kind = {504: "timeout", 422: "invalid"}.get(outcome.code, "error")
            self._metrics.shadow_failures.labels(model_version=version, kind=kind).inc()
            result = {
                "latency_ms": (time.monotonic() - copy.enqueued) * 1000,
                "error": outcome.error,
            }
        self._log(
            LogEntry(
                role="shadow",
                version=version,
                time=datetime.now(UTC),
                request_ids=copy.request_ids,
                records=copy.records,
                **result,
            )
        )
