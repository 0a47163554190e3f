"""The monitoring tier: a real Prometheus scrapes a real serving app (champion and shadow).

Prometheus (Debian's package, the binary next to promtool) runs with the shipped alert rules
and a 1 s scrape of the Ray Serve app's /metrics and of Ray's metrics agent, while /predict,
/batch_predict and invalid requests arrive. Then every panel query of the shipped Grafana
dashboard and every alert rule is evaluated through Prometheus's HTTP API: no error anywhere,
data in every panel that this traffic feeds, and the serving-down expression fires once the
app is stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests_support import (
    dashboard_targets,
    detached_serving_app,
    fill_grafana_variables,
    free_port,
    serving_tests,
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "monitoring" / "grafana" / "dashboards" / "mlops-overview.json"
ALERTS = REPO / "monitoring" / "prometheus" / "alerts.yml"
# Panels fed by events this traffic does not cause; each must still evaluate without error.
NEEDS_OTHER_EVENTS = {
    "mlops_feature_drift": "drift is computed by the Dagster drift asset, not by serving",
    "mlops_lifecycle_decisions_total": "no decision is taken while this test runs",
    "mlops_model_metric": "live metrics need labels joined by the lifecycle",
}


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("no prometheus binary: run scripts/install_tools.sh (Debian's prometheus)")
    return found


def _query(prom: str, expr: str) -> list:
    answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """(Prometheus URL, serving URL, stop_serving) with 25 s of scraped traffic behind them."""
    support = serving_tests("serving_support")
    root = tmp_path_factory.mktemp("monitoring")
    with pytest.MonkeyPatch.context() as mp:
        ray_port = free_port()
        mp.setenv("MLOPS_RAY_METRICS_PORT", str(ray_port))
        with detached_serving_app(root, mp, shadow=True) as (settings, _registry, _info):
            from serving import runner

            serving = f"http://127.0.0.1:{settings.config.serving.port}"
            prom_port = free_port()
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "mlops-serving",
                        "static_configs": [{"targets": [serving.removeprefix("http://")]}],
                    },
                    {"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{ray_port}"]}]},
                    {
                        "job_name": "prometheus",
                        "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}],
                    },
                ],
            }
            (root / "prometheus.yml").write_text(yaml.safe_dump(config))
            proc = subprocess.Popen(
                [
                    _prometheus(),
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=(root / "prometheus.log").open("wb"),
                start_new_session=True,
            )
            prom = f"http://127.0.0.1:{prom_port}"
            try:
                assert support.wait_until(lambda: _ready(prom), timeout_s=60), (
                    root / "prometheus.log"
                ).read_text()[-2000:]
                _traffic(serving, seconds=25)
                yield prom, serving, lambda: runner.stop(settings)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)


def _ready(prom: str) -> bool:
    try:
        return httpx.get(f"{prom}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _traffic(serving: str, seconds: float) -> None:
    """Single rows, batches and invalid bodies from two threads for `seconds`."""
    support = serving_tests("serving_support")
    rows = [support.valid_features(i) for i in range(50)]
    stop = time.monotonic() + seconds
    failures: list[str] = []

    def client(offset: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = offset
            while time.monotonic() < stop:
                i += 2
                r = http.post(f"{serving}/predict", json={"features": rows[i % 50]})
                if r.status_code != 200:
                    failures.append(r.text)
                if i % 20 == 0:
                    http.post(f"{serving}/batch_predict", json={"instances": rows[:10]})
                    http.post(f"{serving}/predict", json={"features": {"age": "old"}})  # a 422
                    # Beyond the training range: answered, with an input warning.
                    http.post(f"{serving}/predict", json={"features": {**rows[0], "age": 1000}})
                time.sleep(0.01)

    threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]


def test_prometheus_scrapes_serving_and_ray(stack) -> None:
    prom, _, _ = stack
    up = {r["metric"]["job"]: r["value"][1] for r in _query(prom, "up")}
    assert up == {"mlops-serving": "1", "ray": "1", "prometheus": "1"}, up
    versions = {r["metric"]["model_version"] for r in _query(prom, "mlops_champion_info == 1")}
    assert versions == {"1"}


def test_every_dashboard_panel_evaluates_and_has_data(stack) -> None:
    prom, _, _ = stack
    empty = []
    for title, expr in dashboard_targets(DASHBOARD):
        result = _query(prom, fill_grafana_variables(expr))
        if not result and not any(metric in expr for metric in NEEDS_OTHER_EVENTS):
            empty.append(f"{title}: {expr}")
    assert not empty, "panels with no data:\n" + "\n".join(empty)
    mirrored = _query(prom, "sum(mlops_shadow_mirrored_total)")
    assert mirrored and float(mirrored[0]["value"][1]) > 0, "no mirrored request was counted"


def test_every_alert_rule_evaluates_without_error(stack) -> None:
    prom, _, _ = stack
    rules = [
        rule
        for group in httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
        for rule in group["rules"]
    ]
    shipped = yaml.safe_load(ALERTS.read_text())
    assert len(rules) == sum(len(g["rules"]) for g in shipped["groups"])
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["lastEvaluation"] > "2000", rule["name"]  # evaluated at least once
    active = {r["name"] for r in rules if r["state"] != "inactive"}
    assert not active & {"MlopsServingDown", "MlopsNoChampion", "MlopsBundleMismatch"}, active


def test_the_serving_down_expression_fires_when_the_app_stops(stack) -> None:
    # Last in the module: it stops the app. The alert itself waits 2 minutes (`for: 2m`);
    # its expression must turn true at the next scrape.
    prom, _, stop_serving = stack
    stop_serving()
    support = serving_tests("serving_support")
    expr = next(
        rule["expr"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "MlopsServingDown"
    )
    assert support.wait_until(lambda: bool(_query(prom, expr)), timeout_s=30)
    pending = httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert support.wait_until(
        lambda: any(
            a["labels"]["alertname"] == "MlopsServingDown"
            for a in httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        ),
        timeout_s=15,
    ), pending
