"""A real `dagster-daemon` and `dagster-webserver` running the automation on PostgreSQL storage.

- the new-file sensor, evaluated by the daemon, starts a cycle that bootstraps a champion;
- the schedule (every minute in this test) runs the maintenance job, and leaves the new file
  to the sensor (automation.schedule_grace_s), so the file runs exactly once;
- the webserver's GraphQL API launches a partitioned cycle the way the UI does;
- a deliberately broken input fails a run and the run-failure sensor raises an alert.

Dagster's run, event-log and schedule storage live in a fresh PostgreSQL database
(`dagster-postgres`) when `DAGSTER_TEST_PG_URL` is set, else in SQLite under the project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from tests_support import free_port, project_env

from mlops_assets.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG = os.environ.get("DAGSTER_TEST_PG_URL")


@pytest.fixture
def pg_database():
    """A throwaway PostgreSQL database for Dagster's storage, dropped afterwards."""
    if not PG:
        yield None
        return
    import psycopg2

    base, _, _ = PG.rpartition("/")
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{base}/postgres".replace("postgresql+psycopg2://", "postgresql://"))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = log.open("w")
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _wait(predicate, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def test_daemon_sensors_schedule_and_graphql(make_project, sample_csv, pg_database) -> None:
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    root = make_project(
        config={"automation": {"schedule_cron": "* * * * *", "sensor_interval_s": 5}}
    )
    home = root / ".mlops" / "dagster"
    config_lines = ["telemetry:", "  enabled: false"]
    if pg_database:
        config_lines += ["storage:", "  postgres:", f"    postgres_url: {pg_database}"]
    (home / "dagster.yaml").write_text("\n".join(config_lines) + "\n")
    env = project_env(root, DAGSTER_HOME=str(home))
    csv = sample_csv(root / "data" / "raw", samples=300, seed=21)
    settings = load_settings(root / "config" / "config.yaml")
    # Create Dagster's tables once, before two processes race to create them.
    instance = DagsterInstance.from_config(str(home))
    instance.get_runs(limit=1)
    instance.all_instigator_state()
    instance.get_dynamic_partitions("raw_files")
    if pg_database:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    port = free_port()
    logs = [root / "daemon.log", root / "webserver.log"]
    daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, logs[0])
    web = _start(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env,
        logs[1],
    )
    try:

        def runs_of(job: str, statuses=None):
            return instance.get_runs(RunsFilter(job_name=job, statuses=statuses or []))

        # 1. The daemon evaluates the new-file sensor, which launches the cycle for the file.
        done = _wait(
            lambda: runs_of(
                "challenger_cycle", [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
            ),
            420,
            "the sensor-launched cycle to finish",
            logs,
        )
        run = done[0]
        assert run.status == DagsterRunStatus.SUCCESS, instance.all_logs(run.run_id)[-5:]
        assert run.tags["dagster/partition"] == csv.name
        assert run.tags.get("dagster/sensor_name") == "new_raw_file_sensor", run.tags
        client = MlflowClient(settings.tracking_uri)
        champ = client.get_model_version_by_alias(settings.model_name, "champion")
        assert champ.tags["dagster.run_id"] == run.run_id

        # 2. The schedule (every minute here) runs the maintenance job.
        maint = _wait(
            lambda: runs_of("lifecycle_maintenance", [DagsterRunStatus.SUCCESS]),
            180,
            "a scheduled maintenance run",
            logs,
        )
        assert maint[0].tags.get("dagster/schedule_name") == "lifecycle_maintenance_schedule"
        # The cycle schedule has ticked too, and did not run the sensor's file a second time.
        cycles = runs_of("challenger_cycle")
        assert [r.tags["dagster/partition"] for r in cycles] == [csv.name]

        # 3. The webserver's GraphQL API launches a partitioned cycle, as the UI does.
        _wait(lambda: _graphql_ready(port), 120, "the webserver", logs)
        second = sample_csv(
            root / "data" / "raw", samples=300, seed=22, drift=True, name="from_ui.csv"
        )
        instance.add_dynamic_partitions("raw_files", [second.name])
        run_id = _launch_via_graphql(port, "challenger_cycle", second.name)
        finished = _wait(
            lambda: (r := instance.get_run_by_id(run_id)) and r.is_finished and r,
            420,
            "the GraphQL-launched run",
            logs,
        )
        assert finished.status == DagsterRunStatus.SUCCESS, instance.all_logs(run_id)[-5:]

        # 4. A broken input fails its run and the failure sensor raises an alert.
        broken = root / "data" / "raw" / "broken.csv"
        broken.write_bytes(b"\xff\xfe not a csv\n")
        alerts_log = root / ".mlops" / "alerts.jsonl"
        _wait(
            lambda: alerts_log.exists() and "broken.csv" in alerts_log.read_text(),
            300,
            "the run-failure alert",
            logs,
        )
        alert = [json.loads(line) for line in alerts_log.read_text().splitlines()][-1]
        assert alert["kind"] == "run_failure"
        assert alert["details"]["partition"] == "broken.csv"
        assert any(s["step"] == "validated_features" for s in alert["details"]["failed_steps"])
        assert (root / "data" / "quarantine" / "broken.csv").exists()
    finally:
        _stop(web)
        _stop(daemon)


def _graphql_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _launch_via_graphql(port: int, job: str, partition: str) -> str:
    """Launch a job run for one partition through the GraphQL API (what the UI calls)."""
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    return client.submit_job_execution(
        job,
        repository_location_name="mlops_assets",
        repository_name="__repository__",
        tags={"dagster/partition": partition, "mlops/actor": "ui"},
    )
