"""Labels in: label files from `data/labels/` into the lifecycle store.

- `ingest_label_files`: label CSVs (`request_id,label`) from `data/labels/` into the store.
  A bad file is quarantined next to a report, like a bad data file; a good one is moved to
  `data/labels/processed/<sha256[:12]>_<name>` (nothing is ever deleted). The move is the commit
  point: a crash before it re-adds the same labels (an upsert), a file whose content was already
  processed is not applied again (so it cannot undo later corrections).

Label values are matched to the served models' classes by the one rule in `classes`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, computed_field

from mlops_assets.files import FileTooLarge, ignored_name, look, read_bounded, settled
from mlops_assets.lifecycle.classes import canonical_label, label_map, version_classes
from mlops_assets.lifecycle.states import Alias
from mlops_assets.quarantine import quarantine
from mlops_assets.validation import Problem, ValidationResult, file_sha256

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle

log = logging.getLogger(__name__)

LABEL_COLUMNS = ("request_id", "label")
PROCESSED_DIR = "processed"
_MAX_EXAMPLES = 5


class LabelFile(BaseModel):
    """What happened to one label file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    sha256: str
    status: Literal["ingested", "duplicate", "quarantined"]
    rows: int = 0
    accepted: int = 0
    unknown_ids: int = 0  # labels stored for requests not (yet) in the prediction log
    moved_to: str
    problems: list[Problem] = Field(default_factory=list)


class LabelIngest(BaseModel):
    """Outcome of one `ingest_label_files` pass."""

    files: list[LabelFile] = Field(default_factory=list)
    # Files left for a later pass: still being written (not settled, data.settle_seconds).
    waiting: list[str] = Field(default_factory=list)

    @computed_field
    @property
    def accepted(self) -> int:
        """Labels stored in this pass."""
        return sum(f.accepted for f in self.files)

    @property
    def quarantined(self) -> list[LabelFile]:
        """Files moved to quarantine."""
        return [f for f in self.files if f.status == "quarantined"]


def list_label_files(labels_dir: Path) -> list[Path]:
    """CSV files waiting in the labels folder, by name (hidden, temporary, subfolders skipped)."""
    if not labels_dir.is_dir():
        return []
    return sorted(
        p
        for p in labels_dir.iterdir()
        if p.is_file() and not ignored_name(p.name) and p.suffix.lower() == ".csv"
    )


