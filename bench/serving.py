"""Serving benchmark: one run, side by side, medians and their ratios (loopback only).

What it measures (every loop is bounded; repeats interleave the variants to share any drift
of the machine's load between them):
1. /predict p50 and p99 with mirroring off (0 %) and at 100 % to the shadow;
2. /batch_predict rows/s against `mlflow models serve --env-manager local` of the same
   registered version (its pyfunc flavour, logged here with ludwig.contribs.mlflow), both sent
   the same `dataframe_split` body (and ours also with `instances`), beside a Serve endpoint
   that only reads that body (the transport floor);
3. /predict p50 over HTTP against in-process `LudwigModel.predict` of one row (and the
   in-process TorchScript fast path for reference), interleaved with the HTTP rounds;
4. /predict p50 against a constant Ray Serve FastAPI endpoint on the same Serve instance.

Run: `.venv/bin/python bench/serving.py` (about 3-4 minutes on 2 cores; `--quick` is shorter).
It builds a throw-away project and MLflow registry in a temp dir, starts its own local Ray
through serving.runner, and stops exactly what it started.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from fastapi import Request

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL_NAME = "churn-classifier"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quantiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    arr = np.asarray(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def timed_loop(n: int, call: Callable[[int], Any]) -> list[float]:
    """Seconds taken by each of n sequential calls."""
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return out


def write_project(root: Path, port: int) -> Path:
    """Config files pointing every store into `root`."""
    (root / "config").mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["mlflow"]["tracking_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    cfg["lifecycle_store"]["url"] = f"sqlite:///{root / 'lifecycle.db'}"
    cfg["champion_challenger"]["shadow_traffic_percent"] = 100
    cfg["serving"]["port"] = port
    cfg["serving"]["max_body_bytes"] = 5_000_000
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lud = yaml.safe_load((REPO / "config" / "ludwig_config.yaml").read_text())
    lud["trainer"]["epochs"] = 3
    (root / "config" / "ludwig_config.yaml").write_text(yaml.safe_dump(lud, sort_keys=False))
    return root / "config" / "config.yaml"


def train_and_register(root: Path, settings: Any, rows: int) -> dict[str, Any]:
    """Two versions (champion: baseline data, challenger: drift data), pyfunc + bundle each."""
    import mlflow
    import torch
    from ludwig.api import LudwigModel
    from ludwig.contribs.mlflow.model import save_model
    from mlflow import MlflowClient

    from mlops_assets.datagen import generate_frame
    from mlops_assets.lifecycle.bundle import export_bundle
    from mlops_assets.lifecycle.schema import infer_schema

    torch.set_num_threads(1)
    mlflow.set_tracking_uri(settings.tracking_uri)
    exp = mlflow.create_experiment("bench", artifact_location=(root / "art").as_uri())
    client = MlflowClient(settings.tracking_uri)
    client.create_registered_model(MODEL_NAME)
    config = settings.ludwig.to_ludwig_dict()
    names = [f["name"] for f in config["input_features"]]
    out: dict[str, Any] = {}
    for version, drift in (("1", False), ("2", True)):
        frame = generate_frame(rows, seed=int(version), drift=drift)
        model = LudwigModel(config, backend="local", logging_level=logging.ERROR)
        work = root / f"train-{version}"
        work.mkdir()
        cwd = Path.cwd()
        os.chdir(work)
        try:
            model.train(
                training_set=frame,
                output_directory=str(work / "results"),
                skip_save_processed_input=True,
                skip_save_progress=True,
                skip_save_log=True,
                skip_save_model=True,
                random_seed=1,
            )
        finally:
            os.chdir(cwd)
        schema = infer_schema(frame, "target", features=names)
        bundle = export_bundle(model, schema, work / "bundle")
        save_model(model, path=str(work / "mlflow_model"))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifacts(str(work / "mlflow_model"), "model")
            mlflow.log_artifacts(str(bundle), "serving")
        client.create_model_version(
            MODEL_NAME,
            source=f"runs:/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={"lifecycle.state": "champion" if version == "1" else "shadow"},
        )
        if version == "1":
            out["model"], out["frame"] = model, frame
    client.set_registered_model_alias(MODEL_NAME, "champion", "1")
    client.set_registered_model_alias(MODEL_NAME, "challenger", "2")
    return out


def records(frame: Any, n: int) -> list[dict[str, Any]]:
    """n JSON-ready feature dicts."""
    rows = frame.drop(columns=["target"]).head(n)
    rows = rows.astype(object).where(rows.notna(), None)
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
        for r in rows.to_dict(orient="records")
    ]


def deploy_constant(port_path: str = "/const") -> None:
    """A constant FastAPI endpoint on the same Serve instance: the HTTP + Serve floor."""
    from fastapi import Body, FastAPI
    from ray import serve

    const_api = FastAPI()

    @serve.deployment(
        ray_actor_options={"num_cpus": 0.05},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    @serve.ingress(const_api)
    class Constant:
        # Annotations stay builtins: Serve pickles this class by value, and string
        # annotations (from __future__) only resolve against names the body uses.
        @const_api.post("/predict")
        async def predict(self, payload: dict = Body(...)):  # noqa: B008
            return {
                "request_id": "x",
                "prediction": "False",
                "probabilities": {"False": 0.9, "True": 0.1},
                "model_version": "0",
            }

    serve.run(Constant.bind(), name="const", route_prefix=port_path)


def deploy_echo(route: str = "/echo") -> None:
    """An endpoint that reads the body and answers its size: Serve's floor for a big body."""
    from fastapi import FastAPI
    from fastapi.responses import Response
    from ray import serve

    echo_api = FastAPI()

    @serve.deployment(
        ray_actor_options={"num_cpus": 0.05},
        logging_config={"enable_access_log": False, "log_level": "WARNING"},
    )
    @serve.ingress(echo_api)
    class Echo:
        @echo_api.post("/")
        async def echo(self, request: Request):
            # `Request.body(request)`, not `request.body()`: Serve pickles this class by value,
            # and the string annotation only resolves if the body uses the (module) global.
            body = await Request.body(request)
            return Response(b'{"bytes": %d}' % len(body), media_type="application/json")

    serve.run(Echo.bind(), name="echo", route_prefix=route)


