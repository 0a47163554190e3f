"""Which raw files the new-file sensor and the schedule start runs for."""

from __future__ import annotations

from mlops_assets.sensors import raw_file_requests


def test_new_files_become_partitions_and_runs() -> None:
    requests, new = raw_file_requests([("a.csv", "s1"), ("b.csv", "s2")], known=set())
    assert new == ["a.csv", "b.csv"]
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("a.csv", "a.csv:s1"),
        ("b.csv", "b.csv:s2"),
    ]


def test_file_staged_by_someone_else_is_not_run_twice() -> None:
    # The CLI (or the UI) added the partition and runs it itself.
    requests, new = raw_file_requests([("a.csv", "s1")], known={"a.csv"}, seen={})
    assert requests == [] and new == []


def test_unchanged_file_is_not_run_again_but_changed_content_is() -> None:
    seen = {"a.csv": [1, 10, "s1"], "b.csv": [1, 10, "s2"]}
    requests, _ = raw_file_requests(
        [("a.csv", "s1"), ("b.csv", "s2-new")], known={"a.csv", "b.csv"}, seen=seen
    )
    assert [r.run_key for r in requests] == ["b.csv:s2-new"]


def test_schedule_leaves_young_files_to_the_sensor() -> None:
    from mlops_assets.schedules import settled_files

    now = 1_000_000.0
    stats = {
        "old.csv": [int((now - 301) * 1e9), 1, "s1"],
        "new.csv": [int((now - 5) * 1e9), 1, "s2"],
    }
    settled, waiting = settled_files([("old.csv", "s1"), ("new.csv", "s2")], stats, now, 300)
    assert settled == [("old.csv", "s1")]
    assert waiting == ["new.csv"]
    # No grace: the schedule takes everything.
    settled, waiting = settled_files([("old.csv", "s1"), ("new.csv", "s2")], stats, now, 0)
    assert [name for name, _ in settled] == ["old.csv", "new.csv"] and waiting == []
