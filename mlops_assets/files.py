"""Dropped files: when a file is complete, which names are never picked up, safe paths, bounds.

- `settled`: a file is settled when its mtime is at least `data.settle_seconds` old *and* its
  size and mtime are unchanged since the previous look. Every write moves the mtime, so the
  age test catches a writer that is still busy; the second look catches a file whose mtime is
  old although it still grows (a network filesystem whose clock is behind ours, a copy tool
  that sets the mtime early). The previous look comes from the caller when it has a durable
  one (the new-file sensor keeps it in its cursor; label ingestion looks before and after its
  read), else from a small per-process map of the last look at each path. A first look is
  never settled (unless `settle_seconds` is 0, which turns the wait off).
- `ignored_name`: dot-files and `*.tmp`, `*.part`, `*.partial`, `*~` are never picked up, so a
  writer can drop a file atomically: write `x.csv.part` (or `.x.csv`), then rename it `x.csv`.
- `safe_child`: a partition key or file name is one plain name inside its folder, never a path.
- `read_bounded` / `check_size`: a file over `data.max_file_bytes` is refused before it is read.

No Dagster here: the sensor, the assets and the lifecycle modules all use these.
"""

from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

IGNORED_SUFFIXES = (".tmp", ".part", ".partial")
_MAX_REMEMBERED = 4096


@dataclass(frozen=True)
class Look:
    """One look at a file: its size and mtime (nanoseconds)."""

    size: int
    mtime_ns: int


class FileTooLarge(ValueError):
    """A file over `data.max_file_bytes`; the message says how big it is and what to do."""

    def __init__(self, path: Path, size: int, max_bytes: int) -> None:
        self.path = Path(path)
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(
            f"{self.path.name} is {size:,} bytes, over the limit data.max_file_bytes "
            f"({max_bytes:,} bytes); it was not read. Split it into smaller files, or raise "
            "data.max_file_bytes if this machine has the memory for it"
        )


_looks: OrderedDict[str, Look] = OrderedDict()


def look(path: Path) -> Look | None:
    """The file's size and mtime now, or None when it is gone (or not a regular file)."""
    try:
        info = Path(path).stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return Look(size=info.st_size, mtime_ns=info.st_mtime_ns)


def is_settled(
    current: Look, previous: Look | None, settle_seconds: float, now: float | None = None
) -> bool:
    """True when `current` equals the previous look and its mtime is `settle_seconds` old."""
    if settle_seconds <= 0:
        return True
    now = time.time() if now is None else now
    return previous == current and now - current.mtime_ns / 1e9 >= settle_seconds


def settled(
    path: Path,
    settle_seconds: float,
    now: float | None = None,
    previous: Look | None = None,
) -> bool:
    """Whether `path` has stopped changing (see the module docstring); records this look."""
    current = look(path)
    key = str(Path(path).absolute())
    if current is None:
        _looks.pop(key, None)
        return False
    before = previous if previous is not None else _looks.get(key)
    _looks[key] = current
    _looks.move_to_end(key)
    while len(_looks) > _MAX_REMEMBERED:
        _looks.popitem(last=False)
    return is_settled(current, before, settle_seconds, now)


def ignored_name(name: str) -> bool:
    """True for names never picked up: dot-files, `*.tmp`, `*.part`, `*.partial`, `*~`."""
    lower = name.lower()
    return (
        not name or name.startswith(".") or name.endswith("~") or lower.endswith(IGNORED_SUFFIXES)
    )


def safe_child(root: Path, name: str) -> Path:
    """`root / name` for a plain file name inside `root`; ValueError naming the key otherwise."""

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"refused file name / partition key {name!r}: {why}; it must be the plain name of "
            f"a file in {root}. Nothing was read or moved"
        )

    if not isinstance(name, str) or not name.strip():
        raise refuse("it is empty")
    if "\x00" in name:
        raise refuse("it contains a NUL byte")
    if Path(name).is_absolute():
        raise refuse("it is an absolute path")
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        raise refuse("it contains a path separator")
    if name in (".", ".."):
        raise refuse("it names a folder, not a file")
    root = Path(root)
    candidate = root / name
    try:
        resolved = candidate.resolve()
        base = root.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise refuse(f"it cannot be resolved ({exc})") from None
    if resolved == base or not resolved.is_relative_to(base):
        raise refuse(f"it resolves to {resolved}, outside {base}")
    return candidate


def check_size(path: Path, max_bytes: int) -> int:
    """The file's size; FileTooLarge when it is over `max_bytes`."""
    size = Path(path).stat().st_size
    if size > max_bytes:
        raise FileTooLarge(path, size, max_bytes)
    return size


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, never more than `max_bytes` in memory; FileTooLarge when over it."""
    check_size(path, max_bytes)
    with Path(path).open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the size check
        raise FileTooLarge(path, len(data), max_bytes)
    return data