def start_mlflow_server(settings: Any, port: int, log_path: Path) -> subprocess.Popen:
    """`mlflow models serve --env-manager local` of champion version 1, in its own session."""
    bindir = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` from PATH
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    cmd = [
        str(Path(bindir) / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{MODEL_NAME}/1",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    logf = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen(
        cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def log_written(client: Any, url: str) -> float:
    """Rows the server's prediction-log writer has stored so far (from /metrics)."""
    text = client.get(f"{url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mlops_prediction_log_written_total")
    )


def wait_log_drained(client: Any, url: str, timeout_s: float = 60.0) -> None:
    """Wait until the prediction-log writer is idle, so no variant pays for the last one's rows."""
    deadline = time.monotonic() + timeout_s
    last = log_written(client, url)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = log_written(client, url)
        if now == last:
            return
        last = now


def wait_http(url: str, timeout_s: float = 180.0) -> None:
    """Poll until `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout_s:g}s")


def main() -> int:
    """Run every comparison and print medians and ratios."""
    if "--sweep" in sys.argv[1:]:
        # The concurrency sweep (1/8/32 clients, wrk-driven) lives in bench/sweep.py; this
        # flag runs it with the remaining arguments: `bench/serving.py --sweep --quick`.
        sweep = importlib.util.spec_from_file_location("bench_sweep", REPO / "bench" / "sweep.py")
        module = importlib.util.module_from_spec(sweep)  # type: ignore[arg-type]
        sweep.loader.exec_module(module)  # type: ignore[union-attr]
        sys.argv = [sys.argv[0], *(a for a in sys.argv[1:] if a != "--sweep")]
        return int(module.main())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument(
        "--requests", type=int, default=1200, help="single-row requests per variant (pooled)"
    )
    parser.add_argument("--rounds", type=int, default=12, help="interleaved blocks per variant")
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=15, help="batch requests a loop")
    parser.add_argument(
        "--repeats", type=int, default=4, help="batch loops per variant, order rotated"
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and repeats")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp project folder")
    parser.add_argument(
        "--sweep", action="store_true", help="run the 1/8/32-client sweep (bench/sweep.py)"
    )
    ns = parser.parse_args()
    if ns.quick:
        ns.requests, ns.rounds, ns.batches, ns.repeats = 200, 4, 5, 2
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-"))
    os.environ["MLOPS_HOME"] = str(tmp / ".mlops")
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB"):
        os.environ.pop(var, None)
    from mlops_assets.settings import load_settings

    settings = load_settings(write_project(tmp, free_port()))
    print(f"workdir {tmp}; training 2 versions on {ns.train_rows} rows ...", flush=True)
    trained = train_and_register(tmp, settings, ns.train_rows)
    model, frame = trained["model"], trained["frame"]
    one = records(frame, 200)
    batch = records(frame, ns.batch_rows)

    from serving import runner

    mlflow_port = free_port()
    mlflow_proc = start_mlflow_server(settings, mlflow_port, tmp / "mlflow-serve.log")
    results: dict[str, Any] = {"config": vars(ns) | {"json": str(ns.json)}}
    try:
        print("starting Ray Serve ...", flush=True)
        info = runner.start(settings, log_to_driver=False)
        deploy_constant()
        deploy_echo()
        url = info.url
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping")
        client = httpx.Client(timeout=120, headers={"content-type": "application/json"})
        assert client.post(f"{url}/echo/", content=b"{}").json() == {"bytes": 2}
        # Bodies are encoded once, up front, for every server alike: the client shares the two
        # cores, and its JSON encoder is not what is being measured.
        singles = [json.dumps({"features": r}).encode() for r in one]

        def predict(i: int) -> None:
            r = client.post(f"{url}/predict", content=singles[i % len(singles)])
            assert r.status_code == 200, r.text

        def const(i: int) -> None:
            r = client.post(f"{url}/const/predict", content=singles[i % len(singles)])
            assert r.status_code == 200, r.text

        import pandas as pd

        from mlops_assets.lifecycle.bundle import load_bundle

        frames = [pd.DataFrame([r]) for r in one]
        kw = {"skip_save_predictions": True, "skip_save_unprocessed_output": True}
        fast = load_bundle(tmp / "train-1" / "bundle")

        def ludwig(i: int) -> None:
            model.predict(frames[i % len(frames)], **kw)

        def torchscript(i: int) -> None:
            fast.predict([one[i % len(one)]])

        # Warm every path up first: Ludwig's first ~50 calls take about twice its steady state.
        for i in range(100):
            predict(i)
            const(i)
            ludwig(i)
            torchscript(i)

        # Many short interleaved blocks, samples pooled per variant: the machine's load drifts
        # on a scale of seconds, and this spreads the drift evenly over every variant, the
        # in-process ones included (the Serve app idles meanwhile).
        off: list[float] = []
        on: list[float] = []
        floor: list[float] = []
        in_ludwig: list[float] = []
        in_torchscript: list[float] = []
        block = max(20, ns.requests // ns.rounds)
        for rnd in range(ns.rounds):
            print(
                f"round {rnd + 1}/{ns.rounds}: mirroring off / 100 % / constant / in process",
                flush=True,
            )
            # Off and on swap places every round, and each block starts once the prediction log
            # has written the previous block's rows (and a shadow batch has had time to land).
            for percent, samples in [(0, off), (100, on)][:: 1 if rnd % 2 == 0 else -1]:
                runner.apply_overrides(shadow_traffic_percent=percent)
                wait_log_drained(client, url)
                samples += timed_loop(block, predict)
            wait_log_drained(client, url)
            floor += timed_loop(block, const)
            in_ludwig += timed_loop(block // 2, ludwig)
            in_torchscript += timed_loop(block, torchscript)
        runner.apply_overrides(shadow_traffic_percent=0)
        results["in_process_one_row_p50_ms"] = {
            "ludwig_predict": quantiles(in_ludwig)[0],
            "torchscript": quantiles(in_torchscript)[0],
        }
        off_p50, off_p99 = quantiles(off)
        on_p50, on_p99 = quantiles(on)
        results["predict_requests_per_variant"] = len(off)
        results["predict_mirror_off_ms"] = {"p50": off_p50, "p99": off_p99}
        results["predict_mirror_100_ms"] = {"p50": on_p50, "p99": on_p99}
        results["constant_serve_p50_ms"] = quantiles(floor)[0]

        print("batches: Ray Serve vs mlflow models serve", flush=True)
        columns = list(batch[0])
        # Each server in its own most compact documented format.
        split = json.dumps(
            {
                "dataframe_split": {
                    "columns": columns,
                    "data": [[r[c] for c in columns] for r in batch],
                }
            }
        ).encode()
        instances = json.dumps({"instances": batch}).encode()
        mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
        assert client.post(mlflow_url, content=split).status_code == 200
        assert len(
            client.post(f"{url}/batch_predict", content=instances).json()["predictions"]
        ) == len(batch)
        split_body = json.dumps({"dataframe_split": json.loads(split)["dataframe_split"]}).encode()
        batch_url = f"{url}/batch_predict"

        def rows_per_s(target: str, body: bytes) -> float:
            rows = ns.batch_rows * ns.batches
            logged = target == batch_url
            before = log_written(client, url) if logged else 0.0
            start = time.perf_counter()
            for _ in range(ns.batches):
                client.post(target, content=body).raise_for_status()
            if logged:
                # Our server logs every row (mlflow's logs none): the clock stops once the
                # log writer has stored this loop's rows, so no variant leaves work behind.
                deadline = time.monotonic() + 120
                while log_written(client, url) < before + rows and time.monotonic() < deadline:
                    time.sleep(0.05)
            return rows / (time.perf_counter() - start)

        serve_rps, serve_split_rps, mlflow_rps, echo_rps = [], [], [], []
        variants = [
            (serve_rps, batch_url, instances),
            (serve_split_rps, batch_url, split_body),
            (mlflow_rps, mlflow_url, split),
            (echo_rps, f"{url}/echo/", split_body),
        ]
        for repeat in range(ns.repeats):
            # Rotate the order, and let the prediction-log writer finish the last variant's
            # rows first: otherwise whoever runs next pays for them.
            shift = repeat % len(variants)
            for samples, target, body in variants[shift:] + variants[:shift]:
                wait_log_drained(client, url)
                samples.append(rows_per_s(target, body))
        results["batch_rows_per_s"] = {
            "ray_serve_instances": statistics.median(serve_rps),
            "ray_serve": statistics.median(serve_split_rps),
            "mlflow_models_serve": statistics.median(mlflow_rps),
            "serve_echo_floor": statistics.median(echo_rps),
        }
        results["batch_body_bytes"] = {"instances": len(instances), "dataframe_split": len(split)}

    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(mlflow_proc.pid, signal.SIGTERM)
        with contextlib.suppress(Exception):
            mlflow_proc.wait(timeout=30)
        runner.stop(settings)
        if not ns.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    off_ms, on_ms = results["predict_mirror_off_ms"], results["predict_mirror_100_ms"]
    rps = results["batch_rows_per_s"]
    inproc = results["in_process_one_row_p50_ms"]
    results["ratios"] = {
        "p50_mirror_100_over_off": on_ms["p50"] / off_ms["p50"],
        "p99_mirror_100_over_off": on_ms["p99"] / off_ms["p99"],
        "batch_rows_per_s_serve_over_mlflow": rps["ray_serve"] / rps["mlflow_models_serve"],
        "batch_rows_per_s_serve_instances_over_mlflow": rps["ray_serve_instances"]
        / rps["mlflow_models_serve"],
        "batch_rows_per_s_serve_over_echo_floor": rps["ray_serve"] / rps["serve_echo_floor"],
        "predict_http_p50_over_ludwig_in_process": off_ms["p50"] / inproc["ludwig_predict"],
        "predict_p50_over_constant_serve": off_ms["p50"] / results["constant_serve_p50_ms"],
    }
    print()
    print(f"/predict mirroring off   p50 {off_ms['p50']:7.2f} ms   p99 {off_ms['p99']:7.2f} ms")
    print(f"/predict mirroring 100%  p50 {on_ms['p50']:7.2f} ms   p99 {on_ms['p99']:7.2f} ms")
    print(f"constant Serve endpoint  p50 {results['constant_serve_p50_ms']:7.2f} ms")
    print(
        f"in process, one row      LudwigModel.predict p50 {inproc['ludwig_predict']:7.2f} ms; "
        f"TorchScript p50 {inproc['torchscript']:6.3f} ms"
    )
    print(
        f"/batch_predict {rps['ray_serve']:9.0f} rows/s (dataframe_split; "
        f"{rps['ray_serve_instances']:.0f} with instances); mlflow models serve "
        f"{rps['mlflow_models_serve']:9.0f} rows/s ({ns.batch_rows}-row batches); "
        f"Serve echo of the same body {rps['serve_echo_floor']:.0f} rows/s"
    )
    print("ratios (medians):")
    for key, value in results["ratios"].items():
        print(f"  {key:42s} {value:6.2f}")
    if ns.json:
        ns.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
