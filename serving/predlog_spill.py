"""The prediction log's spill file: rows the store refused at shutdown, replayed at start.

One JSON object a line, appended under an exclusive `flock` and fsynced, so two ingress
processes sharing a home never interleave a line. A line a crash cut off is kept alone (the
next append starts on a new line) and is counted as unreadable at replay. A replay holds the
lock for its whole length and truncates the file only when the block ends without an error,
so a store that fails half-way leaves every line for the next try (serving/predlog.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

# The spill file, in the project home (MLOPS_HOME), of the ingress's prediction log writer.
SPILL_FILE = "predlog-spill.jsonl"


def spill_line(obj: Any) -> bytes:
    """One spill-file line for a JSON-able object."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    except TypeError:  # e.g. an int past 64 bits, a numpy string scalar
        return json.dumps(obj, default=str).encode() + b"\n"


def _ends_with_newline(f: Any) -> bool:
    """True when the file open in append mode `f` is empty or ends with a newline."""
    with open(f.name, "rb") as r:
        r.seek(-1, os.SEEK_END)
        return r.read(1) == b"\n"


def append_lines(path: Path, lines: Sequence[bytes]) -> None:
    """Append `lines` to the spill file durably, under its lock; OSError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if f.tell() > 0 and not _ends_with_newline(f):
            f.write(b"\n")  # a line cut off by a crash stays alone (replay skips it)
        f.write(b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def replaying(path: Path, load: Callable[[Any], Any]) -> Iterator[tuple[list[Any], int] | None]:
    """The spill file locked for a replay: (loaded items, unreadable lines), None without one.

    The file is truncated (durably) when the block ends without an error, and left whole
    when it raises.
    """
    try:
        f = open(path, "r+b")  # noqa: SIM115 - held open, locked, for the whole replay
    except FileNotFoundError:
        yield None
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        items, bad = [], 0
        for line in f.read().splitlines():
            if not line.strip():
                continue
            try:
                items.append(load(orjson.loads(line)))
            except Exception:
                bad += 1
        yield items, bad
        f.truncate(0)
        f.flush()
        os.fsync(f.fileno())
