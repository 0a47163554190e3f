"""Full lifecycle cycle vs a bare `LudwigModel.train` on the same 10,000 rows.

The cycle is everything `mlops train-challenger --auto-evaluate` does for one file: Dagster
run, pandera validation, the same Ludwig training, MLflow logging and registration, the
TorchScript bundle, scoring the holdout with both models, the paired tests, the plots and the
crash-safe registry move. The bare baseline is `LudwigModel.train` on the same train and
validation frames with the same config. Both run warm (Ludwig imported, a champion already
registered, so every measured cycle also scores the champion), alternating, and we print
medians and the ratio. Goal: ratio <= 1.3.

    .venv/bin/python bench/train_cycle.py [--rows 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(1)
    from ludwig.api import LudwigModel

    from mlops_assets.datagen import write_dataset
    from mlops_assets.lifecycle.training import ROW_ID, resolve_ludwig_config, split_frame
    from mlops_assets.pipeline import run_cycle_for_file
    from mlops_assets.settings import load_settings
    from mlops_assets.validation import validate_file

    work = Path(tempfile.mkdtemp(prefix="bench-cycle-"))
    data = write_dataset(work / "data", args.rows, seed=123)
    settings0 = load_settings(REPO / "config" / "config.yaml")
    frame = validate_file(data, settings0.config.data).frame
    config, _ = resolve_ludwig_config(settings0, frame)
    splits = split_frame(frame, settings0.config.data.split, settings0.config.data.target_column)
    train = splits.train.drop(columns=[ROW_ID])
    val = splits.validation.drop(columns=[ROW_ID])

    def bare() -> float:
        out = Path(tempfile.mkdtemp(dir=work))
        cwd = os.getcwd()
        os.chdir(out)
        started = time.perf_counter()
        model = LudwigModel(config, logging_level=logging.WARNING, backend="local")
        model.train(
            training_set=train,
            validation_set=val,
            output_directory=str(out / "r"),
            skip_save_processed_input=True,
            skip_save_progress=True,
            skip_save_log=True,
            random_seed=settings0.config.ludwig.random_seed,
        )
        took = time.perf_counter() - started
        os.chdir(cwd)
        shutil.rmtree(out, ignore_errors=True)
        return took

    # One project with a warm registry: a champion exists, as in steady state.
    proj = work / "proj"
    shutil.copytree(REPO / "config", proj / "config")
    os.environ["MLOPS_HOME"] = str(proj / ".mlops")
    settings = load_settings(proj / "config" / "config.yaml")
    settings.ensure_dirs()

    def cycle(i: int) -> float:
        # Same rows, new bytes (a shuffled copy): a real new training, judged on the champion.
        frame_i = frame.sample(frac=1.0, random_state=i + 1).reset_index(drop=True)
        path = settings.raw_dir / f"cycle{i}.csv"
        frame_i.to_csv(path, index=False)
        started = time.perf_counter()
        report = run_cycle_for_file(settings, path, evaluate=True)
        took = time.perf_counter() - started
        if not report["success"]:
            raise SystemExit(f"cycle failed: {report.get('errors')}")
        return took

    cycle(-1)  # warm-up: bootstraps the champion and creates the registry

    bare()  # warm-up: first training pays one-off costs (imports, kernels)
    bare_times, cycle_times = [], []
    for i in range(args.repeats):
        bare_times.append(bare())
        cycle_times.append(cycle(i))
        print(
            f"repeat {i + 1}: bare {bare_times[-1]:.2f} s, cycle {cycle_times[-1]:.2f} s",
            flush=True,
        )
    b, c = statistics.median(bare_times), statistics.median(cycle_times)
    print(f"\nrows={args.rows} repeats={args.repeats} (medians)")
    print(f"bare LudwigModel.train : {b:.2f} s")
    print(f"full cycle             : {c:.2f} s")
    print(f"ratio cycle / bare     : {c / b:.2f}  (goal <= 1.3)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
