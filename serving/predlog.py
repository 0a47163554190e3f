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

Shutdown (`close()`, or `flush_blocking()` from a thread without a loop) writes every queued
row, the held ones and the batch in flight included. When the store is still down then and a
`spill_path` is set, the rows go to that file (JSON lines, one item a line, appended under an
exclusive `flock`) instead of being dropped. `replay_spill()` writes them back and truncates the
file only after every one is written; `start()` runs it in the background, retrying while the
store is down. A crash between the commit and the truncation replays rows the store already
has: the prediction log's unique key `(request_id, role, model_version)` skips them, so the log
holds each row once (at-least-once delivery, exactly-once storage). The file: predlog_spill.py.
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
from pathlib import Path
from typing import Any

import orjson

from serving.predlog_spill import append_lines, replaying, spill_line

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[Any]], int]
Counter = Callable[[int], None]
Size = Callable[[Any], int]
Codec = Callable[[Any], Any]


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


def _same(item: Any) -> Any:
    return item


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
        spill_path: Path | None = None,
        dump: Codec = _same,
        load: Codec = _same,
        on_spilled: Counter = _ignore,
        on_replayed: Counter = _ignore,
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
        self._spill_path = None if spill_path is None else Path(spill_path)
        self._dump = dump
        self._load = load
        self._on_spilled = on_spilled
        self._on_replayed = on_replayed
        self._replay_due = self._spill_path is not None
        self._queue: deque[Any] = deque()
        self._rows = 0
        self._inflight: list[Any] = []  # the batch a worker thread is writing now
        self._inflight_rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        self._closed = False
        self._taken_blocking = False
        self.written = 0
        self.dropped = 0
        self.spilled = 0
        self.replayed = 0

    @property
    def pending(self) -> int:
        """Rows not yet written: queued, held after a store failure, or in flight."""
        return self._rows + self._inflight_rows

    @property
    def spill_path(self) -> Path | None:
        """Where rows go when the store is down at shutdown (None: they are dropped)."""
        return self._spill_path

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
            if self._replay_due:
                self._wake.set()  # replay a previous run's spill file now, not after flush_s

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
            if self._replay_due:
                await self._replay_in_background()
                if self.store_down:
                    continue
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

    async def _replay_in_background(self) -> None:
        """Replay a previous run's spill file; on a store failure back off and try again later."""
        assert self._write_lock is not None
        async with self._write_lock:
            try:
                await asyncio.to_thread(self.replay_spill)
            except StoreUnavailable as exc:
                self._back_off(exc)
            except Exception:  # an unreadable file: logged, and not retried in a loop
                log.exception("replaying the prediction-log spill file failed")
                self._replay_due = False
            else:
                self._failures, self._retry_at = 0, 0.0

    async def _write_chunk(self, chunk: list[Any], rows: int) -> None:
        # In flight until written, dropped or held: a shutdown meanwhile writes it too.
        self._inflight, self._inflight_rows = chunk, rows
        try:
            await self._try_chunk(chunk, rows)
        finally:
            self._inflight, self._inflight_rows = [], 0

    async def _try_chunk(self, chunk: list[Any], rows: int) -> None:
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
                else:
                    rest = chunk[i:]
                    self._hold(rest, sum(self._size(x) for x in rest), exc)
                    raise StoreUnavailable(str(exc)) from exc
            else:
                self._written(n)
            self._inflight, self._inflight_rows = chunk[i + 1 :], self._inflight_rows - n

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
        if self._taken_blocking:
            # flush_blocking has already taken the queue (this batch included, as in flight).
            return
        self._queue.extendleft(reversed(chunk))
        self._rows += rows
        self._back_off(exc)

    def _back_off(self, exc: BaseException) -> None:
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
        """Write every queued row and stop; rows the store still refuses go to the spill file.

        Without a `spill_path` those rows are dropped and counted, as before.
        """
        failure: BaseException | None = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            failure = exc
        self._closed = True  # from here on, submit() refuses (and counts) new rows
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            # The flusher leaves its loop after the write it may be doing (its rows are held
            # back in the queue when that write fails), so nothing is cut off mid-flight.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=60)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._queue:
            items = list(self._queue)
            self._queue.clear()
            self._rows = 0
            self._spill(items, failure or StoreUnavailable("the store failed during shutdown"))

    def flush_blocking(self) -> None:
        """Write everything queued from a thread with no event loop (shutdown paths).

        The batch a worker thread may be writing at this moment is written again (the store
        skips rows it already has). What the store refuses goes to the spill file, or is
        dropped without one.
        """
        self._closed = True
        self._taken_blocking = True  # a write finishing later must not re-queue rows taken here
        items = [*self._inflight, *self._queue]
        self._queue.clear()
        self._rows = 0
        left, exc = self._write_sync(items)
        if left:
            self._spill(left, exc or StoreUnavailable("the store failed"))

    def _write_sync(self, items: list[Any]) -> tuple[list[Any], BaseException | None]:
        """Write `items` in batches from this thread; return those left when the store fails."""
        i = 0
        while i < len(items):
            j, rows = i, 0
            while j < len(items) and (j == i or rows + self._size(items[j]) <= self._batch):
                rows += self._size(items[j])
                j += 1
            chunk = items[i:j]
            try:
                self._sink(chunk)
            except Exception as exc:
                if not caused_by_data(exc):
                    return items[i:], exc
                for k, item in enumerate(chunk):
                    n = self._size(item)
                    try:
                        self._sink([item])
                    except Exception as item_exc:
                        if not caused_by_data(item_exc):
                            return items[i + k :], item_exc
                        log.error("dropping %d refused prediction row(s): %s", n, item_exc)
                        self._drop(n)
                    else:
                        self._count_written(n)
            else:
                self._count_written(rows)
            i = j
        return [], None

    def _count_written(self, rows: int) -> None:
        self.written += rows
        self._on_written(rows)

    def _spill(self, items: list[Any], exc: BaseException) -> None:
        """Append items the store refused at shutdown to the spill file (or drop them)."""
        rows = sum(self._size(item) for item in items)
        if not rows and not items:
            return
        if self._spill_path is None:
            log.error("dropping %d prediction rows at shutdown: %s", rows, exc)
            self._drop(rows)
            return
        lines, lost = [], 0
        for item in items:
            try:
                lines.append(spill_line(self._dump(item)))
            except Exception as dump_exc:
                log.error("dropping a prediction-log item that cannot be spilled: %s", dump_exc)
                lost += self._size(item)
        try:
            append_lines(self._spill_path, lines)
        except OSError as io_exc:
            log.error(
                "dropping %d prediction rows at shutdown: the store failed (%s) and the spill "
                "file %s cannot be written (%s)",
                rows,
                exc,
                self._spill_path,
                io_exc,
            )
            self._drop(rows)
            return
        if lost:
            self._drop(lost)
        spilled = rows - lost
        self.spilled += spilled
        self._on_spilled(spilled)
        log.warning(
            "the store is down at shutdown (%s): %d prediction rows spilled to %s; the next "
            "start replays them",
            exc,
            spilled,
            self._spill_path,
        )

    def replay_spill(self) -> int:
        """Write the rows a previous shutdown spilled; truncate the file once all are written.

        Blocking (run it in a thread from async code); returns the rows replayed. Raises
        StoreUnavailable when the store fails, leaving the file whole for the next try: rows
        written before the failure are skipped by the store's unique key when replayed again.
        Lines that cannot be read (cut off by a crash) are dropped, counted and logged.
        """
        path = self._spill_path
        if path is None:
            return 0
        with replaying(path, self._load) as spill:
            if spill is None:  # no spill file: nothing to replay
                self._replay_due = False
                return 0
            items, bad = spill
            left, exc = self._write_sync(items)
            if left:
                raise StoreUnavailable(
                    f"replaying {path}: {len(left)} of {len(items)} item(s) not written: {exc}"
                ) from exc
        self._replay_due = False
        rows = sum(self._size(item) for item in items)
        if bad:
            log.error("dropped %d unreadable line(s) of the spill file %s", bad, path)
            self._drop(bad)
        if items:
            log.warning("replayed %d spilled prediction rows from %s", rows, path)
            self.replayed += rows
            self._on_replayed(rows)
        return rows


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
    # The served schema's feature names: only these keys of each record are logged (None: all).
    features: list[str] | None = None

    def __len__(self) -> int:
        return len(self.request_ids)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. an int past 64 bits from a lenient parse
        return json.dumps(value, default=str)


