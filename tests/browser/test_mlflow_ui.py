"""The MLflow UI of a real `mlflow server` after a real cycle: the champion alias is where the
lifecycle put it, on the version the lifecycle store names."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import browser_fixture, page_fixture  # noqa: F401 (fixtures)
from tests_support import free_port, lifecycle_of, start_mlflow_server

from mlops_assets.datagen import write_dataset
from mlops_assets.lifecycle.states import Alias
from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import load_settings
from tests.conftest import build_project, isolate_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """An MLflow server whose registry a bootstrap cycle filled: its URL, model and champion."""
    root = tmp_path_factory.mktemp("mlflow-ui")
    port = free_port()
    server = start_mlflow_server(root / "server", port, root / "mlflow.log")
    url = f"http://127.0.0.1:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            project = build_project(root / "proj", {"mlflow": {"tracking_uri": url}})
            isolate_env(mp, project)
            mp.setenv("MLFLOW_TRACKING_URI", url)
            settings = load_settings(project / "config" / "config.yaml")
            settings.ensure_dirs()
            csv = write_dataset(settings.raw_dir, 300, seed=4)
            report = run_cycle_for_file(settings, csv, evaluate=True)
            assert report["success"], report.get("errors")
            champion = lifecycle_of(settings).alias_version(Alias.CHAMPION)
            yield {"url": url, "model": settings.model_name, "champion": champion}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_registry_page_shows_the_champion_alias_on_its_version(
    registry: dict, page, tmp_path: Path
) -> None:
    assert registry["champion"] == "1"
    page.goto(f"{registry['url']}/#/models/{registry['model']}/versions/{registry['champion']}")
    page.get_by_text(f"Version {registry['champion']}").first.wait_for(timeout=60_000)
    page.get_by_text(Alias.CHAMPION.value, exact=False).first.wait_for(timeout=30_000)
    shot = tmp_path / "mlflow-champion.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = page.inner_text("body")
    # The alias chip beside "Aliases:", and the lifecycle's tags on the version.
    assert re.search(r"Aliases\s*:\s*@\s*champion", body), body[:2000]
    assert "lifecycle.state" in body and "data.key" in body, body[:2000]

    # The model's page lists the version with its alias.
    page.goto(f"{registry['url']}/#/models/{registry['model']}")
    row = page.get_by_role("row").filter(has_text=f"Version {registry['champion']}")
    row.first.wait_for(timeout=60_000)
    assert "champion" in row.first.inner_text()
    assert not [u for u in page.blocked if "127.0.0.1" in u]
