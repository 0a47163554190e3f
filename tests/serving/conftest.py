"""Serving fixtures: ONE real Ray Serve app per session over a tmp MLflow registry.

The app starts once per session (Ray on 2 shared cores is expensive) on a free loopback port,
in this process, and is stopped with `runner.stop`, which shuts down only what it started.
Tests that change the served versions, faults or mirror rate restore them before returning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from serving_support import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_ENV,
    Server,
    build_registry,
    free_port,
    write_project,
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Registry with versions 1 (champion), 2 (challenger), 3; the app serving them."""
    root = tmp_path_factory.mktemp("serving")
    port = free_port()
    env = {
        "MLOPS_HOME": str(root / ".mlops"),
        ADMIN_TOKEN_ENV: ADMIN_TOKEN,
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    saved = {k: os.environ.get(k) for k in (*env, "MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB")}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLOPS_LIFECYCLE_DB", None)
    from mlops_assets.settings import load_settings
    from serving import runner

    settings = load_settings(write_project(root, port))
    registry = build_registry(root, settings)
    info = runner.start(settings, log_to_driver=False)
    client = httpx.Client(timeout=60)
    try:
        yield Server(info.url, settings, registry, info, client)
    finally:
        client.close()
        runner.stop(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
