"""`mlops serve --detach` path: a background runner with a pid file, stopped by its pid only.

This starts a second, separate local Ray (the session app is another), so it is marked
`integration` as well: deselect it with `-m "not integration"` on a busy machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from serving_support import ADMIN_TOKEN, ADMIN_TOKEN_ENV, Server, free_port, write_project

from serving import runner

pytestmark = [pytest.mark.serving, pytest.mark.slow, pytest.mark.integration]


def test_detached_runner_serves_reloads_and_stops(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_assets.settings import load_settings

    # Same registry and store as the session app, its own home and port.
    config = write_project(tmp_path, free_port())
    raw = config.read_text().replace(
        str(tmp_path / "mlflow.db"), server.settings.tracking_uri.removeprefix("sqlite:///")
    )
    config.write_text(raw)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / ".mlops"))
    monkeypatch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
    settings = load_settings(config)
    assert settings.tracking_uri == server.settings.tracking_uri

    info = runner.start_detached(settings)
    try:
        assert info.detached and info.pid != os.getpid()
        assert info.slots == {"champion": "1", "shadow-1": "2"}
        state = json.loads((settings.home / runner.STATE_FILE).read_text())
        assert state["pid"] == info.pid
        assert (settings.home / runner.PID_FILE).read_text().split()[0] == str(info.pid)
        assert os.getpgid(info.pid) == info.pid  # its own session: stop can't reach others
        health = httpx.get(f"{info.url}/health", timeout=30)
        assert health.status_code == 200
        assert runner.reload(settings) == {"champion": "1", "shadow-1": "2"}  # over HTTP
        with pytest.raises(RuntimeError, match="already runs"):
            runner.start_detached(settings)
    finally:
        stopped = runner.stop(settings)
    assert stopped is True
    assert not runner._alive(info.pid, info.pid_start)
    assert not (settings.home / runner.STATE_FILE).exists()
    assert runner.stop(settings) is False
    # The session app, in this process, is untouched.
    assert server.client.get(f"{server.url}/health").status_code == 200
