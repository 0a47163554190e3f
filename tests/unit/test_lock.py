"""requirements.lock is the one list of versions: the venv, the wheelhouse and the images."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The serving image runs the CPU build of torch; the venv needs the CUDA build for Ludwig's
# torchvision and torchaudio (STACK.md), and TorchScript bundles run the same in both.
ALLOWED = {"torch": ("2.14.1", "2.13.0+cpu")}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line)
        assert match, f"{path.name}: {raw!r} is not an exact pin"
        pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_the_lock_pins_every_package_exactly() -> None:
    lock = _pins(REPO / "requirements.lock")
    assert len(lock) > 100
    for name in ("ludwig", "dagster", "mlflow", "ray", "torch"):
        assert name in lock


def test_the_serving_image_installs_the_locks_versions() -> None:
    lock = _pins(REPO / "requirements.lock")
    serving = _pins(REPO / "docker" / "runtime" / "requirements-serving.txt")
    for name, version in serving.items():
        assert name in lock, f"{name} is in the serving image but not in the lock"
        if name in ALLOWED:
            assert (lock[name], version) == ALLOWED[name], name
        else:
            assert version == lock[name], f"{name}: serving pins {version}, the lock {lock[name]}"


def test_the_lock_agrees_with_pyproject_pins() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = _pins(REPO / "requirements.lock")
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    for dep in deps:
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^;,\s]+)", dep)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            assert lock.get(name) == match.group(2), f"pyproject pins {dep}, lock {lock.get(name)}"
