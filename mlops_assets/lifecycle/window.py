"""Training windows: which validated files a challenger trains on, and how they are combined.

`training.window` picks files among the validated CSVs in `data/raw/` (`choose_files`), relative
to the file that triggered the training, never to the wall clock: a file is a candidate only
when it is older than the triggering file (by modification time, then name), so re-running the
training of a file months later picks exactly the same files as the first run did.

`assemble` stacks the frames, newest file first, and caps the rows at `training.max_rows`
(the triggering file is always whole, older files are added newest first, and the one that
overflows contributes its last rows). The triggering file's rows come first and are counted in
`current_rows`: the holdout for the offline gate is drawn from them alone
(`training.split_frame`), so champion and challenger are judged on current data.

`data_key` identifies exactly what was trained on (each file's sha256 and the rows taken from
it); a training with the same key, config and seed is reused rather than repeated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.settings import TrainingSection, TrainingWindow
from mlops_assets.validation import ValidationResult

log = logging.getLogger(__name__)


class WindowFile(BaseModel):
    """One file of a training window: its identity and the rows taken from it."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    rows: int  # rows taken
    file_rows: int  # rows in the file
    mtime: float


class TrainingData(BaseModel):
    """A challenger's training data: the stacked frame and where every row came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame: pd.DataFrame = Field(repr=False)
    files: list[WindowFile]  # newest first; files[0] triggered the training
    current_rows: int  # the first `current_rows` rows are files[0]'s: the holdout comes from them
    window: str  # `training.window` as written in the config
    max_rows: int | None
    skipped: list[str] = Field(default_factory=list)  # "<file>: why" for candidates left out

    @property
    def data_sha256(self) -> str:
        """Comma-joined sha256 of the files, newest first (the `data.sha256` tag)."""
        return ",".join(f.sha256 for f in self.files)

    @property
    def data_key(self) -> str:
        """sha256 of every file's sha256 and the rows taken from it: what was trained on."""
        return data_key([(f.sha256, f.rows) for f in self.files])


def data_key(parts: Sequence[tuple[str, int]]) -> str:
    """The reuse key of a training's data: sha256 of [(file sha256, rows taken), ...]."""
    blob = json.dumps([[sha, int(rows)] for sha, rows in parts]).encode()
    return hashlib.sha256(blob).hexdigest()


def _order(path: Path) -> tuple[float, str]:
    return (path.stat().st_mtime, path.name)


def choose_files(candidates: Sequence[Path], newest: Path, window: TrainingWindow) -> list[Path]:
    """The files `window` selects for a training triggered by `newest`, newest first.

    `newest` is always first. Candidates newer than it (by mtime, then name) are never taken,
    so a re-run of an old file's training selects the same files.
    """
    newest = Path(newest)
    top = _order(newest)
    older = sorted(
        (p for p in map(Path, candidates) if p.resolve() != newest.resolve() and _order(p) < top),
        key=_order,
        reverse=True,
    )
    if window.kind == "latest":
        older = []
    elif window.kind == "last_files":
        older = older[: max(0, (window.files or 1) - 1)]
    elif window.kind == "since":
        oldest = top[0] - (window.age or timedelta(0)).total_seconds()
        older = [p for p in older if p.stat().st_mtime >= oldest]
    return [newest, *older]


def assemble(
    current: ValidationResult,
    older: Sequence[ValidationResult],
    section: TrainingSection,
) -> TrainingData:
    """Stack the triggering file and the older validated files within `max_rows`."""
    if not current.ok or current.frame is None:
        raise ValueError(f"{current.path} did not pass validation; it cannot be trained on")
    columns = list(current.frame.columns)
    frames = [current.frame]
    files = [_window_file(current, len(current.frame))]
    skipped: list[str] = []
    room = None if section.max_rows is None else section.max_rows - len(current.frame)
    for result in older:
        name = Path(result.path).name
        if room is not None and room <= 0:
            skipped.append(f"{name}: over training.max_rows ({section.max_rows})")
            continue
        if not result.ok or result.frame is None:
            why = "; ".join(p.message for p in result.problems[:2]) or "not valid"
            skipped.append(f"{name}: fails validation now ({why})")
            continue
        if sorted(result.frame.columns) != sorted(columns):
            skipped.append(f"{name}: its columns differ from {Path(current.path).name}'s")
            continue
        frame = result.frame[columns]
        if room is not None and len(frame) > room:
            frame = frame.tail(room)  # the last rows of the file: the newest it holds
        frames.append(frame)
        files.append(_window_file(result, len(frame)))
        if room is not None:
            room -= len(frame)
    for line in skipped:
        log.warning("training window: %s left out", line)
    return TrainingData(
        frame=pd.concat(frames, ignore_index=True),
        files=files,
        current_rows=len(current.frame),
        window=section.window.describe(),
        max_rows=section.max_rows,
        skipped=skipped,
    )


def _window_file(result: ValidationResult, rows: int) -> WindowFile:
    path = Path(result.path)
    return WindowFile(
        path=str(path),
        sha256=result.sha256,
        rows=rows,
        file_rows=result.rows,
        mtime=path.stat().st_mtime if path.exists() else 0.0,
    )


def training_data(
    current: ValidationResult,
    candidates: Sequence[Path],
    section: TrainingSection,
    validate: Callable[[Path], ValidationResult],
) -> TrainingData:
    """Choose the window's files for `current`, validate the older ones, and stack them.

    `validate` checks an older file against today's config and champion schema without moving
    it: a file that passed when it arrived but fails now is left out with its reason.
    """
    chosen = choose_files(candidates, Path(current.path), section.window)
    older = [validate(p) for p in chosen[1:]]
    return assemble(current, older, section)
