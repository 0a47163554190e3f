"""The prediction log keeps what it should: schema features only, every row through shutdown.

Real stores only: a working store (a SQLite file, and PostgreSQL when MLOPS_TEST_PG_URL is
set), and a PostgreSQL URL on a port nothing listens on (connection refused: the store is
down). The sink opens its store lazily, as the ingress does, so pointing it at the working
URL is "the store comes back".
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from mlops_assets.lifecycle.store import LifecycleStore
from serving.predlog import (
    LogEntry,
    PredictionLogWriter,
    StoreUnavailable,
    dump_entry,
    encode_entries,
    load_entry,
)

WHEN = datetime(2026, 12, 2, 7, 30, 0, 123, tzinfo=UTC)
FEATURES = ["age", "plan"]
JUNK = "x" * 200_000  # an unknown key a client sends: never logged when the schema is known


def _down_url() -> str:
    """A PostgreSQL URL on a local port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+psycopg2://mlops:mlops@127.0.0.1:{port}/mlops?connect_timeout=2"


class StoreSink:
    """The ingress's sink: encode the entries, append them to the store at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._stores: dict[str, LifecycleStore] = {}
        self.gate: threading.Event | None = None

    def __call__(self, items: list[LogEntry]) -> int:
        if self.gate is not None:
            self.gate.wait(10)
        if self.url not in self._stores:
            self._stores[self.url] = LifecycleStore(self.url)
        return self._stores[self.url].append_prediction_rows(encode_entries(items, "churn"))

    def close(self) -> None:
        for store in self._stores.values():
            store.close()


def _entries(prefix: str = "r") -> list[LogEntry]:
    records = [{"age": 30, "plan": "basic", "junk": JUNK}, {"age": 41.5, "plan": "pro"}]
    ids = [f"{prefix}-1", f"{prefix}-2"]
    return [
        LogEntry(
            role="champion",
            version="3",
            time=WHEN,
            request_ids=ids,
            records=records,
            latency_ms=0.8,
            labels=["True", "False"],
            probabilities=np.array([[0.25, 0.75], [0.9, 0.1]]),
            classes=["False", "True"],
            features=FEATURES,
        ),
        LogEntry(
            role="shadow",
            version="4",
            time=WHEN,
            request_ids=ids,
            records=records,
            latency_ms=2000.0,
            error="timeout after 2s",
            features=FEATURES,
        ),
    ]


def _logged(url: str) -> list[tuple[str, str, str]]:
    with LifecycleStore(url) as store:
        return sorted(
            (p.request_id, p.role, p.model_version) for p in store.predictions(model_name="churn")
        )


def _writer(sink: StoreSink, spill: Path | None, **kw: Any) -> PredictionLogWriter:
    kw = {"batch": 100, "flush_s": 5.0, "retries": 0, "max_backoff_s": 30.0, **kw}
    return PredictionLogWriter(
        sink, size=len, spill_path=spill, dump=dump_entry, load=load_entry, **kw
    )


EXPECTED = [
    ("r-1", "champion", "3"),
    ("r-1", "shadow", "4"),
    ("r-2", "champion", "3"),
    ("r-2", "shadow", "4"),
]

# ------------------------------------------------------------------ schema features only


def test_only_the_schema_features_are_logged() -> None:
    (champ, _) = _entries()
    rows = encode_entries([champ], "churn")
    assert [orjson.loads(r[5]) for r in rows] == [
        {"age": 30, "plan": "basic"},
        {"age": 41.5, "plan": "pro"},
    ]
    assert max(len(r[5]) for r in rows) < 100  # not the 200 kB junk key
    # A schema feature the record lacks (nullable) is simply absent; a non-object logs empty.
    short = LogEntry("champion", "3", WHEN, ["a", "b"], [{"plan": "pro"}, 7], 1.0,
                     features=FEATURES)  # fmt: skip
    assert [orjson.loads(r[5]) for r in encode_entries([short], "churn")] == [{"plan": "pro"}, {}]
    # Without a schema (features=None) everything is logged, as before.
    champ.features = None
    assert "junk" in orjson.loads(encode_entries([champ], "churn")[0][5])


def test_the_features_cut_is_cheap_when_nothing_is_cut() -> None:
    """The usual record has only schema keys: it is encoded as it is, not copied."""
    record = {"age": 30, "plan": "basic"}
    entry = LogEntry("champion", "3", WHEN, ["a"], [record], 1.0, features=FEATURES)
    from serving.predlog import kept_records

    assert kept_records(entry.records, entry.features)[0] is record


def test_spill_lines_round_trip_and_carry_only_features() -> None:
    champ, shadow = _entries()
    for entry in (champ, shadow):
        back = load_entry(
            orjson.loads(orjson.dumps(dump_entry(entry), option=orjson.OPT_SERIALIZE_NUMPY))
        )
        assert encode_entries([back], "churn") == encode_entries([entry], "churn")
    assert "junk" not in orjson.dumps(dump_entry(champ), option=orjson.OPT_SERIALIZE_NUMPY).decode()


# ------------------------------------------------------------------------------ shutdown


def test_a_clean_close_writes_every_row_held_after_a_store_failure(
    tmp_path: Path, store_url: str
) -> None:
    """Rows held through an outage are written by close() once the store is back: no spill."""
    spill = tmp_path / "spill.jsonl"
    sink = StoreSink(_down_url())

    async def run() -> PredictionLogWriter:
        writer = _writer(sink, spill)
        writer.start()
        assert writer.submit(_entries()) == 0
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        assert writer.store_down and writer.pending == 4  # held, next try in 10 s
        sink.url = store_url  # the store is back; the back-off has not run out
        await writer.close()
        return writer

    try:
        writer = asyncio.run(run())
    finally:
        sink.close()
    assert (writer.written, writer.spilled, writer.dropped, writer.pending) == (4, 0, 0, 0)
    assert not spill.exists() or spill.stat().st_size == 0
    assert _logged(store_url) == EXPECTED


def test_store_down_at_shutdown_spills_and_the_next_start_replays(
    tmp_path: Path, store_url: str
) -> None:
    spill = tmp_path / "home" / "predlog-spill.jsonl"  # its folder does not exist yet
    down = StoreSink(_down_url())
    spilled: list[int] = []

    async def first_run() -> PredictionLogWriter:
        writer = _writer(down, spill, on_spilled=spilled.append)
        writer.start()
        writer.submit(_entries())
        await writer.close()
        return writer

    first = asyncio.run(first_run())
    down.close()
    assert (first.written, first.spilled, first.dropped) == (0, 4, 0)
    assert spilled == [4]
    lines = spill.read_bytes().splitlines()
    assert len(lines) == 2  # one line per queued entry
    assert all(b"junk" not in line for line in lines)  # spilled as logged: features only

    up = StoreSink(store_url)

    async def next_start() -> PredictionLogWriter:
        writer = _writer(up, spill, flush_s=0.05)
        writer.start()  # replays in the background at once
        for _ in range(200):
            if spill.stat().st_size == 0:
                break
            await asyncio.sleep(0.05)
        await writer.close()
        return writer

    try:
        second = asyncio.run(next_start())
    finally:
        up.close()
    assert spill.stat().st_size == 0, "the spill file is truncated once its rows are written"
    assert (second.written, second.replayed, second.dropped) == (4, 4, 0)
    assert _logged(store_url) == EXPECTED


def test_replay_keeps_the_file_while_the_store_is_down(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    sink = StoreSink(_down_url())
    writer = _writer(sink, spill)
    writer.submit(_entries())
    writer.flush_blocking()  # no event loop: the sync shutdown path spills too
    before = spill.read_bytes()
    assert writer.spilled == 4 and len(before.splitlines()) == 2

    retry = _writer(sink, spill)
    with pytest.raises(StoreUnavailable):
        retry.replay_spill()
    sink.close()
    assert spill.read_bytes() == before, "nothing is truncated before it is written"


def test_replay_is_idempotent_after_a_crash_before_the_truncation(
    tmp_path: Path, store_url: str
) -> None:
    """A crash between the store's commit and the truncation replays rows already stored."""
    spill = tmp_path / "spill.jsonl"
    down = StoreSink(_down_url())
    writer = _writer(down, spill)
    writer.submit(_entries())
    writer.flush_blocking()
    down.close()
    kept = tmp_path / "as-before-the-crash.jsonl"
    shutil.copy(spill, kept)

    up = StoreSink(store_url)
    try:
        assert _writer(up, spill).replay_spill() == 4
        assert spill.stat().st_size == 0
        shutil.copy(kept, spill)  # as if the process died right after the commit
        assert _writer(up, spill).replay_spill() == 4
        assert _writer(up, spill).replay_spill() == 0  # and an empty file replays nothing
    finally:
        up.close()
    assert _logged(store_url) == EXPECTED  # each row once: the unique key skipped the rest


