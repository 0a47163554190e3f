"""Per-model image benchmark: the packaged champion in its container against the host.

What it measures, in one run on a real Docker engine (DOCKER_HOST; scripts/start_docker.sh):
1. the serving runtime's build time (`docker/build.sh serving-runtime`, base cached) and size;
2. `mlops package`: the model image's build time cold (forced, runtime cached), a re-package
   that reuses the image, and the image's size;
3. container start-up: `docker run --network host` to the first 200 from /health (median of 3);
4. single-row `/predict` p50 and 1,000-row `/batch_predict` p50 of the container against
   `docker/runtime/bundle_server.py` on the host serving the same bundle, in interleaved
   rounds from one client (same httpx client type, same pre-encoded bodies, sequential).

Run: `.venv/bin/python bench/containers.py` (about 4 minutes with the runtime built;
`--skip-runtime` reuses an existing runtime image). It builds a throw-away project in a temp
dir, and removes the containers and the host server it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_health(url: str, timeout_s: float = 180.0) -> float:
    """Seconds until `url`/health answers 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer /health in {timeout_s:g} s")


def bootstrap_project(root: Path, rows: int) -> Any:
    """A project with a champion trained on `rows` generated rows; returns its settings."""
    from mlops_assets.datagen import write_dataset
    from mlops_assets.pipeline import run_cycle_for_file
    from mlops_assets.settings import load_settings

    (root / "config").mkdir(parents=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["data"]["settle_seconds"] = 0
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lud = yaml.safe_load((REPO / "config" / "ludwig_config.yaml").read_text())
    lud["trainer"]["epochs"] = 3
    (root / "config" / "ludwig_config.yaml").write_text(yaml.safe_dump(lud, sort_keys=False))
    os.environ["MLOPS_HOME"] = str(root / ".mlops")
    os.environ["DAGSTER_HOME"] = str(root / ".mlops" / "dagster")
    (root / ".mlops" / "dagster").mkdir(parents=True)
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    data = write_dataset(settings.raw_dir, rows, seed=5)
    report = run_cycle_for_file(settings, data, evaluate=True)
    if not report["success"]:
        raise SystemExit(f"bootstrap failed: {report.get('errors')}")
    return settings, data


def p50_ms(samples: list[float]) -> float:
    """Median in milliseconds."""
    return float(np.median(samples) * 1000)


def main() -> int:
    """Build, start and time the packaged champion against the host server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows of the champion")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per server")
    parser.add_argument("--singles", type=int, default=100, help="single-row requests a round")
    parser.add_argument("--batches", type=int, default=5, help="1,000-row requests a round")
    parser.add_argument("--skip-runtime", action="store_true", help="reuse the runtime image")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import logging

    from mlflow import MlflowClient

    from mlops_assets.packaging import docker_client, package_version

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    engine = docker_client()
    results: dict[str, Any] = {}
    if not args.skip_runtime:
        started = time.perf_counter()
        subprocess.run(["bash", str(REPO / "docker/build.sh"), "serving-runtime"], check=True)
        results["runtime_build_s"] = round(time.perf_counter() - started, 1)
    runtime = engine.images.get("mlops/serving-runtime:0.1.0")
    results["runtime_size_mb"] = round(runtime.attrs["Size"] / 1e6)

    with tempfile.TemporaryDirectory(prefix="bench-containers-") as tmp:
        root = Path(tmp)
        settings, data = bootstrap_project(root / "proj", args.rows)
        client = MlflowClient(settings.tracking_uri)
        cold = package_version(settings, client, "1", force=True)
        warm = package_version(settings, client, "1")
        results.update(
            image=cold.ref,
            image_size_mb=round(cold.size_bytes / 1e6),
            model_image_build_s=cold.build_seconds,
            repackage_reuse_s=warm.build_seconds,
        )

        import mlflow.artifacts

        run_id = client.get_model_version(settings.model_name, "1").run_id
        bundle = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path="serving",
            dst_path=str(root / "bundle"),
            tracking_uri=settings.tracking_uri,
        )
        frame = pd.read_csv(data).drop(columns=["target"])
        frame = frame.astype(object).where(frame.notna(), None)  # NaN travels as null
        row_bodies = [
            json.dumps({"features": r}).encode() for r in frame.head(200).to_dict(orient="records")
        ]
        batch_body = json.dumps({"instances": frame.head(1000).to_dict(orient="records")}).encode()

        starts: list[float] = []
        kept = None
        for attempt in range(3):
            port = free_port()
            started = time.perf_counter()
            container = engine.containers.run(
                cold.ref,
                detach=True,
                network_mode="host",
                environment={"MLOPS_SERVE_PORT": str(port)},
            )
            wait_health(f"http://127.0.0.1:{port}")
            starts.append(time.perf_counter() - started)
            if attempt < 2:
                container.remove(force=True)
            else:
                kept = container  # the last one serves the rounds below
        results["container_startup_s_median"] = round(float(np.median(starts)), 2)
        servers = {"container": f"http://127.0.0.1:{port}"}

        host_port = free_port()
        env = dict(
            os.environ,
            MLOPS_BUNDLE_DIR=str(bundle),
            MLOPS_SERVE_PORT=str(host_port),
            MLOPS_MODEL_VERSION="1",
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(REPO),
        )
        host = subprocess.Popen(
            [sys.executable, str(REPO / "docker/runtime/bundle_server.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            servers["host"] = f"http://127.0.0.1:{host_port}"
            wait_health(servers["host"])
            single: dict[str, list[float]] = {k: [] for k in servers}
            batch: dict[str, list[float]] = {k: [] for k in servers}
            headers = {"content-type": "application/json"}
            with httpx.Client(timeout=60) as http:
                for url in servers.values():  # warm-up
                    for body in row_bodies[:20]:
                        http.post(f"{url}/predict", content=body, headers=headers)
                for rnd in range(args.rounds):
                    order = list(servers) if rnd % 2 == 0 else list(servers)[::-1]
                    for name in order:
                        url = servers[name]
                        for i in range(args.singles):
                            t = time.perf_counter()
                            r = http.post(
                                f"{url}/predict", content=row_bodies[i % 200], headers=headers
                            )
                            single[name].append(time.perf_counter() - t)
                            r.raise_for_status()
                        for _ in range(args.batches):
                            t = time.perf_counter()
                            r = http.post(
                                f"{url}/batch_predict", content=batch_body, headers=headers
                            )
                            batch[name].append(time.perf_counter() - t)
                            r.raise_for_status()
            for name in servers:
                results[f"{name}_single_p50_ms"] = round(p50_ms(single[name]), 2)
                results[f"{name}_batch1000_p50_ms"] = round(p50_ms(batch[name]), 1)
            results["single_p50_ratio_container_over_host"] = round(
                results["container_single_p50_ms"] / results["host_single_p50_ms"], 2
            )
            results["batch_p50_ratio_container_over_host"] = round(
                results["container_batch1000_p50_ms"] / results["host_batch1000_p50_ms"], 2
            )
        finally:
            os.killpg(host.pid, 15)
            host.wait(timeout=30)
            kept.remove(force=True)

    width = max(len(k) for k in results)
    for key, value in results.items():
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
