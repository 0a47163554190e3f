"""The `mlops` console script, run for real in a subprocess (no training here)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest
import yaml

from mlops_assets.cli import main as cli_group
from mlops_assets.datagen import DRIFT, DRIFT_HELP

# The console script of the venv that runs the tests (`.venv/bin/mlops`).
MLOPS = Path(sys.executable).with_name("mlops")
DESIGN_COMMANDS = {
    "generate-data",
    "train-challenger",
    "cycle",
    "status",
    "serve",
    "promote",
    "rollback",
    "reject",
    "lineage",
    "check",
    "demo",
}
TIMEOUT_S = 180

MakeProject = Callable[..., Path]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_CONFIG"}
    env.update(RAY_USAGE_STATS_ENABLED="0", DAGSTER_DISABLE_TELEMETRY="1", COLUMNS="100")
    env.update(extra)
    return env


def mlops(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point and capture its output."""
    assert MLOPS.exists(), f"{MLOPS} is missing: install the project (make setup)"
    return subprocess.run(
        [str(MLOPS), *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _squash(text: str) -> str:
    """Remove all whitespace, so text wrapped by click compares with the original."""
    return "".join(text.split())


def _assert_one_config_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert proc.stdout == ""


# ----------------------------------------------------------------- broken configuration


def _unknown_nested_key(root: Path) -> tuple[Path, str]:
    cfg = root / "config" / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["champion_challenger"]["champion_treshold"] = 0.1
    cfg.write_text(yaml.safe_dump(data))
    return cfg, "champion_challenger.champion_treshold"


def _wrong_type(root: Path) -> tuple[Path, str]:
    cfg = root / "config" / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["serving"]["port"] = "eighty"
    cfg.write_text(yaml.safe_dump(data))
    return cfg, "serving.port"


def _invalid_yaml(root: Path) -> tuple[Path, str]:
    cfg = root / "config" / "config.yaml"
    cfg.write_text("data:\n  split: {train: 0.7\n  raw_dir: x\n")
    return cfg, "line 3"


def _bad_ludwig_feature(root: Path) -> tuple[Path, str]:
    lud = root / "config" / "ludwig_config.yaml"
    data = yaml.safe_load(lud.read_text())
    data["output_features"][0]["type"] = "boolean"
    lud.write_text(yaml.safe_dump(data))
    return lud, "output_features.0.type"


def _missing_ludwig(root: Path) -> tuple[Path, str]:
    (root / "config" / "ludwig_config.yaml").unlink()
    return root / "config" / "ludwig_config.yaml", "not found"


@pytest.mark.parametrize(
    "breakage",
    [_unknown_nested_key, _wrong_type, _invalid_yaml, _bad_ludwig_feature, _missing_ludwig],
    ids=lambda f: f.__name__.strip("_"),
)
def test_broken_config_exits_2_with_one_line(
    make_project: MakeProject, breakage: Callable[[Path], tuple[Path, str]]
) -> None:
    root = make_project()
    bad_file, key = breakage(root)
    proc = mlops("--config", str(root / "config" / "config.yaml"), "check", cwd=root)
    _assert_one_config_error_line(proc, str(bad_file), key)


def test_broken_config_from_env_and_status_command(make_project: MakeProject) -> None:
    root = make_project()
    cfg, key = _unknown_nested_key(root)
    proc = mlops("status", "--json", cwd=root.parent, MLOPS_CONFIG=str(cfg))
    _assert_one_config_error_line(proc, str(cfg), key)


def test_broken_config_found_from_the_working_directory(make_project: MakeProject) -> None:
    root = make_project()
    _, key = _wrong_type(root)
    proc = mlops("lineage", cwd=root)
    _assert_one_config_error_line(proc, "config/config.yaml", key)


def test_missing_config_file_exits_2(make_project: MakeProject, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = mlops("status", cwd=empty)
    _assert_one_config_error_line(proc, "config/config.yaml", "not found")


def test_infinite_duration_is_a_config_error_not_a_traceback(make_project: MakeProject) -> None:
    root = make_project()
    cfg = root / "config" / "config.yaml"
    data = yaml.safe_load(cfg.read_text())
    data["champion_challenger"]["shadow_mode_duration"] = float("inf")
    cfg.write_text(yaml.safe_dump(data))
    proc = mlops("--config", str(cfg), "check", cwd=root)
    _assert_one_config_error_line(proc, str(cfg), "champion_challenger.shadow_mode_duration")


# ---------------------------------------------------------------------------------- help


SUBCOMMANDS: dict[str, click.Command] = dict(sorted(cli_group.commands.items()))


@pytest.fixture(scope="module")
def help_texts() -> dict[str, subprocess.CompletedProcess[str]]:
    """`mlops --help` and `mlops <cmd> --help` for every command, run side by side."""
    argv = {"": ["--help"], **{name: [name, "--help"] for name in SUBCOMMANDS}}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(mlops, *args) for name, args in argv.items()}
        return {name: fut.result() for name, fut in futures.items()}


def test_every_design_command_exists() -> None:
    assert set(SUBCOMMANDS) >= DESIGN_COMMANDS


def test_group_help(help_texts: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = help_texts[""]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: mlops")
    for name in SUBCOMMANDS:
        assert f"  {name} " in proc.stdout, name
    for option in ("--config", "MLOPS_CONFIG", "--verbose", "--version", "MLOPS_HOME"):
        assert option in proc.stdout, option


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_subcommand_help_explains_every_option(
    help_texts: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    proc = help_texts[name]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    assert text.startswith(f"Usage: mlops {name}")
    command = SUBCOMMANDS[name]
    assert command.help, f"{name} has no docstring"
    assert _squash(command.help.split("\n\n")[0]) in _squash(text)
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.human_readable_name in text, param.name
            # The docstring says what the argument means.
            assert param.human_readable_name in (command.help or ""), param.name
            continue
        assert isinstance(param, click.Option)
        assert param.help, f"{name} {param.opts} has no help text"
        for opt in param.opts:
            assert opt in text, (name, opt)
        assert _squash(param.help) in _squash(text), (name, param.opts)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("generate-data", ["--samples", "--generate-drift", "--output-dir", "--seed"]),
        ("train-challenger", ["--data-path", "--auto-evaluate", "--json"]),
        ("cycle", ["--data-path", "--dry-run"]),
        ("status", ["--json", "--decisions"]),
        ("serve", ["--stop", "--reload", "--detach"]),
        ("check", ["--repair"]),
        ("demo", ["--samples", "--seed"]),
        ("promote", ["VERSION", "--reason"]),
        ("reject", ["VERSION", "--reason"]),
        ("rollback", ["--reason"]),
        ("lineage", ["VERSION", "--json"]),
    ],
)
def test_documented_options_are_in_the_help(
    help_texts: dict[str, subprocess.CompletedProcess[str]], name: str, options: list[str]
) -> None:
    text = help_texts[name].stdout
    for option in options:
        assert option in text, (name, option)


def test_generate_drift_help_states_the_drift_amounts() -> None:
    proc = mlops("generate-data", "--generate-drift", "--help")
    assert proc.returncode == 0, proc.stderr
    text = _squash(proc.stdout)
    assert _squash(DRIFT_HELP) in text
    increase = f"{DRIFT['monthly_charges_factor'] - 1:.0%}"
    assert f"monthly_chargesare{increase}higher" in text
    assert f"{DRIFT['days_since_last_login_factor']:g}xlonger" in text
    assert "70%/18%/12%" in text
    assert "concept" in text.lower()


def test_version() -> None:
    proc = mlops("--version")
    assert proc.returncode == 0, proc.stderr
    assert "0.1.0" in proc.stdout


def test_bad_option_value_is_a_usage_error() -> None:
    proc = mlops("generate-data", "--samples", "3", "--output-dir", "/nonexistent/never")
    assert proc.returncode == 2
    assert "--samples" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------ generate-data


def test_generate_data_is_byte_for_byte_repeatable(clean_env: None, tmp_path: Path) -> None:
    # No config in the working directory: --output-dir needs none.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    outputs = []
    for run in ("a", "b", "a"):
        out = tmp_path / run
        proc = mlops(
            "generate-data", "--samples", "100", "--output-dir", str(out), "--seed", "3", cwd=cwd
        )
        assert proc.returncode == 0, proc.stderr
        assert "wrote 100 rows" in proc.stdout
        outputs.append((out / "baseline_full.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert len(outputs[0].decode().strip().splitlines()) == 101  # header + rows
    assert list(cwd.iterdir()) == []


def test_generate_data_seed_and_drift_change_the_data(clean_env: None, tmp_path: Path) -> None:
    base = mlops("generate-data", "-n", "100", "--output-dir", str(tmp_path / "s3"), "--seed", "3")
    other = mlops("generate-data", "-n", "100", "--output-dir", str(tmp_path / "s4"), "--seed", "4")
    drift = mlops(
        "generate-data",
        "--samples",
        "100",
        "--generate-drift",
        "--output-dir",
        str(tmp_path / "d"),
        "--seed",
        "3",
    )
    for proc in (base, other, drift):
        assert proc.returncode == 0, proc.stderr
    seed3 = (tmp_path / "s3" / "baseline_full.csv").read_bytes()
    assert seed3 != (tmp_path / "s4" / "baseline_full.csv").read_bytes()
    assert not (tmp_path / "d" / "baseline_full.csv").exists()
    drifted = (tmp_path / "d" / "drift_full.csv").read_bytes()
    assert drifted != seed3
    assert drifted.splitlines()[0] == seed3.splitlines()[0]  # same columns
    assert _squash(DRIFT_HELP) in _squash(drift.stdout)


def test_generate_data_defaults_to_the_configured_raw_dir(make_project: MakeProject) -> None:
    root = make_project(config={"data": {"raw_dir": "landing"}})
    proc = mlops("generate-data", "--samples", "50", "--seed", "1", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert (root / "landing" / "baseline_full.csv").exists()


# -------------------------------------------------------------------------------- check


def test_check_reports_config_mlflow_and_lifecycle_store(make_project: MakeProject) -> None:
    root = make_project()
    proc = mlops("--config", str(root / "config" / "config.yaml"), "check", cwd=root)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()

    def line_for(name: str) -> str:
        found = [line for line in lines if f"] {name}:" in line]
        assert found, f"no line for {name!r} in:\n{proc.stdout}"
        return found[0]

    assert line_for("config").startswith("[ok  ]")
    assert str(root / "config" / "config.yaml") in line_for("config")
    assert line_for("MLflow").startswith("[ok  ]"), line_for("MLflow")
    assert "sqlite:///" in line_for("MLflow")
    line_for("lifecycle store")
    line_for("MLOPS_HOME")
    # Every failure says how to fix it.
    for i, line in enumerate(lines):
        if line.startswith("[FAIL]"):
            assert lines[i + 1].strip().startswith("fix: "), line
    assert proc.returncode == (1 if any(ln.startswith("[FAIL]") for ln in lines) else 0)


def test_check_repair_breaks_a_stale_lock_and_says_whose(make_project: MakeProject) -> None:
    """A holder killed with SIGKILL leaves its lock; `check` names it, `--repair` breaks it."""
    from mlops_assets.lifecycle.store import LifecycleStore
    from mlops_assets.settings import load_settings

    root = make_project()
    config = root / "config" / "config.yaml"
    settings = load_settings(config)
    settings.ensure_dirs()
    store = LifecycleStore(settings.lifecycle_db_url)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from mlops_assets.lifecycle.store import LifecycleStore\n"
            "s = LifecycleStore(sys.argv[1])\n"
            "s.acquire_lock(sys.argv[2], owner='cycle-of-a-dead-process')\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
            settings.lifecycle_db_url,
            f"transition:{settings.model_name}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert store.lock_holder(f"transition:{settings.model_name}") is not None

    checked = mlops("--config", str(config), "check", cwd=root)
    assert "Traceback" not in checked.stderr + checked.stdout
    warned = [ln for ln in checked.stdout.splitlines() if "] transition lock:" in ln]
    assert warned and "cycle-of-a-dead-process" in warned[0], checked.stdout
    assert str(holder.pid) in warned[0]

    repaired = mlops("--config", str(config), "check", "--repair", cwd=root)
    assert "Traceback" not in repaired.stderr + repaired.stdout
    assert "broke the stale transition lock" in repaired.stdout, repaired.stdout
    assert "cycle-of-a-dead-process" in repaired.stdout and str(holder.pid) in repaired.stdout
    assert store.lock_holder(f"transition:{settings.model_name}") is None
    store.close()
