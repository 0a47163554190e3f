"""The containers tier: a real Docker engine, real images built from our own files.

`.ci/run` starts the engine (`scripts/start_docker.sh`) and exports DOCKER_HOST. Without an
engine these tests fail in CI and skip elsewhere, saying how to start one.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME_IMAGE = "mlops/serving-runtime:0.1.0"


def _no_engine(reason: str) -> None:
    hint = 'start one: eval "$(bash scripts/start_docker.sh | grep ^export)"'
    if os.environ.get("CI"):
        pytest.fail(f"the containers tier needs a Docker engine: {reason}; {hint}")
    pytest.skip(f"no Docker engine ({reason}); {hint}")


@pytest.fixture(scope="session")
def engine():
    """A Docker client for DOCKER_HOST that answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except DockerException as exc:
        _no_engine(str(exc))
    yield client
    client.close()


@pytest.fixture(scope="session")
def serving_runtime(engine) -> str:
    """The serving runtime image, built from docker/ by build.sh (the base is reused if built).

    MLOPS_TEST_REUSE_RUNTIME=1 reuses an existing runtime image (quicker local runs; CI builds).
    """
    from docker.errors import ImageNotFound

    if os.environ.get("MLOPS_TEST_REUSE_RUNTIME") == "1":
        try:
            engine.images.get(RUNTIME_IMAGE)
            return RUNTIME_IMAGE
        except ImageNotFound:
            pass
    started = time.monotonic()
    for target in ("base", "serving-runtime"):
        proc = subprocess.run(
            ["bash", str(REPO / "docker" / "build.sh"), target],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        output = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, f"build.sh {target} failed:\n{output}"
    engine.images.get(RUNTIME_IMAGE)
    print(f"serving runtime built in {time.monotonic() - started:.0f} s")
    return RUNTIME_IMAGE


@pytest.fixture
def run_container(engine) -> Iterator:
    """Factory: `docker run -d --network host` an image; every container is removed after."""
    started: list = []

    def run(image: str, *, user: str | None = None, command: list[str] | None = None, **env: str):
        container = engine.containers.run(
            image,
            command=command,
            user=user,
            detach=True,
            network_mode="host",
            environment=env,
            auto_remove=False,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)
