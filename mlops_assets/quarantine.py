"""Quarantine of the files that fail validation: moved aside with a report, never deleted.

`quarantine` moves the file to the quarantine folder (never overwriting another file there)
and writes a JSON and a Markdown report next to it; calling it again with the same result
finds the moved file and completes its reports.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_assets.validation import ValidationResult, file_sha256

logger = logging.getLogger(__name__)


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _report_markdown(result: ValidationResult, dest: Path, when: str) -> str:
    lines = [
        f"# Quarantined: `{dest.name}`",
        "",
        f"- original path: `{result.path}`",
        f"- sha256: `{result.sha256}`",
        f"- quarantined at (UTC): {when}",
        f"- data rows: {result.rows}",
        f"- failing checks: {len(result.problems)}",
        "",
        "| check | column | problem | examples |",
        "|---|---|---|---|",
    ]
    for p in result.problems:
        examples = "; ".join(p.examples)
        lines.append(
            f"| {_md_cell(p.check)} | {_md_cell(p.column or '(file)')} | "
            f"{_md_cell(p.message)} | {_md_cell(examples)} |"
        )
    if not result.problems:
        lines.append("| (none) | | quarantined by request; no failing check | |")
    lines += ["", "Nothing was deleted: fix the file and copy it back to the raw folder.", ""]
    return "\n".join(lines)


def _write_reports(result: ValidationResult, dest: Path) -> None:
    json_path = dest.with_name(dest.name + ".report.json")
    md_path = dest.with_name(dest.name + ".report.md")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    if not json_path.exists():
        payload = {
            "file": dest.name,
            "original_path": str(result.path),
            "quarantined_path": str(dest),
            "sha256": result.sha256,
            "time_utc": when,
            "rows": result.rows,
            "columns": result.columns,
            "problems": [p.model_dump() for p in result.problems],
        }
        json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if not md_path.exists():
        md_path.write_text(_report_markdown(result, dest, when), encoding="utf-8")


def _same_content(path: Path, sha: str) -> bool:
    return path.is_file() and bool(sha) and file_sha256(path) == sha


def quarantine(result: ValidationResult, quarantine_dir: Path) -> Path:
    """Move a file into `quarantine_dir` with its reports and return its new path."""
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    name = result.path.name
    prefix = result.sha256[:12] or "unknown"
    candidates = [quarantine_dir / name, quarantine_dir / f"{prefix}_{name}"]

    if not result.path.exists():
        # Already moved (a second call with the same result): find it, complete the reports.
        for candidate in candidates:
            if _same_content(candidate, result.sha256):
                _write_reports(result, candidate)
                return candidate
        raise FileNotFoundError(f"{result.path} is gone and is not in {quarantine_dir}")
    if result.path.resolve().parent == quarantine_dir.resolve():
        _write_reports(result, result.path)
        return result.path

    dest = next((c for c in candidates if not c.exists()), None)
    counter = 1
    while dest is None:
        # Both names are taken by other content: never overwrite, count up instead.
        candidate = quarantine_dir / f"{prefix}_{counter}_{name}"
        dest = None if candidate.exists() else candidate
        counter += 1
    shutil.move(str(result.path), str(dest))
    _write_reports(result, dest)
    logger.warning("quarantined %s -> %s: %s", result.path, dest, result.summary())
    return dest
