"""Shared fixtures: an isolated project (config, data folders, MLOPS_HOME) per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Small and fast: the ML tests train for 2 epochs on a few hundred rows.
TEST_OVERRIDES: dict[str, Any] = {
    # Tests drop files and ingest them at once; the settle wait has its own tests.
    "data": {"min_rows": 50, "settle_seconds": 0},
    "champion_challenger": {"min_holdout_rows": 30},
    # Decision tests pit one file against another; windows over several files have their own
    # tests (tests/unit/test_window.py, tests/assets/test_training_window.py) and the demo runs
    # the shipped default.
    "training": {"window": "latest"},
}
TEST_TRAINER = {"epochs": 2, "batch_size": 64, "eval_batch_size": 512, "learning_rate": 0.005}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        # An empty dict replaces (clears) the section instead of merging into it.
        if value and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No URI or config from the developer's shell leaks into a test."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLOPS_LIFECYCLE_DB",
        "MLOPS_CONFIG",
        "MLOPS_HOME",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(name, raising=False)


def build_project(
    root: Path, config: dict[str, Any] | None = None, ludwig: dict[str, Any] | None = None
) -> Path:
    """Write config/ (test-sized) and data/ folders under `root`; return `root`."""
    (root / "config").mkdir(parents=True)
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = _merge(_merge(base, TEST_OVERRIDES), config or {})
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lud = yaml.safe_load((REPO / "config" / "ludwig_config.yaml").read_text())
    lud["trainer"] = dict(TEST_TRAINER)
    if ludwig is not None:
        lud = _merge(lud, ludwig)
        for key, value in ludwig.items():
            if value is None:
                lud.pop(key, None)
    (root / "config" / "ludwig_config.yaml").write_text(yaml.safe_dump(lud, sort_keys=False))
    for sub in ("data/raw", "data/quarantine", "data/labels", ".mlops/dagster"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / ".mlops" / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return root


def isolate_env(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point MLOPS_HOME and DAGSTER_HOME into `root` and drop URIs from the shell."""
    for name in ("MLFLOW_TRACKING_URI", "MLOPS_LIFECYCLE_DB", "MLOPS_CONFIG"):
        mp.delenv(name, raising=False)
    mp.setenv("MLOPS_HOME", str(root / ".mlops"))
    mp.setenv("DAGSTER_HOME", str(root / ".mlops" / "dagster"))


@pytest.fixture
def make_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Callable:
    """Factory: an isolated project dir with config/ and data/ and its own MLOPS_HOME."""

    def make(
        config: dict[str, Any] | None = None,
        ludwig: dict[str, Any] | None = None,
        name: str = "proj",
    ) -> Path:
        root = build_project(tmp_path / name, config, ludwig)
        isolate_env(monkeypatch, root)
        return root

    return make


@contextmanager
def bootstrapped_project(root: Path, config: dict[str, Any] | None = None) -> Iterator[tuple]:
    """A project at `root` whose champion is bootstrapped from 300 baseline rows."""
    from mlops_assets.datagen import write_dataset
    from mlops_assets.pipeline import run_cycle_for_file
    from mlops_assets.settings import load_settings

    with pytest.MonkeyPatch.context() as mp:
        build_project(root, config)
        isolate_env(mp, root)
        settings = load_settings(root / "config" / "config.yaml")
        settings.ensure_dirs()
        baseline = write_dataset(settings.raw_dir, 300, seed=5)
        report = run_cycle_for_file(settings, baseline, evaluate=True)
        assert report["success"], report.get("errors")
        yield settings, baseline


@pytest.fixture(scope="module")
def champion_project(tmp_path_factory: pytest.TempPathFactory):
    """A project with a champion bootstrapped from 300 baseline rows (shared by a module)."""
    with bootstrapped_project(tmp_path_factory.mktemp("champion")) as project:
        yield project


@pytest.fixture
def sample_csv() -> Callable[..., Path]:
    """Factory: write a generated churn-like CSV (baseline or drift) to a folder."""
    from mlops_assets.datagen import write_dataset

    def write(
        folder: Path,
        samples: int = 400,
        seed: int = 7,
        drift: bool = False,
        name: str | None = None,
    ) -> Path:
        path = write_dataset(folder, samples, seed=seed, drift=drift)
        if name:
            target = folder / name
            shutil.move(path, target)
            return target
        return path

    return write


TIERS = (
    "unit",
    "assets",
    "serving",
    "integration",
    "faults",
    "containers",
    "monitoring",
    "browser",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its tier, the directory it sits in (`pytest -m faults` selects one)."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        below = parts[parts.index("tests") + 1 :] if "tests" in parts else ()
        if below and below[0] in TIERS:
            item.add_marker(getattr(pytest.mark, below[0]))


_TIER_SECONDS: dict[str, float] = {}
_TIER_TESTS: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add each test's setup, call and teardown time to its tier's total."""
    parts = report.nodeid.split("/")
    tier = parts[1] if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS else "other"
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    if report.when == "call":
        _TIER_TESTS[tier] = _TIER_TESTS.get(tier, 0) + 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what each tier cost (the CI log then says it on every run)."""
    if not _TIER_SECONDS:
        return
    terminalreporter.write_sep("=", "time per tier (setup + call + teardown)")
    for tier, seconds in sorted(_TIER_SECONDS.items(), key=lambda kv: -kv[1]):
        tests = _TIER_TESTS.get(tier, 0)
        terminalreporter.write_line(f"{tier:<12} {tests:>4} tests {seconds:7.0f} s")
