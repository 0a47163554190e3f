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
