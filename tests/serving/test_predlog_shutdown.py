"""Serve's graceful shutdown writes every queued prediction row, or spills it (store down).

A real Ray Serve (in a subprocess with its own local Ray, so the session app is untouched) runs
two small deployments built like the ingress: a PredictionLogWriter started on the replica's
loop, rows queued per request, and `__del__` (which Serve calls on graceful shutdown) calling
`flush_blocking()`. The flush interval is long, so only the shutdown can write the rows. One
writes to a SQLite store; the other's store is a PostgreSQL port nothing listens on, and its
rows must land in the spill file, which a later writer replays into the SQLite store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from mlops_assets.lifecycle.store import LifecycleStore
from serving.predlog import PredictionLogWriter, dump_entry, encode_entries, load_entry

pytestmark = [pytest.mark.serving, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 40

SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    import ray
    from ray import serve

    up_url, down_url, spill, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])


    @serve.deployment(graceful_shutdown_timeout_s=60)
    class Logger:
        def __init__(self, url, spill_path):
            from serving.predlog import PredictionLogWriter, dump_entry, load_entry

            self._url, self._store = url, None
            self._writer = PredictionLogWriter(
                self._sink, batch=100_000, flush_s=3600, size=len,
                spill_path=spill_path and Path(spill_path), dump=dump_entry, load=load_entry,
            )

        def _sink(self, entries):
            from mlops_assets.lifecycle.store import LifecycleStore
            from serving.predlog import encode_entries

            if self._store is None:
                self._store = LifecycleStore(self._url)
            return self._store.append_prediction_rows(encode_entries(entries, "churn"))

        async def log(self, i):
            from serving.predlog import LogEntry

            self._writer.start()
            self._writer.submit([LogEntry(
                role="champion", version="1", time=datetime.now(UTC),
                request_ids=[f"req-{i}"], records=[{"age": i, "junk": "x" * 1000}],
                latency_ms=1.0, labels=["True"], probabilities=[[0.2, 0.8]],
                classes=["False", "True"], features=["age"],
            )])
            return self._writer.pending

        def __del__(self):
            # What the ingress does: Serve calls this on graceful shutdown.
            writer = getattr(self, "_writer", None)
            if writer is not None and writer.pending:
                writer.flush_blocking()


    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="mlops-ray-", dir="/tmp"))
    try:
        serve.start(http_options={"port": 0})
        up = serve.run(Logger.bind(up_url, None), name="up", route_prefix=None)
        down = serve.run(Logger.bind(down_url, str(spill)), name="down", route_prefix=None)
        for i in range(n):
            assert up.log.remote(i).result() == i + 1  # queued, not written
            assert down.log.remote(i).result() == i + 1
        serve.shutdown()
    finally:
        ray.shutdown()
    print("shutdown done", flush=True)
    """
)


def _down_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+psycopg2://mlops:mlops@127.0.0.1:{port}/mlops?connect_timeout=2"


def test_serve_shutdown_writes_queued_rows_and_spills_when_the_store_is_down(
    tmp_path: Path,
) -> None:
    up_url = f"sqlite:///{tmp_path / 'up.db'}"
    spill = tmp_path / "home" / "predlog-spill.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, up_url, _down_url(), str(spill), str(REQUESTS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0 and "shutdown done" in proc.stdout, proc.stderr[-4000:]

    # The clean path: every queued row reached the store at shutdown, schema features only.
    with LifecycleStore(up_url) as store:
        rows = store.predictions(model_name="churn")
    assert sorted(r.request_id for r in rows) == sorted(f"req-{i}" for i in range(REQUESTS))
    assert all(set(r.inputs) == {"age"} for r in rows)

    # The store-down path: every row is in the spill file, and the next start replays them.
    lines = spill.read_bytes().splitlines()
    assert len(lines) == REQUESTS
    assert {orjson.loads(line)["request_ids"][0] for line in lines} == {
        f"req-{i}" for i in range(REQUESTS)
    }
    replay_url = f"sqlite:///{tmp_path / 'replay.db'}"
    with LifecycleStore(replay_url) as store:
        writer = PredictionLogWriter(
            lambda items: store.append_prediction_rows(encode_entries(items, "churn")),
            size=len,
            spill_path=spill,
            dump=dump_entry,
            load=load_entry,
        )
        assert writer.replay_spill() == REQUESTS
        assert len(store.predictions(model_name="churn")) == REQUESTS
    assert spill.stat().st_size == 0