def _check_label_file(
    raw: bytes, known_classes: list[str] | None
) -> tuple[list[Problem], list[tuple[str, str]], list[str]]:
    """Problems, (request_id, label) pairs and columns of one label file."""

    def fail(check: str, message: str, examples: list[str] | None = None) -> list[Problem]:
        return [Problem(check=check, message=message, examples=examples or [])]

    if not raw:
        return fail("empty_file", "the file is empty (0 bytes)"), [], []
    try:
        text = raw.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return (
            fail(
                "encoding",
                f"not UTF-8 text: invalid byte(s) at line {line} (byte offset {exc.start}); "
                "save the file as UTF-8",
                [repr(raw[exc.start : exc.start + 8])],
            ),
            [],
            [],
        )
    if "\x00" in text:
        return fail("encoding", "NUL byte in the file: this is not a text CSV file"), [], []
    try:
        header = next(csv.reader(io.StringIO(text)), [])
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except Exception as exc:  # pandas raises several types for malformed CSV
        return fail("csv_parse", f"not a readable CSV file: {' '.join(str(exc).split())}"), [], []
    columns = [str(c).strip() for c in header]
    frame.columns = [str(c).strip() for c in frame.columns]
    problems: list[Problem] = []
    missing = [c for c in LABEL_COLUMNS if c not in columns]
    if missing:
        hint = ""
        if len(columns) == 1 and any(sep in columns[0] for sep in (";", "\t", "|")):
            hint = " (the file seems to use another separator; use commas)"
        problems.append(
            Problem(
                check="required_column",
                column=missing[0],
                message=f"missing column(s) {missing}; a label file has columns "
                f"request_id,label; columns found: {columns}{hint}",
            )
        )
        return problems, [], columns
    dups = sorted({c for c in columns if columns.count(c) > 1})
    if dups:
        problems.append(
            Problem(
                check="duplicate_columns",
                column=dups[0],
                message=f"column name(s) appear more than once: {dups}",
            )
        )
        return problems, [], columns
    if frame.empty:
        problems.append(Problem(check="no_data_rows", message="header but no label rows"))
        return problems, [], columns

    ids = frame["request_id"].astype(str).str.strip()
    labels = frame["label"].astype(str).str.strip()
    for column, values in (("request_id", ids), ("label", labels)):
        empty = values.index[values == ""]
        if len(empty):
            problems.append(
                Problem(
                    check="not_null",
                    column=column,
                    message=f"{len(empty)} empty value(s) in a column that must not be empty",
                    examples=[f"line {int(i) + 2}" for i in empty[:_MAX_EXAMPLES]],
                    count=len(empty),
                )
            )
    if known_classes:
        known = label_map(known_classes)
        bad = labels.index[(labels != "") & ~labels.map(canonical_label).isin(known)]
        if len(bad):
            problems.append(
                Problem(
                    check="label_classes",
                    column="label",
                    message=f"{len(bad)} label(s) are not classes of the served models "
                    f"{sorted(set(known_classes))}",
                    examples=[f"line {int(i) + 2}: {labels[i]!r}" for i in bad[:_MAX_EXAMPLES]],
                    count=len(bad),
                )
            )
    given = pd.DataFrame({"request_id": ids, "label": labels.map(canonical_label)})
    given = given[(given["request_id"] != "") & (given["label"] != "")]
    conflicting = given.groupby("request_id")["label"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        problems.append(
            Problem(
                check="conflicting_labels",
                column="label",
                message=f"{len(conflicting)} request id(s) carry different labels in this file",
                examples=[str(r) for r in conflicting.index[:_MAX_EXAMPLES]],
                count=len(conflicting),
            )
        )
    items = list(zip(ids.tolist(), labels.tolist(), strict=True))
    return problems, items, columns


def _served_classes(lc: Lifecycle) -> list[str] | None:
    """Classes of the champion and open shadows (None when unknown: no check then).

    Deliberately lenient: labels are ground truth that arrives late, so an MLflow that does
    not answer leaves them stored unchecked (with a warning naming why) rather than refused.
    A version the registry no longer has adds no classes; any other error is raised.
    """
    from mlops_assets.lifecycle.tracking import TrackingUnreachable, missing_as_none

    uri = lc.settings.tracking_uri
    try:
        versions = [lc.alias_version(Alias.CHAMPION)]
        versions += [t.version for t in lc.store.open_shadow_tests(lc.model_name)]
        classes: list[str] = []
        for version in versions:
            if version is not None:
                found = missing_as_none(
                    lambda v=version: version_classes(lc, v), uri, f"reading v{version}"
                )
                classes += found or []
    except TrackingUnreachable as exc:
        log.warning("label values are not checked against the served models' classes: %s", exc)
        return None
    return list(dict.fromkeys(classes)) or None


def _move_processed(path: Path, processed: Path, sha: str) -> Path:
    processed.mkdir(parents=True, exist_ok=True)
    dest = processed / f"{sha[:12]}_{path.name}"
    counter = 1
    while dest.exists():  # never overwrite
        dest = processed / f"{sha[:12]}_{counter}_{path.name}"
        counter += 1
    shutil.move(str(path), str(dest))
    return dest


def _read_settled(path: Path, settle_seconds: float, max_bytes: int) -> bytes | FileTooLarge | None:
    """The whole file once it has settled; None while it may still be written (or is gone).

    Two looks: before the read (its mtime must be `settle_seconds` old) and after it (size and
    mtime unchanged, and as many bytes read as the first look saw), so a label file still
    being written is left for a later pass instead of losing its tail. A file over `max_bytes`
    is returned as the error, unread.
    """
    before = look(path)
    if before is None:
        return None
    if settle_seconds > 0 and time.time() - before.mtime_ns / 1e9 < settle_seconds:
        log.info("label file %s changed less than %g s ago; taken later", path.name, settle_seconds)
        return None
    try:
        raw = read_bounded(path, max_bytes)
    except FileTooLarge as exc:
        return exc
    except FileNotFoundError:
        return None
    if len(raw) != before.size or not settled(path, settle_seconds, previous=before):
        log.info("label file %s changed while it was read; taken on a later pass", path.name)
        return None
    return raw


def ingest_label_files(lc: Lifecycle) -> LabelIngest:
    """Store the labels of every CSV in `labels_dir`; quarantine bad files, move good ones.

    Source of each label: `file:<name>`. Re-running adds nothing new: processed files have left
    the folder, and a file whose content was processed before is moved as a `duplicate` without
    being applied again.
    """
    settings, store = lc.settings, lc.store
    labels_dir = settings.labels_dir
    processed = labels_dir / PROCESSED_DIR
    files = list_label_files(labels_dir)
    out = LabelIngest()
    if not files:
        return out
    classes = _served_classes(lc)
    data = settings.config.data
    for path in files:
        raw = _read_settled(path, data.settle_seconds, data.max_file_bytes)
        if raw is None:
            out.waiting.append(path.name)
            continue
        if isinstance(raw, FileTooLarge):
            sha = file_sha256(path)
            problems = [Problem(check="file_too_large", message=str(raw), count=raw.size)]
            items, columns = [], []
        else:
            sha = hashlib.sha256(raw).hexdigest()
            problems, items, columns = _check_label_file(raw, classes)
        if problems:
            result = ValidationResult(
                path=path, sha256=sha, ok=False, rows=len(items), columns=columns, problems=problems
            )
            moved = quarantine(result, settings.quarantine_dir)
            log.error("label file %s quarantined to %s: %s", path.name, moved, result.summary())
            out.files.append(
                LabelFile(
                    name=path.name,
                    sha256=sha,
                    status="quarantined",
                    rows=len(items),
                    moved_to=str(moved),
                    problems=problems,
                )
            )
            continue
        if _already_processed(processed, sha):
            moved = _move_processed(path, processed, sha)
            log.warning("label file %s was processed before; moved to %s unapplied", path, moved)
            out.files.append(
                LabelFile(
                    name=path.name,
                    sha256=sha,
                    status="duplicate",
                    rows=len(items),
                    moved_to=str(moved),
                )
            )
            continue
        result = store.add_labels(items, source=f"file:{path.name}")
        moved = _move_processed(path, processed, sha)
        log.info(
            "label file %s: %d labels stored (%d for requests not logged yet); moved to %s",
            path.name,
            result.accepted,
            len(result.unknown_ids),
            moved,
        )
        out.files.append(
            LabelFile(
                name=path.name,
                sha256=sha,
                status="ingested",
                rows=len(items),
                accepted=result.accepted,
                unknown_ids=len(result.unknown_ids),
                moved_to=str(moved),
            )
        )
    return out


def _already_processed(processed: Path, sha: str) -> bool:
    return any(file_sha256(candidate) == sha for candidate in processed.glob(f"{sha[:12]}_*"))
