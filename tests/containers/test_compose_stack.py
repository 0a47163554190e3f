"""The compose stack, up for real (issue 13 §4), driven as an operator (docker/README.md "4.").

Images come from our own Dockerfiles (`bash docker/build.sh stack`). The stack comes up with a
generated `.env` (a random password, a free POSTGRES_PORT so the host's PostgreSQL on 5432 is
left alone) under a unique project name: PostgreSQL, MLflow on PostgreSQL, serving, Prometheus,
and the Dagster webserver and daemon. MLflow stores an experiment in PostgreSQL, serving
answers, Prometheus has scraped serving; after `down` and `up` the experiment is still there
(volumes); `down -v` always runs at the end.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
from tests_support import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "docker-compose.yml"
SERVICES = ["postgres", "mlflow", "serving", "prometheus", "dagster-webserver", "dagster-daemon"]
STACK_IMAGES = ["mlops/postgres:15", "mlops/prometheus:2.42", "mlops/runtime:0.1.0"]
# The ports compose fixes (DESIGN.md); the stack test needs them free on loopback.
FIXED_PORTS = {"mlflow": 5000, "dagster": 3000, "serving": 8000, "ray metrics": 8090}
FIXED_PORTS["prometheus"] = 9090
MLFLOW = "http://127.0.0.1:5000"


def _compose_binary() -> str:
    binary = Path(sysconfig.get_paths()["purelib"]) / "compose" / "docker-compose"
    found = str(binary) if binary.exists() else shutil.which("docker-compose")
    if not found:
        pytest.fail("no compose binary: run bash scripts/install_tools.sh")
    return found


@pytest.fixture(scope="session")
def stack_images(engine) -> list[str]:
    """Every image docker-compose.yml runs (but Grafana), built by `build.sh stack`."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "docker" / "build.sh"), "stack"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert proc.returncode == 0, f"build.sh stack failed:\n{(proc.stdout + proc.stderr)[-4000:]}"
    for image in STACK_IMAGES:
        engine.images.get(image)
    print(f"stack images ready in {time.monotonic() - started:.0f} s")
    return STACK_IMAGES


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """`docker compose -f docker/docker-compose.yml --env-file ENV -p PROJECT ...`."""

    def __init__(self, env_file: Path, project: str, password: str, pg_port: int) -> None:
        self.base = [_compose_binary(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
        self.base += ["-p", project]
        self.password = password
        self.pg_port = pg_port

    def run(self, *args: str, timeout: float = 420) -> str:
        """Run one compose command; fail with its output (and the services' logs) if it fails."""
        proc = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            logs = subprocess.run(
                [*self.base, "logs", "--no-color", "--tail", "40"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            ).stdout
            pytest.fail(f"compose {' '.join(args)}: {proc.stderr[-3000:]}\n{logs[-6000:]}")
        return proc.stdout

    def up(self) -> float:
        """`up -d --wait` the tested services; return the seconds until all were healthy."""
        started = time.monotonic()
        self.run("up", "-d", "--wait", "--wait-timeout", "360", *SERVICES, timeout=480)
        return time.monotonic() - started

    def sql(self, database: str, query: str, *params: str) -> list[tuple]:
        """Run one query on the stack's PostgreSQL."""
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.pg_port,
            user="mlops",
            password=self.password,
            dbname=database,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall()
        finally:
            conn.close()


@pytest.fixture
def stack(tmp_path: Path, stack_images: list[str]) -> Iterator[Stack]:
    """A generated .env and a unique project; `down -v` always runs after the test."""
    busy = {name: port for name, port in FIXED_PORTS.items() if _port_busy(port)}
    assert not busy, f"ports the compose file fixes are taken on 127.0.0.1: {busy}"
    password = secrets.token_urlsafe(16)
    pg_port = free_port()
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POSTGRES_USER=mlops\n"
        f"POSTGRES_PASSWORD={password}\n"
        f"POSTGRES_PORT={pg_port}\n"
        f"GRAFANA_ADMIN_PASSWORD={secrets.token_urlsafe(12)}\n"
        "MLOPS_RUNTIME_IMAGE=mlops/runtime:0.1.0\n"
    )
    project = f"mlops-test-{uuid.uuid4().hex[:8]}"
    compose = Stack(env_file, project, password, pg_port)
    try:
        yield compose
    finally:
        compose.run("down", "-v", "--remove-orphans", "--timeout", "30", timeout=180)


def _prometheus_up(job: str, deadline_s: float = 90) -> str:
    """Poll Prometheus' `up{job=...}` until it is 1; return the last value seen."""
    value = "no series"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        reply = httpx.get(
            "http://127.0.0.1:9090/api/v1/query", params={"query": f'up{{job="{job}"}}'}
        ).json()
        assert reply["status"] == "success", reply
        if reply["data"]["result"]:
            value = reply["data"]["result"][0]["value"][1]
            if value == "1":
                return value
        time.sleep(3)
    return value


# On a fresh machine the setup builds every image of the stack, the 8 GB runtime image among
# them (torch's wheel brings CUDA libraries): 15-20 minutes here, more than the suite's 900 s.
@pytest.mark.timeout(3600)
def test_the_stack_comes_up_keeps_its_data_and_goes_down(stack: Stack) -> None:
    to_healthy = stack.up()
    print(f"stack healthy in {to_healthy:.0f} s")
    assert set(stack.run("ps", "--services", "--status", "running").split()) == set(SERVICES)

    # MLflow answers and keeps its store in PostgreSQL.
    name = f"compose-{uuid.uuid4().hex[:6]}"
    created = httpx.post(f"{MLFLOW}/api/2.0/mlflow/experiments/create", json={"name": name})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    run = httpx.post(
        f"{MLFLOW}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}
    ).json()["run"]
    httpx.post(
        f"{MLFLOW}/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run["info"]["run_id"], "key": "auc", "value": 0.9, "timestamp": 0},
    ).raise_for_status()
    assert stack.sql("mlflow", "SELECT name FROM experiments WHERE name = %s", name) == [(name,)]
    assert {"mlflow", "dagster", "lifecycle"} <= {
        row[0] for row in stack.sql("postgres", "SELECT datname FROM pg_database")
    }

    # Serving answers: /health is 503 without a champion, but it is the app's JSON answer.
    health = httpx.get("http://127.0.0.1:8000/health", timeout=10)
    assert health.status_code in (200, 503), health.text
    assert isinstance(health.json(), dict)
    assert httpx.get("http://127.0.0.1:8000/metrics", timeout=10).status_code == 200
    assert httpx.get("http://127.0.0.1:3000/server_info", timeout=10).status_code == 200

    # Prometheus has scraped serving (and Ray's metrics agent in the serving container).
    assert _prometheus_up("mlops-serving") == "1"
    assert _prometheus_up("ray") == "1"

    # down keeps the volumes: the experiment and its run survive a restart of the stack.
    stack.run("down", "--timeout", "30", timeout=180)
    assert not _port_busy(5000)
    again = stack.up()
    print(f"stack healthy again in {again:.0f} s")
    found = httpx.get(
        f"{MLFLOW}/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
    )
    assert found.status_code == 200, found.text
    assert found.json()["experiment"]["experiment_id"] == experiment_id
    kept = httpx.get(f"{MLFLOW}/api/2.0/mlflow/runs/get", params={"run_id": run["info"]["run_id"]})
    assert kept.json()["run"]["data"]["metrics"][0]["value"] == 0.9
