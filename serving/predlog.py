"""The prediction log writer: batches rows off the request path into the lifecycle store.

Requests only append to a bounded in-memory queue (never wait on the database). A background
task writes a batch every `flush_s` seconds, or sooner when `batch` rows are waiting, through
a blocking sink run in a worker thread.

Nothing is dropped while there is room: when the store fails (a restart, a network cut), the
batch goes back to the head of the queue and the writer retries with a growing back-off (up to
`max_backoff_s`), while new rows keep queueing. Rows are dropped, and counted, only when the
queue is full (`max_queue`), when the store is still down at shutdown, or when a row itself is
refused (a data error): then the batch is written item by item, so only the bad item goes and
it can never block the rows behind it.

Queue items may stand for several rows each (`size(item)`, 1 by default): the ingress queues
one columnar entry per request, and the sink expands entries into rows on its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Any]], int]
Counter = Callable[[int], None]
Size = Callable[[Any], int]


class StoreUnavailable(RuntimeError):
    """The sink failed every attempt; the rows are held in the queue for a later retry."""


# Errors caused by the rows rather than by the store: retrying them can never succeed.
_DATA_ERRORS = (TypeError, ValueError, OverflowError, KeyError, AttributeError)
_DATA_ERROR_NAMES = frozenset({"DataError", "IntegrityError"})  # SQLAlchemy and DB-API


def caused_by_data(exc: BaseException) -> bool:
    """True when `exc` says the rows are bad (retrying cannot help), not that the store is."""
    if isinstance(exc, _DATA_ERRORS):
        return True
    return any(cls.__name__ in _DATA_ERROR_NAMES for cls in type(exc).__mro__)


def _ignore(_: int) -> None:
    return None


def _one(_: Any) -> int:
    return 1


class PredictionLogWriter:
    """Bounded, batching, asynchronous writer of prediction rows."""

    def __init__(
        self,
        sink: Sink,
        *,
        batch: int = 256,
        flush_s: float = 0.5,
        max_queue: int = 50_000,
        retries: int = 2,
        max_backoff_s: float = 10.0,
        on_written: Counter = _ignore,
        on_dropped: Counter = _ignore,
        size: Size = _one,
    ) -> None:
        self._sink = sink
        self._batch = max(1, batch)
        self._flush_s = flush_s
        self._max_queue = max_queue
        self._retries = retries
        self._max_backoff_s = max_backoff_s
        self._failures = 0  # consecutive failed writes (0: the store is fine)
        self._retry_at = 0.0  # monotonic time before which the flusher leaves the store be
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._size = size
        self._queue: deque[Any] = deque()
        self._rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Rows waiting to be written (held ones included)."""
        return self._rows

    @property
    def store_down(self) -> bool:
        """True from a failed write until the next successful one."""
        return self._failures > 0

    def start(self) -> None:
        """Start the background flusher on the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._write_lock = asyncio.Lock()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, items: Sequence[Any]) -> int:
        """Queue items without blocking; return how many rows were dropped (queue full)."""
        dropped = 0
        for item in items:
            n = self._size(item)
            if self._closed or self._rows + n > self._max_queue:
                dropped += n
                continue
            self._queue.append(item)
            self._rows += n
        if dropped:
            self._drop(dropped)
        if self._wake is not None and self._rows >= self._batch and not self.store_down:
            self._wake.set()
        return dropped

    def _take(self) -> tuple[list[Any], int]:
        """Queued items adding up to about `batch` rows (at least one item)."""
        chunk, rows = [], 0
        while self._queue and (not chunk or rows + self._size(self._queue[0]) <= self._batch):
            item = self._queue.popleft()
            n = self._size(item)
            chunk.append(item)
            rows += n
        self._rows -= rows
        return chunk, rows

    def _drop(self, n: int) -> None:
        self.dropped += n
        self._on_dropped(n)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            timeout = max(self._flush_s, self._retry_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            if time.monotonic() < self._retry_at:
                continue  # backing off from a failed store
            try:
                await self._write_some(drain=False)
            except StoreUnavailable:
                pass  # held and logged; the back-off decides the next attempt
            except Exception:  # never let the flusher die
                log.exception("prediction log flush failed")

    async def _write_some(self, drain: bool) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            while self._queue:
                chunk, rows = self._take()
                await self._write_chunk(chunk, rows)
                if not drain and self._rows < self._batch:
                    break

    async def _write_chunk(self, chunk: list[Any], rows: int) -> None:
        for attempt in range(self._retries + 1):
            try:
                await asyncio.to_thread(self._sink, chunk)
            except Exception as exc:
                if caused_by_data(exc):
                    await self._write_items_alone(chunk, exc)
                    return
                if attempt == self._retries:
                    self._hold(chunk, rows, exc)
                    raise StoreUnavailable(str(exc)) from exc
                await asyncio.sleep(0.1 * (attempt + 1))
            else:
                self._written(rows)
                return

    async def _write_items_alone(self, chunk: list[Any], first: BaseException) -> None:
        """After a data error: write item by item, dropping (and counting) only bad items."""
        log.warning("a prediction-log batch was refused (%s): writing it item by item", first)
        for i, item in enumerate(chunk):
            n = self._size(item)
            try:
                await asyncio.to_thread(self._sink, [item])
            except Exception as exc:
                if caused_by_data(exc):
                    log.error("dropping %d prediction row(s) the store refuses: %s", n, exc)
                    self._drop(n)
                    continue
                rest = chunk[i:]
                self._hold(rest, sum(self._size(x) for x in rest), exc)
                raise StoreUnavailable(str(exc)) from exc
            else:
                self._written(n)

    def _written(self, rows: int) -> None:
        if self._failures:
            log.warning(
                "prediction log store is back after %d failed write(s); %d row(s) still queued",
                self._failures,
                self._rows,
            )
        self._failures, self._retry_at = 0, 0.0
        # Rows the store already had (same request, role, version) count as written.
        self.written += rows
        self._on_written(rows)

    def _hold(self, chunk: list[Any], rows: int, exc: BaseException) -> None:
        """Put a failed batch back at the head of the queue and back off."""
        self._queue.extendleft(reversed(chunk))
        self._rows += rows
        self._failures += 1
        delay = min(self._max_backoff_s, self._flush_s * 2**self._failures)
        self._retry_at = time.monotonic() + delay
        log.warning(
            "prediction log store unavailable (%s): holding %d row(s), next try in %.1f s",
            exc,
            self._rows,
            delay,
        )

    async def flush(self) -> None:
        """Write everything queued now (e.g. before storing labels that refer to it).

        Raises StoreUnavailable when the store fails; the rows stay queued.
        """
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        await self._write_some(drain=True)

    async def close(self) -> None:
        """Flush and stop the background task; rows the store still refuses are dropped."""
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.error("dropping %d prediction rows at shutdown: %s", self._rows, exc)
            self._drop(self._rows)
            self._queue.clear()
            self._rows = 0
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
            chunk, rows = self._take()
            try:
                self._sink(chunk)
            except Exception as exc:
                log.error("dropping %d prediction rows at shutdown: %s", rows, exc)
                self._drop(rows)
            else:
                self.written += rows
                self._on_written(rows)


@dataclass(slots=True)
class LogEntry:
    """One request's predictions by one model, kept as columns until the writer thread."""

    role: str
    version: str
    time: datetime
    request_ids: list[str]
    records: list[Any]
    latency_ms: float
    labels: list[str] | None = None
    probabilities: Any = None  # rows of class probabilities, in `classes` order
    classes: list[str] | None = None
    error: str | None = None

    def __len__(self) -> int:
        return len(self.request_ids)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an int past 64 bits from a lenient parse
        return json.dumps(value, default=str)


def encode_entries(entries: Sequence[LogEntry], model_name: str) -> list[tuple[Any, ...]]:
    """Rows for `LifecycleStore.append_prediction_rows` (PREDICTION_LOG_COLUMNS order)."""
    rows: list[tuple[Any, ...]] = []
    for e in entries:
        inputs = [_json(r if isinstance(r, dict) else {"_raw": r}) for r in e.records]
        if e.labels is not None and e.error is None:
            probs = e.probabilities
            probs = probs.tolist() if hasattr(probs, "tolist") else probs
            classes = e.classes or []
            answers = zip(e.request_ids, inputs, e.labels, probs, strict=True)
            rows.extend(
                (
                    rid,
                    e.time,
                    e.role,
                    model_name,
                    e.version,
                    inp,
                    label,
                    _json(dict(zip(classes, row, strict=True))),
                    e.latency_ms,
                    None,
                )
                for rid, inp, label, row in answers
            )
        else:
            rows.extend(
                (rid, e.time, e.role, model_name, e.version, inp, None, None, e.latency_ms, e.error)
                for rid, inp in zip(e.request_ids, inputs, strict=True)
            )
    return rows
