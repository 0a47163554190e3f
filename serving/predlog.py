"""The prediction log writer: batches rows off the request path into the lifecycle store.

Requests only append to a bounded in-memory queue (never wait on the database). A background
task writes a batch every `flush_s` seconds, or sooner when `batch` rows are waiting, through
a blocking sink run in a worker thread. A full queue drops rows and counts them; a failing
sink is retried a few times, then its rows are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Any]], int]
Counter = Callable[[int], None]


def _ignore(_: int) -> None:
    return None


class PredictionLogWriter:
    """Bounded, batching, asynchronous writer of prediction rows."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch: int = 256,
        flush_s: float = 0.5,
        max_queue: int = 50_000,
        retries: int = 3,
        on_written: Counter = _ignore,
        on_dropped: Counter = _ignore,
    ) -> None:
        self._sink = sink
        self._batch = max(1, batch)
        self._flush_s = flush_s
        self._max_queue = max_queue
        self._retries = retries
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._queue: deque[Any] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Rows waiting to be written."""
        return len(self._queue)

    def start(self) -> None:
        """Start the background flusher on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._write_lock = asyncio.Lock()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, rows: Sequence[Any]) -> int:
        """Queue rows without blocking; return how many were dropped because the queue is full."""
        if self._closed:
            self._drop(len(rows))
            return len(rows)
        room = max(0, self._max_queue - len(self._queue))
        accepted = rows[:room]
        self._queue.extend(accepted)
        dropped = len(rows) - len(accepted)
        if dropped:
            self._drop(dropped)
        if self._wake is not None and len(self._queue) >= self._batch:
            self._wake.set()
        return dropped

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._on_dropped(n)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_s)
            self._wake.clear()
            try:
                await self._write_some(drain=False)
            except Exception:  # never let the flusher die
                log.exception("prediction log flush failed")

    async def _write_some(self, drain: bool) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            while self._queue:
                chunk = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                await self._write_chunk(chunk)
                if not drain and len(self._queue) < self._batch:
                    break

    async def _write_chunk(self, chunk: list[Any]) -> None:
        for attempt in range(self._retries + 1):
            try:
                await asyncio.to_thread(self._sink, chunk)
            except Exception as exc:
                if attempt == self._retries:
                    log.error("dropping %d prediction rows: %s", len(chunk), exc)
                    self._drop(len(chunk))
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
            else:
                # Rows the store already had (same request, role, version) count as written.
                self.written += len(chunk)
                self._on_written(len(chunk))
                return

    async def flush(self) -> None:
        """Write everything queued now (e.g. before storing labels that refer to it)."""
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        await self._write_some(drain=True)

    async def close(self) -> None:
        """Flush and stop the background task."""
        await self.flush()
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def flush_blocking(self) -> None:
        """Write everything queued from a thread with no event loop (shutdown paths)."""
        self._closed = True
        while self._queue:
            chunk = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                self._sink(chunk)
            except Exception as exc:
                log.error("dropping %d prediction rows at shutdown: %s", len(chunk), exc)
                self._drop(len(chunk))
            else:
                self.written += len(chunk)
                self._on_written(len(chunk))
