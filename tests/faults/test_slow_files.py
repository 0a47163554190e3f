"""Files under faults (issue 12 §2 and the §5 row "a file written slowly into data/raw/").

A real writer process writes a CSV into data/raw/ in chunks (each flushed and fsynced, so the
file on disk is really half-written in between), while the new-file sensor's evaluation
function is called every 100 ms against a real Dagster instance, the way the daemon would call
it (its cursor carried over, its partition requests applied). The file must be requested
exactly once, only after the writer finished and the file settled (data.settle_seconds), and
the run it starts must read the whole file.

Partition keys that try to leave data/raw/ (`../x.csv`, an absolute path) added by hand, as
from the UI, fail the run before anything is read or moved; the drift code refuses the same
names from a registry tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.datagen import generate_frame
from mlops_assets.definitions import build_definitions
from mlops_assets.partitions import raw_files
from mlops_assets.pipeline import dagster_instance, materialize
from mlops_assets.settings import Settings, load_settings

pytestmark = pytest.mark.faults

SETTLE_S = 1.0
TICK_S = 0.1

# Copies argv[1] to argv[2] in argv[3] chunks, argv[4] seconds apart, then renames the result
# to argv[5] when given (the atomic way to drop a file).
_WRITER = """
import os, sys, time
src, dest, chunks, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
data = open(src, "rb").read()
step = -(-len(data) // chunks)
with open(dest, "wb") as out:
    for start in range(0, len(data), step):
        out.write(data[start:start + step])
        out.flush()
        os.fsync(out.fileno())
        time.sleep(pause)
if len(sys.argv) > 5:
    os.rename(dest, sys.argv[5])
"""


@dataclass
class Daemon:
    """The new-file sensor evaluated the way the Dagster daemon does, tick after tick."""

    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance
    cursor: str | None = None
    # (time, run request) for every request any tick returned
    requests: list[tuple[float, dg.RunRequest]] = field(default_factory=list)
    ticks: int = 0

    def tick(self) -> None:
        """One evaluation: keep the cursor, apply the partition requests, record the runs."""
        sensor = self.defs.get_sensor_def("new_raw_file_sensor")
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=self.defs.resources,
            repository_def=self.defs.get_repository_def(),
        ) as context:
            data = sensor(context)  # the evaluation function itself
        assert isinstance(data, dg.SensorResult)
        for request in data.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        now = time.time()
        self.requests += [(now, r) for r in data.run_requests or []]
        self.cursor = data.cursor
        self.ticks += 1

    def run_while(self, busy: subprocess.Popen, then_s: float, limit_s: float = 30) -> float:
        """Tick while `busy` runs and `then_s` longer; return when the process ended."""
        deadline = time.monotonic() + limit_s
        ended: float | None = None
        while time.monotonic() < deadline:
            self.tick()
            if ended is None and busy.poll() is not None:
                ended = time.time()
            if ended is not None and time.time() - ended >= then_s:
                break
            time.sleep(TICK_S)
        assert ended is not None and busy.returncode == 0, "the writer did not finish"
        return ended


@pytest.fixture
def daemon(make_project) -> Daemon:
    root = make_project(config={"data": {"settle_seconds": SETTLE_S}})
    config = root / "config" / "config.yaml"
    settings = load_settings(config)
    settings.ensure_dirs()
    instance = dagster_instance(settings)
    return Daemon(settings, build_definitions(config), instance)


def _source(tmp_path: Path, rows: int, seed: int) -> tuple[Path, str]:
    frame = generate_frame(rows, seed=seed)
    path = tmp_path / f"source-{seed}.csv"
    frame.to_csv(path, index=False)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _write_slowly(src: Path, dest: Path, rename_to: Path | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", _WRITER, str(src), str(dest), "25", "0.12"]
    return subprocess.Popen([*args, str(rename_to)] if rename_to else args)


def test_a_file_written_slowly_is_requested_once_after_it_settled(daemon, tmp_path) -> None:
    src, sha = _source(tmp_path, 600, seed=3)
    dest = daemon.settings.raw_dir / "slow.csv"
    writer = _write_slowly(src, dest)
    ended = daemon.run_while(writer, then_s=SETTLE_S + 1.5)

    assert daemon.ticks >= 25  # the sensor looked many times while the file was half-written
    (at, request), *more = daemon.requests
    assert not more, [r.run_key for _, r in more]
    assert request.partition_key == "slow.csv"
    assert at > ended  # after the writer finished
    assert at - dest.stat().st_mtime >= SETTLE_S  # and after the file had settled
    assert request.tags["mlops/data_sha256"] == sha  # the whole file, not a prefix
    assert request.run_key == f"slow.csv:{sha}"
    assert daemon.instance.get_dynamic_partitions(raw_files.name) == ["slow.csv"]

    # The run the request starts reads the whole file (ingestion and validation, for real).
    report = materialize(
        daemon.settings,
        ["raw_data", "validated_features"],
        partition_key=request.partition_key,
        tags=request.tags,
    )
    assert report["success"], report.get("errors")
    assert report["assets"]["raw_data"]["sha256"] == sha
    assert report["assets"]["validated_features"]["rows"] == 600

    # Later ticks ask for nothing more.
    for _ in range(5):
        daemon.tick()
    assert len(daemon.requests) == 1


def test_a_slow_rewrite_runs_once_more_on_its_new_content(daemon, tmp_path) -> None:
    first, sha1 = _source(tmp_path, 300, seed=4)
    second, sha2 = _source(tmp_path, 400, seed=5)
    dest = daemon.settings.raw_dir / "data.csv"
    daemon.run_while(_write_slowly(first, dest), then_s=SETTLE_S + 1.5)
    assert [r.run_key for _, r in daemon.requests] == [f"data.csv:{sha1}"]

    ended = daemon.run_while(_write_slowly(second, dest), then_s=SETTLE_S + 1.5)
    assert [r.run_key for _, r in daemon.requests] == [f"data.csv:{sha1}", f"data.csv:{sha2}"]
    assert daemon.requests[1][0] > ended


def test_an_atomic_rename_drop_is_never_seen_half_written(daemon, tmp_path) -> None:
    src, sha = _source(tmp_path, 300, seed=6)
    part = daemon.settings.raw_dir / "drop.csv.part"
    final = daemon.settings.raw_dir / "drop.csv"
    daemon.run_while(_write_slowly(src, part, rename_to=final), then_s=SETTLE_S + 1.5)
    assert [(r.partition_key, r.tags["mlops/data_sha256"]) for _, r in daemon.requests] == [
        ("drop.csv", sha)
    ]
    assert daemon.instance.get_dynamic_partitions(raw_files.name) == ["drop.csv"]


def test_a_file_staged_elsewhere_while_it_settles_is_not_run_twice(daemon, tmp_path) -> None:
    """The CLI (or the UI) adds the partition and runs the file itself while the sensor waits."""
    src, _ = _source(tmp_path, 200, seed=7)
    dest = daemon.settings.raw_dir / "staged.csv"
    dest.write_bytes(src.read_bytes())
    daemon.tick()  # first look: pending
    daemon.instance.add_dynamic_partitions(raw_files.name, ["staged.csv"])
    time.sleep(SETTLE_S + 0.2)
    for _ in range(3):
        daemon.tick()
    assert daemon.requests == []


def test_traversal_partition_keys_are_refused_and_nothing_is_read_or_moved(
    daemon, tmp_path
) -> None:
    settings = daemon.settings
    outside = settings.raw_dir.parent / "outside.csv"
    src, _ = _source(tmp_path, 200, seed=8)
    outside.write_bytes(src.read_bytes())
    before = (outside.read_bytes(), outside.stat().st_mtime_ns)
    for key in ("../outside.csv", str(outside), "../../../../etc/passwd"):
        daemon.instance.add_dynamic_partitions(raw_files.name, [key])
        report = materialize(settings, ["raw_data", "validated_features"], partition_key=key)
        assert not report["success"]
        (error,) = report["errors"]
        assert "refused" in error and repr(key) in error and "Nothing was read or moved" in error
        assert "raw_data" not in report["assets"]
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before
    assert list(settings.quarantine_dir.iterdir()) == []


def test_drift_refuses_a_training_file_name_outside_data_raw(daemon, tmp_path) -> None:
    """The drift reference looks up the champion's files by the names in a registry tag."""
    from mlops_assets.lifecycle.drift import _find_file

    settings = daemon.settings
    src, sha = _source(tmp_path, 200, seed=9)
    outside = settings.raw_dir.parent / "outside.csv"
    outside.write_bytes(src.read_bytes())
    for name in ("../outside.csv", str(outside)):
        assert _find_file(settings, name, sha) is None
    # A symlink in data/raw/ pointing out is refused too, by its name and in the listing.
    (settings.raw_dir / "link.csv").symlink_to(outside)
    assert _find_file(settings, "link.csv", sha) is None
    # The same bytes inside data/raw/ under another name are found.
    inside = settings.raw_dir / "renamed.csv"
    inside.write_bytes(src.read_bytes())
    assert _find_file(settings, "../outside.csv", sha) == inside


# --- label files ---------------------------------------------------------------------------


@pytest.fixture
def lifecycle(make_project):
    from mlops_assets.lifecycle.context import Lifecycle

    root = make_project(config={"data": {"settle_seconds": SETTLE_S, "max_file_bytes": 4096}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    with Lifecycle.open(settings) as lc:
        yield lc


def test_a_label_file_written_slowly_is_ingested_once_and_whole(lifecycle, tmp_path) -> None:
    from mlops_assets.lifecycle.labels import ingest_label_files

    ids = [f"r{i}" for i in range(300)]
    src = tmp_path / "labels.csv"
    src.write_text("request_id,label\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(ids)))
    dest = lifecycle.settings.labels_dir / "slow-labels.csv"
    writer = _write_slowly(src, dest)
    entries, waited, ended = [], 0, None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (ended is None or time.time() - ended < SETTLE_S + 1):
        result = ingest_label_files(lifecycle)
        entries += result.files
        waited += "slow-labels.csv" in result.waiting
        if ended is None and writer.poll() is not None:
            ended = time.time()
        time.sleep(TICK_S)
    assert writer.returncode == 0
    assert waited >= 10  # passes that saw it half-written and left it
    (entry,) = entries
    assert (entry.status, entry.rows, entry.accepted) == ("ingested", 300, 300)
    assert lifecycle.store.labels(ids) == {r: str(i % 2) for i, r in enumerate(ids)}


def test_an_oversize_label_file_is_quarantined_with_a_report(lifecycle) -> None:
    from mlops_assets.lifecycle.labels import ingest_label_files

    settings = lifecycle.settings
    big = settings.labels_dir / "big.csv"
    big.write_text("request_id,label\n" + "".join(f"r{i},1\n" for i in range(2000)))
    past = time.time() - 60
    os.utime(big, (past, past))
    (entry,) = ingest_label_files(lifecycle).files
    assert entry.status == "quarantined"
    assert [p.check for p in entry.problems] == ["file_too_large"]
    assert "data.max_file_bytes" in entry.problems[0].message
    report = json.loads((settings.quarantine_dir / "big.csv.report.json").read_text())
    assert report["problems"][0]["check"] == "file_too_large" and report["sha256"]
    assert lifecycle.store.labels(["r0"]) == {}
