"""Concurrency sweep: requests/s, rows/s, p50, p99 and errors at 1, 8 and 32 clients, side by side.

Servers, all serving the same registered champion (version 1 of a throw-away registry):
- `ray-off`: the Ray Serve app (`mlops serve`), mirroring off;
- `ray-on`: the same app, every request mirrored to the shadow (version 2);
- `bundle`: docker/runtime/bundle_server.py (FastAPI + uvicorn, the same TorchScript bundle);
- `mlflow`: `mlflow models serve --env-manager local` of the version's pyfunc flavour.

Bodies: one row (`/predict`, or a one-row `dataframe_split` for mlflow) and 100 rows
(`/batch_predict`, `dataframe_split` for mlflow).

Fairness on 2 cores: every server is driven by the same load generator, `wrk` (C, one
thread, keep-alive connections), so the client's own CPU is small and the same for all. It
cycles through 200 pre-encoded bodies of real rows. Rounds interleave the servers in a rotated
order; each Ray run starts once the prediction log has written the last run's rows. Figures
are medians over the rounds.

Run: `.venv/bin/python bench/sweep.py` (about 8 minutes; `--quick` about 3). Needs `wrk`
(`apt-get install -y wrk`; installed here when missing). Loopback only; it stops exactly what it
started.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench)  # type: ignore[union-attr]

CLIENTS = (1, 8, 32)
BODY_ROWS = (1, 100)
WRK_SCRIPT = """
local bodies = {}
local i = 0
init = function(args)
  local f = io.open(args[1])
  for line in f:lines() do bodies[#bodies + 1] = line end
  f:close()
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""


def ensure_wrk() -> str:
    """The path of `wrk`, installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """requests/s, p50, p99 (ms) and error count from `wrk --latency` output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": float(errors)}


def run_wrk(wrk: str, url: str, bodies: Path, clients: int, seconds: float, script: Path) -> Any:
    """One sustained run of `clients` connections for `seconds`."""
    cmd = [wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    cmd += ["--timeout", "10s", url, "--", str(bodies)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


def write_bodies(root: Path, rows: list[dict[str, Any]]) -> dict[tuple[str, int], Path]:
    """Body files (one JSON body a line) for our API and for mlflow's, 1 and 100 rows."""
    columns = list(rows[0])
    out: dict[tuple[str, int], Path] = {}
    for n in BODY_ROWS:
        groups = [rows[i : i + n] for i in range(0, len(rows) - n + 1, max(1, n // 10))][:200]
        ours = [{"features": g[0]} if n == 1 else {"instances": g} for g in groups]
        theirs = [
            {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in g]}}
            for g in groups
        ]
        for kind, bodies in (("ours", ours), ("mlflow", theirs)):
            path = root / f"bodies-{kind}-{n}.txt"
            path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
            out[(kind, n)] = path
    return out


def start_bundle_server(bundle: Path, port: int, log_path: Path) -> subprocess.Popen:
    """docker/runtime/bundle_server.py on `bundle`, in its own session."""
    env = dict(
        os.environ,
        MLOPS_BUNDLE_DIR=str(bundle),
        MLOPS_SERVE_PORT=str(port),
        MLOPS_MODEL_VERSION="1",
        PYTHONPATH=str(REPO),
    )
    logf = open(log_path, "wb")  # noqa: SIM115 - kept open for the child's lifetime
    return subprocess.Popen(
        [sys.executable, str(REPO / "docker" / "runtime" / "bundle_server.py")],
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def main() -> int:
    """Run the sweep and print the table and the goal ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="one round of 4 s runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    ns = parser.parse_args()
    if ns.quick:
        ns.seconds, ns.rounds = 4.0, 1
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    wrk = ensure_wrk()

    tmp = Path(tempfile.mkdtemp(prefix="mlops-sweep-"))
    os.environ["MLOPS_HOME"] = str(tmp / ".mlops")
    for var in ("MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB"):
        os.environ.pop(var, None)
    from mlops_assets.settings import load_settings
    from serving import runner

    settings = load_settings(bench.write_project(tmp, bench.free_port()))
    print(f"workdir {tmp}; training 2 versions on {ns.train_rows} rows ...", flush=True)
    trained = bench.train_and_register(tmp, settings, ns.train_rows)
    rows = bench.records(trained["frame"], 400)
    bodies = write_bodies(tmp, rows)
    script = tmp / "bodies.lua"
    script.write_text(WRK_SCRIPT)

    procs: list[subprocess.Popen] = []
    cells: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    try:
        mlflow_port, bundle_port = bench.free_port(), bench.free_port()
        procs.append(bench.start_mlflow_server(settings, mlflow_port, tmp / "mlflow.log"))
        procs.append(start_bundle_server(tmp / "train-1" / "bundle", bundle_port, tmp / "b.log"))
        print("starting Ray Serve ...", flush=True)
        info = runner.start(settings, log_to_driver=False)
        bench.wait_http(f"http://127.0.0.1:{mlflow_port}/ping")
        bench.wait_http(f"http://127.0.0.1:{bundle_port}/health")
        client = httpx.Client(timeout=60)
        mlflow = f"http://127.0.0.1:{mlflow_port}/invocations"
        bundle = f"http://127.0.0.1:{bundle_port}"
        urls = {
            ("ray-off", 1): f"{info.url}/predict",
            ("ray-off", 100): f"{info.url}/batch_predict",
            ("ray-on", 1): f"{info.url}/predict",
            ("ray-on", 100): f"{info.url}/batch_predict",
            ("bundle", 1): f"{bundle}/predict",
            ("bundle", 100): f"{bundle}/batch_predict",
            ("mlflow", 1): mlflow,
            ("mlflow", 100): mlflow,
        }
        servers = ["ray-off", "ray-on", "bundle", "mlflow"]
        # Warm every server and body up (TorchScript and Python caches, connection pools).
        for (server, n), url in urls.items():
            run_wrk(wrk, url, bodies[("mlflow" if server == "mlflow" else "ours", n)], 4, 2, script)
        for rnd in range(ns.rounds):
            for clients in CLIENTS:
                for n in BODY_ROWS:
                    shift = (rnd + clients + n) % len(servers)
                    order = servers[shift:] + servers[:shift]
                    for server in order:
                        if server.startswith("ray"):
                            percent = 100 if server == "ray-on" else 0
                            runner.apply_overrides(shadow_traffic_percent=percent)
                            bench.wait_log_drained(client, info.url)
                        kind = "mlflow" if server == "mlflow" else "ours"
                        got = run_wrk(
                            wrk, urls[(server, n)], bodies[(kind, n)], clients, ns.seconds, script
                        )
                        cells.setdefault((server, clients, n), []).append(got)
                        print(
                            f"round {rnd + 1}/{ns.rounds} {server:8s} c={clients:<3d} rows={n:<4d}"
                            f" {got['rps']:8.1f} req/s  p50 {got['p50_ms']:7.2f} ms"
                            f"  p99 {got['p99_ms']:7.2f} ms  errors {got['errors']:.0f}",
                            flush=True,
                        )
        runner.apply_overrides(shadow_traffic_percent=0)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.wait(timeout=30)
        runner.stop(settings)
        shutil.rmtree(tmp, ignore_errors=True)

    table: dict[str, dict[str, float]] = {}
    for (server, clients, n), runs in sorted(cells.items()):
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med["rows_per_s"] = med["rps"] * n
        med["errors"] = sum(r["errors"] for r in runs)
        table[f"{server}/c{clients}/rows{n}"] = med

    def cell(server: str, clients: int, n: int) -> dict[str, float]:
        return table[f"{server}/c{clients}/rows{n}"]

    ratios = {
        "rps_c8_ray_on_over_bundle": cell("ray-on", 8, 1)["rps"] / cell("bundle", 8, 1)["rps"],
        "rps_c8_ray_off_over_bundle": cell("ray-off", 8, 1)["rps"] / cell("bundle", 8, 1)["rps"],
        "p99_ms_c8_ray_on": cell("ray-on", 8, 1)["p99_ms"],
        "rps_c32_over_c8_ray_on": cell("ray-on", 32, 1)["rps"] / cell("ray-on", 8, 1)["rps"],
        "rows_c8_100rows_ray_on_over_mlflow": cell("ray-on", 8, 100)["rows_per_s"]
        / cell("mlflow", 8, 100)["rows_per_s"],
        "p50_c8_ray_on_over_off": cell("ray-on", 8, 1)["p50_ms"] / cell("ray-off", 8, 1)["p50_ms"],
        "p99_c8_ray_on_over_off": cell("ray-on", 8, 1)["p99_ms"] / cell("ray-off", 8, 1)["p99_ms"],
    }
    print()
    print(
        f"{'server/clients/rows':24s} {'req/s':>9s} {'rows/s':>10s} {'p50 ms':>8s} "
        f"{'p99 ms':>8s} {'errors':>6s}"
    )
    for key, med in table.items():
        print(
            f"{key:24s} {med['rps']:9.1f} {med['rows_per_s']:10.0f} {med['p50_ms']:8.2f}"
            f" {med['p99_ms']:8.2f} {med['errors']:6.0f}"
        )
    print("ratios (medians over rounds):")
    for key, value in ratios.items():
        print(f"  {key:40s} {value:8.2f}")
    if ns.json:
        ns.json.write_text(
            json.dumps(
                {"config": vars(ns) | {"json": str(ns.json)}, "table": table, "ratios": ratios},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