def kept_records(records: Sequence[Any], features: Sequence[str] | None) -> list[Any]:
    """The records as logged: only the `features` keys of each (all keys when None).

    Without a schema a record that is not an object is logged as `{"_raw": value}`; with one
    it is logged empty, as it has no schema feature.
    """
    if features is None:
        return [r if isinstance(r, dict) else {"_raw": r} for r in records]
    keep = frozenset(features)
    out: list[Any] = []
    for r in records:
        if not isinstance(r, dict):
            out.append({})
        elif r.keys() <= keep:  # the usual case: nothing to cut, no copy
            out.append(r)
        else:
            out.append({k: r[k] for k in features if k in r})
    return out


def encode_entries(entries: Sequence[LogEntry], model_name: str) -> list[tuple[Any, ...]]:
    """Rows for `LifecycleStore.append_prediction_rows` (PREDICTION_LOG_COLUMNS order)."""
    rows: list[tuple[Any, ...]] = []
    for e in entries:
        inputs = [_json(r) for r in kept_records(e.records, e.features)]
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


def dump_entry(entry: LogEntry) -> dict[str, Any]:
    """A JSON-able form of `entry` (records cut to its features): one spill-file line."""
    probs = entry.probabilities
    labels = entry.labels
    return {
        "role": entry.role,
        "version": entry.version,
        "time": entry.time.isoformat(),
        "request_ids": list(entry.request_ids),
        "records": kept_records(entry.records, entry.features),
        "latency_ms": entry.latency_ms,
        "labels": labels.tolist() if hasattr(labels, "tolist") else labels,
        "probabilities": probs.tolist() if hasattr(probs, "tolist") else probs,
        "classes": entry.classes,
        "error": entry.error,
        "features": entry.features,
    }


def load_entry(data: dict[str, Any]) -> LogEntry:
    """The LogEntry that `dump_entry` wrote."""
    return LogEntry(
        role=data["role"],
        version=str(data["version"]),
        time=datetime.fromisoformat(data["time"]),
        request_ids=list(data["request_ids"]),
        records=list(data["records"]),
        latency_ms=data["latency_ms"],
        labels=data.get("labels"),
        probabilities=data.get("probabilities"),
        classes=data.get("classes"),
        error=data.get("error"),
        features=data.get("features"),
    )
