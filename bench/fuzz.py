"""Summarise a schemathesis NDJSON report: cases sent per endpoint, status codes, every 5xx.

Used by `scripts/fuzz_serving.sh`; standard library only, so it runs in the fuzz venv.
`python bench/fuzz.py REPORT.ndjson [--json OUT]` prints a table and the closing line
`fuzz: N cases sent, M 5xx` and exits 1 when any answer was a 5xx or had no response.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

MAX_SHOWN = 20


def _body(request: dict[str, Any]) -> str:
    body = request.get("body")
    if isinstance(body, dict) and "$base64" in body:
        try:
            return base64.b64decode(body["$base64"]).decode("utf-8", "replace")
        except ValueError:
            return body["$base64"]
    return "" if body is None else str(body)


def summarise(path: Path) -> dict[str, Any]:
    """Counts by endpoint and status, plus the requests that got a 5xx or no answer."""
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    failures: list[dict[str, Any]] = []
    phases: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder") or {}
        label = recorder.get("label", "?")
        for interaction in (recorder.get("interactions") or {}).values():
            phases[finished.get("phase", "?")] += 1
            response = interaction.get("response")
            code = str(response["status_code"]) if response else "no response"
            statuses[label][code] += 1
            if response is None or response["status_code"] >= 500:
                request = interaction.get("request", {})
                failures.append({"operation": label, "status": code, "body": _body(request)[:500]})
    total = sum(sum(c.values()) for c in statuses.values())
    return {
        "cases": total,
        "server_errors": len(failures),
        "by_phase": dict(phases),
        "by_operation": {op: dict(sorted(c.items())) for op, c in sorted(statuses.items())},
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one report; exit 1 on any 5xx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    summary = summarise(args.report)
    out = sys.stdout
    for op, codes in summary["by_operation"].items():
        out.write(f"{op:24} {sum(codes.values()):7}  {codes}\n")
    out.write(f"phases: {summary['by_phase']}\n")
    for failure in summary["failures"][:MAX_SHOWN]:
        out.write(f"5xx: {failure['operation']} -> {failure['status']}: {failure['body']}\n")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    out.write(f"fuzz: {summary['cases']} cases sent, {summary['server_errors']} 5xx\n")
    return 1 if summary["server_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
