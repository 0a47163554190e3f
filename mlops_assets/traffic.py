"""A built-in traffic generator: replays rows of a CSV against `/predict`, then labels them.

It plays the part of the users' applications in the demo and in load tests: each row is sent
without its target; the answer's `request_id` is kept with the row's true label, and the labels
"arrive later" as a `data/labels/*.csv` file (`request_id,label`) or through `POST /feedback`.
Loops are bounded in count and time, and only loopback URLs are used by the demo.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import BaseModel

log = logging.getLogger(__name__)


class TrafficReport(BaseModel):
    """What a traffic run sent and got back."""

    sent: int
    ok: int
    failed: int
    status_codes: dict[str, int]
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    versions: dict[str, int]
    labelled: list[tuple[str, str]]


def _json_value(value: Any) -> Any:
    if isinstance(value, float | np.floating) and np.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


async def _send_all(
    url: str,
    records: list[dict[str, Any]],
    labels: list[str],
    concurrency: int,
    timeout_s: float,
    progress: Callable[[int], None] | None,
) -> TrafficReport:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    codes: dict[str, int] = {}
    versions: dict[str, int] = {}
    labelled: list[tuple[str, str]] = []
    started = time.perf_counter()
    done = 0

    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def one(record: dict[str, Any], label: str) -> None:
            nonlocal done
            async with sem:
                t0 = time.perf_counter()
                try:
                    resp = await client.post(f"{url}/predict", json={"features": record})
                    code = str(resp.status_code)
                except httpx.HTTPError as err:
                    code = type(err).__name__
                    resp = None
                latencies.append((time.perf_counter() - t0) * 1000)
                codes[code] = codes.get(code, 0) + 1
                if resp is not None and resp.status_code == 200:
                    body = resp.json()
                    labelled.append((body["request_id"], label))
                    version = str(body.get("model_version"))
                    versions[version] = versions.get(version, 0) + 1
                done += 1
                if progress and done % 50 == 0:
                    progress(done)

        await asyncio.gather(*(one(r, lab) for r, lab in zip(records, labels, strict=True)))
    ok = codes.get("200", 0)
    lat = np.asarray(latencies) if latencies else None
    return TrafficReport(
        sent=len(records),
        ok=ok,
        failed=len(records) - ok,
        status_codes=codes,
        seconds=time.perf_counter() - started,
        p50_ms=float(np.percentile(lat, 50)) if lat is not None else None,
        p99_ms=float(np.percentile(lat, 99)) if lat is not None else None,
        versions=versions,
        labelled=labelled,
    )


def send_traffic(
    url: str,
    frame: pd.DataFrame,
    target: str,
    *,
    requests: int,
    seed: int = 0,
    concurrency: int = 8,
    timeout_s: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> TrafficReport:
    """Send `requests` rows (sampled with a seed) to `url`/predict; keep ids with true labels."""
    if requests < 1:
        raise ValueError("requests must be at least 1")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(frame), size=requests, replace=requests > len(frame))
    sample = frame.iloc[idx]
    labels = sample[target].astype(str).tolist()
    inputs = sample.drop(columns=[target])
    records = [
        {k: _json_value(v) for k, v in row.items()} for row in inputs.to_dict(orient="records")
    ]
    return asyncio.run(
        _send_all(url.rstrip("/"), records, labels, concurrency, timeout_s, progress)
    )


def write_label_file(labels_dir: Path, labelled: list[tuple[str, str]], name: str) -> Path:
    """Write `request_id,label` rows as a label file (atomically: a sensor never sees half)."""
    labels_dir.mkdir(parents=True, exist_ok=True)
    path = labels_dir / name
    tmp = labels_dir / f".{name}.partial"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["request_id", "label"])
        writer.writerows(labelled)
    tmp.rename(path)
    return path


def post_feedback(url: str, labelled: list[tuple[str, str]], batch: int = 200) -> int:
    """Send labels through `POST /feedback`; return how many the server accepted."""
    accepted = 0
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(labelled), batch):
            chunk = labelled[start : start + batch]
            resp = client.post(
                f"{url.rstrip('/')}/feedback",
                json={"labels": [{"request_id": r, "label": lab} for r, lab in chunk]},
            )
            resp.raise_for_status()
            accepted += int(resp.json().get("accepted", 0))
    return accepted
