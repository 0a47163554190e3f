"""The Dagster UI of the code location, served by a real `dagster-webserver` on loopback.

The catalog lists every asset (and is screenshotted), the automation page shows the sensors and
the schedules with the project's own cron, and the jobs page the four jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_support import browser_fixture, page_fixture  # noqa: F401 (fixtures)
from tests_support import free_port, project_env

from tests.conftest import build_project

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# A cron no default config uses, so the automation page shows this project's schedule.
CRON = "17 3 * * *"
CYCLE = (
    "raw_data",
    "validated_features",
    "training_dataset",
    "challenger_model",
    "evaluation_report",
)


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a `dagster-webserver` over a tmp project (stopped by its process group)."""
    root = build_project(
        tmp_path_factory.mktemp("dagster-ui"), {"automation": {"schedule_cron": CRON}}
    )
    port = free_port()
    log = root / "webserver.log"
    cmd = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [*cmd, "-p", str(port)],
            cwd=REPO,
            env=project_env(root),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _up(url):
            assert proc.poll() is None, f"dagster-webserver exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no webserver:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _asset_names() -> list[str]:
    from mlops_assets.definitions import defs

    return sorted(a.key.to_user_string() for a in defs.assets)


def _open(page, url: str) -> None:
    """Go to `url` and dismiss the newsletter dialog the UI shows a first-time visitor."""
    page.goto(url)
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5_000)
        skip.click()
    except Exception:  # the dialog is not shown once dismissed in this browser context
        pass


def test_the_catalog_lists_every_asset(webserver: str, page, tmp_path: Path) -> None:
    _open(page, f"{webserver}/assets")
    names = _asset_names()
    assert set(CYCLE) | {"champion_deployment"} <= set(names)
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    assert page.title() == "Assets"
    shot = tmp_path / "catalog.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_the_automation_page_shows_sensors_and_schedules(webserver: str, page) -> None:
    _open(page, f"{webserver}/automation")
    for name in (
        "new_raw_file_sensor",
        "run_failure_alert",
        "lifecycle_cycle_schedule",
        "lifecycle_maintenance_schedule",
    ):
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    # The schedules' cron is the project's config (automation.schedule_cron), humanised.
    body = page.inner_text("body")
    assert body.count("03:17") >= 2, body


def test_the_jobs_page_lists_the_jobs(webserver: str, page) -> None:
    _open(page, f"{webserver}/jobs")
    for job in ("challenger_cycle", "shadow_cycle", "lifecycle_maintenance", "probation_job"):
        page.get_by_text(job, exact=True).first.wait_for(timeout=30_000)
    assert not [u for u in page.blocked if "127.0.0.1" in u]
