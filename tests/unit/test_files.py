"""Dropped files (issue 12 §2): settling, ignored names, safe partition keys, the size bound."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from mlops_assets import files
from mlops_assets.files import (
    FileTooLarge,
    Look,
    check_size,
    ignored_name,
    is_settled,
    look,
    read_bounded,
    safe_child,
    settled,
)
from mlops_assets.settings import ConfigError, DataConfig, load_settings
from mlops_assets.validation import list_raw_files, validate_file


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


# ------------------------------------------------------------------------------ settled


def test_a_first_look_is_never_settled_a_second_unchanged_old_one_is(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    _age(path, 60)
    assert not settled(path, 5)  # first look in this process
    assert settled(path, 5)  # same size and mtime, 60 s old


def test_a_young_file_is_not_settled_even_when_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    first = look(path)
    assert first is not None
    assert not settled(path, 5, previous=first)
    # The same look judged 6 s later is settled.
    assert settled(path, 5, now=time.time() + 6, previous=first)


def test_a_growing_file_with_an_old_mtime_is_not_settled(tmp_path: Path) -> None:
    """An mtime in the past (a lagging clock, a copy tool) does not hide a changed size."""
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n")
    _age(path, 60)
    first = look(path)
    with path.open("a") as fh:
        fh.write("2\n")
    _age(path, 60)
    assert not settled(path, 5, previous=first)
    assert settled(path, 5)  # unchanged since the look just recorded


def test_settle_zero_takes_a_file_at_once_and_a_missing_file_never(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n")
    assert settled(path, 0)
    assert not settled(tmp_path / "gone.csv", 0)
    assert not settled(tmp_path, 0)  # a folder is not a file


def test_is_settled_compares_size_and_mtime() -> None:
    now = 1_000.0
    old = Look(size=10, mtime_ns=int((now - 10) * 1e9))
    assert is_settled(old, old, 5, now)
    assert not is_settled(old, None, 5, now)
    assert not is_settled(old, Look(size=9, mtime_ns=old.mtime_ns), 5, now)
    assert not is_settled(old, Look(size=10, mtime_ns=old.mtime_ns - 1), 5, now)
    assert not is_settled(old, old, 11, now)


def test_the_observation_map_stays_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "_MAX_REMEMBERED", 3)
    monkeypatch.setattr(files, "_looks", type(files._looks)())
    for i in range(6):
        path = tmp_path / f"{i}.csv"
        path.write_text("x\n")
        settled(path, 5)
    assert len(files._looks) == 3
    assert str((tmp_path / "5.csv").absolute()) in files._looks


# ------------------------------------------------------------------------------ ignored names


@pytest.mark.parametrize(
    "name",
    [
        ".x.csv",
        "x.csv.part",
        "x.csv.tmp",
        "x.csv.partial",
        "x.csv~",
        "X.CSV.PART",
        "",
        ".x.csv.part",
    ],
)
def test_temporary_and_hidden_names_are_ignored(name: str) -> None:
    assert ignored_name(name)


@pytest.mark.parametrize("name", ["x.csv", "part.csv", "tmp.csv", "x.tmp.csv", "a~b.csv"])
def test_final_names_are_not_ignored(name: str) -> None:
    assert not ignored_name(name)


def test_the_raw_listing_skips_files_being_dropped(tmp_path: Path) -> None:
    for name in ("done.csv", "x.csv.part", ".y.csv", "z.csv~", "w.csv.tmp"):
        (tmp_path / name).write_text("a\n")
    assert [p.name for p in list_raw_files(tmp_path)] == ["done.csv"]
    # The atomic way to drop a file: write it under a temporary name, then rename it.
    (tmp_path / "x.csv.part").rename(tmp_path / "x.csv")
    assert [p.name for p in list_raw_files(tmp_path)] == ["done.csv", "x.csv"]


# ------------------------------------------------------------------------------ safe_child


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("../../etc/passwd", "path separator"),
        ("/etc/passwd", "absolute path"),
        ("..", "folder"),
        (".", "folder"),
        ("sub/x.csv", "path separator"),
        ("..\\x.csv", "path separator"),
        ("x\x00.csv", "NUL"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_unsafe_keys_are_refused_naming_the_key(tmp_path: Path, key: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        safe_child(tmp_path, key)
    assert repr(key) in str(info.value)
    assert "Nothing was read or moved" in str(info.value)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n")
    (root / "link.csv").symlink_to(secret)
    with pytest.raises(ValueError, match="outside"):
        safe_child(root, "link.csv")


def test_plain_names_are_children(tmp_path: Path) -> None:
    assert safe_child(tmp_path, "x.csv") == tmp_path / "x.csv"
    assert safe_child(tmp_path, "..x.csv") == tmp_path / "..x.csv"  # a name, not a parent
    assert safe_child(tmp_path, "missing.csv") == tmp_path / "missing.csv"


# ------------------------------------------------------------------------------ size bound


def test_read_bounded_refuses_a_file_over_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * 2048)
    assert read_bounded(path, 2048) == b"x" * 2048
    assert check_size(path, 2048) == 2048
    with pytest.raises(FileTooLarge) as info:
        read_bounded(path, 2047)
    message = str(info.value)
    assert "big.csv" in message and "2,048 bytes" in message
    assert "data.max_file_bytes" in message


def test_an_oversize_raw_file_fails_validation_with_a_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,target\n" + "1,0\n" * 1000)
    result = validate_file(path, DataConfig(max_file_bytes=1024))
    assert not result.ok and result.sha256
    (problem,) = result.problems
    assert problem.check == "file_too_large" and "data.max_file_bytes" in problem.message
    assert problem.count == path.stat().st_size


# ------------------------------------------------------------------------------ settings


def _project(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "config.yaml"
    path.write_text(yaml.safe_dump({"data": data}))
    return path


def test_the_keys_have_defaults_and_are_validated(tmp_path: Path) -> None:
    assert DataConfig().settle_seconds == 5
    assert DataConfig().max_file_bytes == 512 * 1024**2
    path = _project(tmp_path, {"settle_seconds": -1})
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "data.settle_seconds"
    path.write_text(yaml.safe_dump({"data": {"max_file_bytes": 0}}))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "data.max_file_bytes"


def test_the_shipped_config_sets_both_keys() -> None:
    shipped = Path(__file__).resolve().parents[2] / "config" / "config.yaml"
    data = yaml.safe_load(shipped.read_text())["data"]
    assert data["settle_seconds"] == 5
    assert data["max_file_bytes"] == 512 * 1024**2
