"""Shadow mirroring: copies of live requests, batched per shadow, never awaited by a caller.

Each shadow slot has one `ShadowMirror`. `offer` appends a copy to a bounded buffer and
returns at once; over the bound the copy is refused (the ingress counts it as dropped). One
sender task per slot waits `linger_s` for more copies, then ships everything buffered to the
shadow in a single call (each copy is still validated, predicted and timed on its own in the
replica), with a timeout. So the ingress pays one handle call per batch instead of one per
request, which is what keeps mirroring from slowing the champion on a small machine.

While a call is out the next batch accumulates; a slow or hanging shadow therefore fills the
buffer and further copies are dropped, never queued without bound. Plain asyncio: no Ray here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MirrorCopy:
    """One mirrored request: what the champion was asked, and when."""

    endpoint: str
    request_ids: list[str]
    records: list[Any]
    single: bool
    version: str  # the shadow version when the copy was taken (the answer may say newer)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        """Rows in this copy."""
        return len(self.records)


@dataclass(slots=True)
class MirrorOutcome:
    """How one copy ended: the shadow's answer, or why there is none."""

    answer: dict[str, Any] | None
    code: int  # 200 answered, 422 invalid, 500 failed, 504 timed out
    error: str | None = None


Send = Callable[[list[tuple[list[Any], bool]]], Awaitable[list[dict[str, Any]]]]
Report = Callable[[MirrorCopy, MirrorOutcome], None]
Gauge = Callable[[int], None]


class ShadowMirror:
    """Bounded, batching, fire-and-forget mirror of requests to one shadow slot."""

    def __init__(
        self,
        slot: str,
        send: Send,
        report: Report,
        *,
        max_pending: int,
        timeout_s: float,
        linger_s: float = 0.05,
        max_rows: int = 1000,
        on_pending: Gauge | None = None,
    ) -> None:
        self.slot = slot
        self._send = send
        self._report = report
        self.max_pending = max(1, max_pending)
        self.timeout_s = timeout_s
        self.linger_s = max(0.0, linger_s)
        self.max_rows = max(1, max_rows)
        self._on_pending = on_pending
        self._buffer: list[MirrorCopy] = []
        self._in_call = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    @property
    def pending(self) -> int:
        """Copies buffered or in a call to the shadow (what `max_pending` bounds)."""
        return len(self._buffer) + self._in_call

    def offer(self, copy: MirrorCopy) -> bool:
        """Buffer a copy without waiting; False (dropped) when `max_pending` are pending."""
        if self.pending >= self.max_pending:
            return False
        self._buffer.append(copy)
        self._changed()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()
        return True

    def _changed(self) -> None:
        if self._on_pending is not None:
            self._on_pending(self.pending)

    def _take(self) -> list[MirrorCopy]:
        batch, rows = [], 0
        while self._buffer and (not batch or rows + self._buffer[0].rows <= self.max_rows):
            copy = self._buffer.pop(0)
            batch.append(copy)
            rows += copy.rows
        return batch

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.linger_s:
                # Let copies of concurrent requests join this call.
                await asyncio.sleep(self.linger_s)
            while self._buffer:
                await self._ship(self._take())

    async def _ship(self, batch: list[MirrorCopy]) -> None:
        self._in_call = len(batch)
        self.calls += 1
        try:
            answers = await asyncio.wait_for(
                self._send([(c.records, c.single) for c in batch]), self.timeout_s
            )
        except TimeoutError:
            outcomes = [MirrorOutcome(None, 504, f"timeout after {self.timeout_s:g}s")] * len(batch)
        except Exception as exc:
            outcomes = [MirrorOutcome(None, 500, f"{type(exc).__name__}: {exc}"[:500])] * len(batch)
        else:
            outcomes = [_outcome(a) for a in answers]
            if len(outcomes) != len(batch):
                bad = MirrorOutcome(None, 500, f"{len(answers)} answers for {len(batch)} copies")
                outcomes = [bad] * len(batch)
        finally:
            self._in_call = 0
            self._changed()
        for copy, outcome in zip(batch, outcomes, strict=True):
            try:
                self._report(copy, outcome)
            except Exception:  # reporting must never stop the sender
                log.exception("%s: reporting a mirrored request failed", self.slot)
            await asyncio.sleep(0)  # one copy at a time: live requests get the loop in between

    async def close(self) -> None:
        """Stop the sender; copies still buffered (at most `linger_s` worth) are discarded."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _outcome(answer: dict[str, Any]) -> MirrorOutcome:
    status = answer.get("status")
    if status == "ok":
        return MirrorOutcome(answer, 200)
    if status == "invalid":
        errors = answer.get("errors") or []
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return MirrorOutcome(answer, 422, text or "invalid")
    if status == "unavailable":
        return MirrorOutcome(answer, 503, answer.get("error") or "no version loaded")
    return MirrorOutcome(answer, 500, f"unexpected answer status {status!r}")
