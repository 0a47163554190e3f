"""Time the paired bootstrap: 1,000 resamples on 100,000 rows. Prints; never asserts.

Run: `python bench/bootstrap.py [--rows N] [--resamples R] [--repeats K]`.
The goal is under 2 s for the policy's default metrics. The config's full set (with roc_auc and
log_loss, which need per-row weights) and a three-class problem are timed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# One BLAS thread: the machine is shared, and the bootstrap's matrix products are small.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mlops_assets.lifecycle.stats import paired_bootstrap

GOAL_S = 2.0
DEFAULT_METRICS = ["accuracy", "precision", "recall", "f1_score"]
FULL_METRICS = [*DEFAULT_METRICS, "roc_auc", "log_loss"]


def _data(rows: int, k: int, seed: int = 0) -> tuple:
    """Labels and two correlated, imperfect models' probabilities."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, rows)
    logits = rng.normal(size=(rows, k))
    logits[np.arange(rows), y] += 1.0
    noise = rng.normal(scale=0.7, size=(rows, k))
    pa = np.exp(logits + noise)
    pz = np.exp(logits + 0.3 * noise + 0.2 * np.eye(k)[y])
    pa /= pa.sum(axis=1, keepdims=True)
    pz /= pz.sum(axis=1, keepdims=True)
    classes = [str(i) for i in range(k)]
    labels = np.array(classes)
    return labels[y], labels[pa.argmax(1)], labels[pz.argmax(1)], pa, pz, classes


def _time(args: argparse.Namespace, k: int, metrics: list[str]) -> tuple[float, list[float]]:
    y, a, z, pa, pz, classes = _data(args.rows, k)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        paired_bootstrap(y, a, z, pa, pz, classes, metrics, n_resamples=args.resamples, seed=1)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    """Run the timings and print them next to the goal."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"paired bootstrap, {args.resamples} resamples x {args.rows} rows, "
        f"median of {args.repeats} (goal < {GOAL_S:.0f} s for the default metrics)"
    )
    cases = [
        ("binary, default metrics", 2, DEFAULT_METRICS),
        ("binary, + roc_auc, log_loss", 2, FULL_METRICS),
        ("3 classes, + roc_auc, log_loss", 3, FULL_METRICS),
    ]
    for name, k, metrics in cases:
        median, times = _time(args, k, metrics)
        flag = "ok" if median < GOAL_S else "over goal"
        runs = ", ".join(f"{t:.3f}" for t in times)
        print(f"  {name:32s} median {median:7.3f} s  [{runs}]  {flag}")


if __name__ == "__main__":
    main()
