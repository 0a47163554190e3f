"""The import rule (pyproject `[tool.importlinter]`): it holds, and it catches a violation.

`make test` runs `lint-imports` on the tree; these tests run it on a copy, once clean and once
with a planted import, so a rule that can no longer fail is noticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mlops_assets", "serving", "resources")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(tree: Path) -> tuple[int, str]:
    """Run lint-imports on a tree; return its exit code and its output without colours."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the three packages and the config."""
    return _copy_tree(tmp_path_factory.mktemp("arch"))


def test_the_tree_keeps_the_rule(tree: Path):
    code, out = _lint(tree)
    assert code == 0, out
    assert "Contracts: 2 kept, 0 broken" in out


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "mlops_assets/lifecycle/_planted.py",
            "import dagster\n",
            "The lifecycle core imports neither Dagster nor Ray",
        ),
        (
            "mlops_assets/lifecycle/_planted.py",
            "def f():\n    from ray import serve\n\n    return serve\n",
            "The lifecycle core imports neither Dagster nor Ray",
        ),
        # Indirect: the core reaching Dagster through the Dagster layer counts too.
        (
            "mlops_assets/lifecycle/_planted.py",
            "from mlops_assets import pipeline\n",
            "The lifecycle core imports neither Dagster nor Ray",
        ),
        ("serving/_planted.py", "import dagster\n", "Serving imports no Dagster"),
    ],
)
def test_a_planted_violation_fails(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy_tree(tmp_path)
    (tree / module).write_text(f'"""Planted."""\n\n{line}')
    code, out = _lint(tree)
    assert code != 0, out
    assert f"{contract} BROKEN" in out


def test_no_two_test_files_share_a_name() -> None:
    """Test folders have no __init__.py, so pytest imports each file by its basename alone."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted(tests.rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(tests)} and {path.relative_to(tests)}")
        seen.setdefault(path.name, path)
    assert not clashes, "rename one of each: " + "; ".join(clashes)