def test_a_line_cut_off_by_a_crash_costs_only_itself(tmp_path: Path, sqlite_url: str) -> None:
    spill = tmp_path / "spill.jsonl"
    spill.write_bytes(b'{"role": "champion", "version": "3", "ti')  # a torn append
    down = StoreSink(_down_url())
    writer = _writer(down, spill)
    writer.submit(_entries())
    writer.flush_blocking()
    down.close()
    up = StoreSink(sqlite_url)
    try:
        replay = _writer(up, spill)
        assert replay.replay_spill() == 4
    finally:
        up.close()
    assert replay.dropped == 1  # the torn line, counted
    assert _logged(sqlite_url) == EXPECTED


def test_flush_blocking_also_saves_the_batch_in_flight(tmp_path: Path) -> None:
    """Serve's shutdown hook runs while a worker thread may be writing a batch: not lost."""
    spill = tmp_path / "spill.jsonl"
    sink = StoreSink(_down_url())
    sink.gate = threading.Event()

    async def run() -> PredictionLogWriter:
        writer = _writer(sink, spill, batch=2)
        writer.start()
        writer.submit(_entries("r"))  # 4 rows >= batch: the flusher takes a batch now
        for _ in range(200):
            if writer._inflight:
                break
            await asyncio.sleep(0.01)
        assert writer._inflight and writer.pending == 4
        writer.submit(_entries("s"))
        gate = sink.gate
        assert gate is not None
        sink.gate = None  # flush_blocking's own writes go straight to the (down) store
        writer.flush_blocking()
        gate.set()  # the worker's write now fails too: it must not re-queue anything
        await asyncio.sleep(0.2)
        return writer

    writer = asyncio.run(run())
    sink.close()
    assert (writer.spilled, writer.dropped, writer.pending) == (8, 0, 0)  # nothing re-queued
    ids = sorted(
        (rid, e["role"])
        for line in spill.read_bytes().splitlines()
        for e in [orjson.loads(line)]
        for rid in e["request_ids"]
    )
    assert len(ids) == 8 and len(set(ids)) == 8


def test_without_a_spill_file_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    sink = StoreSink(_down_url())
    writer = _writer(sink, None)
    writer.submit(_entries())
    writer.flush_blocking()
    sink.close()
    assert (writer.spilled, writer.dropped) == (0, 4)


def test_an_unwritable_spill_file_drops_and_counts(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spill folder should be")
    sink = StoreSink(_down_url())
    writer = _writer(sink, blocker / "spill.jsonl")
    writer.submit(_entries())
    writer.flush_blocking()
    sink.close()
    assert (writer.spilled, writer.dropped) == (0, 4)
