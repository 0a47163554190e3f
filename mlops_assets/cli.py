"""`mlops`: the command line of the champion-challenger lifecycle.

Every command reads `config/config.yaml` (or `--config` / `MLOPS_CONFIG`) and keeps its state
under `MLOPS_HOME` (default `.mlops/` in the project). A configuration problem exits with
status 2 and one line naming the file and the key.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops_assets.cli_text import EXIT_FAILED, print_cycle_report, print_lineage, status_table
from mlops_assets.datagen import DRIFT_HELP
from mlops_assets.pipeline import run_cycle_for_file
from mlops_assets.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle

log = logging.getLogger("mlops")

EXIT_CONFIG = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in (
        "alembic",
        "urllib3",
        "httpx",
        "filelock",
        "mlflow",
        "ludwig",
        "dagster",
        "matplotlib",
        "asyncio",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class Ctx:
    """Lazily loaded settings and lifecycle context shared by the commands."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Load and validate the config once; a problem exits 2 with one clear line."""
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except ConfigError as err:
                click.echo(f"config error: {err}", err=True)
                sys.exit(EXIT_CONFIG)
            self._settings.ensure_dirs()
        return self._settings

    @property
    def lifecycle(self) -> Lifecycle:
        """The command's lifecycle context (opened once); applied moves reload a running server."""
        from mlops_assets.lifecycle.context import after_applied, shared_lifecycle

        return shared_lifecycle(self.settings, on_applied=after_applied(self.settings))


pass_ctx = click.make_pass_decorator(Ctx)


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _guard(fn: Callable[[], Any]) -> Any:
    """Run a command body; turn expected errors into one line and a non-zero exit."""
    try:
        return fn()
    except ConfigError as err:
        _fail(f"config error: {err}", EXIT_CONFIG)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        _fail(str(err))
    except Exception as err:
        from mlops_assets.lifecycle.registry import RegistryError

        if isinstance(err, RegistryError):
            _fail(str(err))
        if type(err).__name__ in (
            "RestException",
            "MlflowException",
            "StaleDecision",
            "LockBusy",
            "ServeLockBusy",
            "PackagingError",
            "TrackingUnreachable",
        ):
            _fail(str(err))
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config",
    envvar="MLOPS_CONFIG",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file [env MLOPS_CONFIG; default config/config.yaml].",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="mlops-champion-challenger")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """Champion-challenger model lifecycle on Dagster, Ludwig, MLflow and Ray Serve.

    New data becomes a trained challenger, an honest comparison with the champion, a shadow
    test and a safe promotion or rollback, every step recorded. Start with `mlops demo`.
    State lives under MLOPS_HOME (default .mlops/ in the project).
    """
    _setup_logging(verbose)
    ctx.obj = Ctx(config)


# ---------------------------------------------------------------------------------- data


@main.command("init")
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The CSV file to profile (its first 200,000 rows).",
)
@click.option("--target", required=True, help="The column to predict (a classification target).")
@click.option(
    "--output",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Project folder: config/ and data/ are written here.",
)
@click.option("--copy-data", is_flag=True, help="Also copy the CSV into data/raw/.")
@click.option("--force", is_flag=True, help="Overwrite an existing config pair.")
def init_cmd(data_path: str, target: str, output: str, copy_data: bool, force: bool) -> None:
    """Profile a CSV and write a commented config pair for it (bring your own data).

    Writes OUTPUT/config/config.yaml (the target, one validation rule per column) and
    OUTPUT/config/ludwig_config.yaml (inputs by inferred type), and the data folders. Empty,
    constant and identifier columns are left out, each with its reason as a comment. Then:
    copy the file into data/raw/ and run `mlops --config OUTPUT/config/config.yaml cycle`.
    """
    from mlops_assets.project_init import InitError, profile_table, write_project

    try:
        profile = profile_table(Path(data_path), target)
        written = write_project(profile, Path(output), force=force, copy_data=copy_data)
    except InitError as exc:
        _fail(str(exc))
        return
    click.echo(
        f"{profile.rows} rows; target {target!r} ({profile.target_type}, "
        f"{len(profile.classes)} classes); {len(profile.features)} input columns"
    )
    for name, why in profile.dropped.items():
        click.echo(f"  left out {name!r}: {why}")
    for path in written:
        click.echo(f"wrote {path}")
    config = Path(output) / "config" / "config.yaml"
    step = "" if copy_data else f"cp {data_path} {Path(output) / 'data' / 'raw'}/ && "
    click.echo(f"next: {step}mlops --config {config} cycle")


@main.command("generate-data", epilog="Drift (--generate-drift): " + DRIFT_HELP)
@click.option(
    "--samples",
    "-n",
    type=click.IntRange(min=10),
    default=5000,
    show_default=True,
    help="Rows to write.",
)
@click.option(
    "--generate-drift",
    is_flag=True,
    help="Write drift_full.csv (shifted features and concept) instead of baseline_full.csv.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to write into [default: data.raw_dir from config, i.e. data/raw].",
)
@click.option(
    "--seed",
    type=int,
    default=42,
    show_default=True,
    help="Random seed; the same seed gives the same bytes.",
)
@pass_ctx
def generate_data(
    ctx: Ctx, samples: int, generate_drift: bool, output_dir: str | None, seed: int
) -> None:
    """Write a churn-like sample table (8 numeric, 3 categorical features, binary target)."""
    from mlops_assets.datagen import write_dataset

    out = Path(output_dir) if output_dir else ctx.settings.raw_dir
    path = write_dataset(out, samples, seed=seed, drift=generate_drift)
    click.echo(f"wrote {samples} rows to {path}")
    if generate_drift:
        click.echo(DRIFT_HELP)


# ------------------------------------------------------------------------------ training


@main.command("train-challenger")
@click.option(
    "--data-path",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV to train on; copied into data/raw/ if it is elsewhere.",
)
@click.option(
    "--auto-evaluate",
    is_flag=True,
    help="Also evaluate the challenger against the champion and apply the decision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@pass_ctx
def train_challenger(ctx: Ctx, data_path: str, auto_evaluate: bool, as_json: bool) -> None:
    """Run the asset graph for one file: validate, train and register a challenger.

    An identical file (same sha256) with the same Ludwig config reuses the version already
    registered. A file that fails validation is moved to data/quarantine/ with a report and
    the command exits 1.
    """
    report = _guard(
        lambda: run_cycle_for_file(ctx.settings, Path(data_path), evaluate=auto_evaluate)
    )
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        print_cycle_report(report)
    if not report["success"]:
        sys.exit(EXIT_FAILED)


@main.command("cycle")
@click.option(
    "--data-path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Process this file only [default: every new file in data/raw/].",
)
@click.option("--dry-run", is_flag=True, help="Print what would happen and change nothing.")
@pass_ctx
def cycle(ctx: Ctx, data_path: str | None, dry_run: bool) -> None:
    """Run one lifecycle cycle by hand, as the schedule does.

    In order: reconcile half-done registry moves; ingest label files; judge expired shadow
    tests (PROMOTE, EXTEND_SHADOW or REJECT); train and judge a challenger for every new file
    in data/raw/ (identical data is never retrained); check the champion's probation.
    """
    from mlops_assets.lifecycle import manager
    from mlops_assets.lifecycle.probation import check_probation_now, run_probation
    from mlops_assets.lifecycle.shadow import expired_shadows
    from mlops_assets.lifecycle.states import Actor
    from mlops_assets.lifecycle.training import find_existing_version
    from mlops_assets.pipeline import materialize
    from mlops_assets.validation import file_sha256, list_raw_files

    settings, lc = ctx.settings, ctx.lifecycle
    files = [Path(data_path)] if data_path else list_raw_files(settings.raw_dir)
    pending = lc.store.pending_decisions(settings.model_name)
    todo = []
    for path in files:
        done = find_existing_version(
            lc.client,
            settings.model_name,
            file_sha256(path),
            settings.ludwig_config_hash(),
            settings.config.ludwig.random_seed,
        )
        if done is None or data_path:
            todo.append(path)
    expired = expired_shadows(lc)
    labels = [p for p in sorted(settings.labels_dir.glob("*.csv")) if not p.name.startswith(".")]
    if dry_run:
        click.echo(f"would reconcile {len(pending)} pending decision(s)")
        for rec in pending:
            click.echo(f"  {rec.id} {rec.decision} v{rec.challenger_version}")
        click.echo(f"would ingest {len(labels)} label file(s)")
        for test in expired:
            click.echo(f"would judge the expired shadow test of v{test.version}")
        if not todo:
            click.echo("no new data: nothing to train")
        for path in todo:
            click.echo(f"would train and judge a challenger on {path}")
        probation = check_probation_now(lc)
        click.echo(
            "would roll back: " + "; ".join(probation.reasons)
            if probation.rollback
            else "probation: no rollback needed"
        )
        click.echo("(dry run: nothing was changed)")
        return
    repaired = _guard(lambda: manager.reconcile(lc))
    click.echo(f"reconciled {len(repaired)} pending decision(s)")
    failed = False
    if expired or labels:
        report = _guard(lambda: materialize(settings, ["shadow_evaluation"]))
        shadow = report["assets"].get("shadow_evaluation", {})
        click.echo(f"shadow tests judged: {shadow.get('decision', 'none')}")
        click.echo(str(shadow.get("decisions", "")))
        failed |= not report["success"]
    if not todo:
        click.echo("no new data: nothing to train")
    for path in todo:
        report = _guard(lambda p=path: run_cycle_for_file(settings, p, evaluate=True))
        print_cycle_report(report)
        failed |= not report["success"]
    rollback_record = _guard(lambda: run_probation(lc, actor=Actor.CLI))
    if rollback_record is not None:
        click.echo("ROLLBACK: " + " ".join(rollback_record.reasons))
    sys.exit(EXIT_FAILED if failed else 0)


# -------------------------------------------------------------------------------- status


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--decisions",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many recent decisions to show.",
)
@pass_ctx
def status_cmd(ctx: Ctx, as_json: bool, decisions: int) -> None:
    """Champion, shadows, open shadow tests, the last decisions with their reasons, and drift."""
    from mlops_assets.lifecycle import manager

    status = _guard(lambda: manager.status(ctx.lifecycle, decisions=decisions))
    if as_json:
        click.echo(json.dumps(status, indent=2, default=str))
    else:
        click.echo(status_table(status))


@main.command("lineage")
@click.argument("version", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def lineage_cmd(ctx: Ctx, version: str | None, as_json: bool) -> None:
    """Which data files (sha256), config, MLflow run and Dagster run produced a version.

    VERSION defaults to the current champion.
    """
    from mlops_assets.lifecycle import manager

    info = _guard(lambda: manager.lineage(ctx.lifecycle, version))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    print_lineage(info)


@main.command("package")
@click.argument("version")
@click.option("--force", is_flag=True, help="Build again even if an image of this bundle exists.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def package_cmd(ctx: Ctx, version: str, force: bool, as_json: bool) -> None:
    """Build the per-model image <repository>/<model>:vVERSION from the registered bundle.

    The bundle is checked against the version's bundle.sha256 tag, then built on
    deployment.runtime_image with no network; the image's reference and id become the tags
    image.ref and image.digest. Needs a Docker engine (DOCKER_HOST; scripts/start_docker.sh)
    and the runtime image (bash docker/build.sh serving-runtime). Run it: docker run
    --network host IMAGE (port 8100, MLOPS_SERVE_PORT).
    """
    from mlops_assets.packaging import package_version

    settings = ctx.settings
    built = _guard(lambda: package_version(settings, ctx.lifecycle.client, version, force=force))
    if as_json:
        click.echo(json.dumps(built.as_dict(), indent=2))
        return
    verb = "reused" if built.reused else "built"
    click.echo(
        f"{verb} {built.ref}  {built.digest}  {built.size_bytes / 1e6:.0f} MB  "
        f"in {built.build_seconds:.1f} s"
    )


# ------------------------------------------------------------------------- manual moves


def _manual(ctx: Ctx, decision_name: str, version: str | None, reason: str | None) -> None:
    from mlops_assets.lifecycle import manager
    from mlops_assets.lifecycle.states import Decision

    record = _guard(
        lambda: manager.manual_decision(
            ctx.lifecycle, Decision(decision_name), version, reason=reason
        )
    )
    click.echo(f"{record.decision} {record.status}; decision {record.id}")
    for r in record.reasons:
        click.echo(f"  - {r}")


@main.command("promote")
@click.argument("version")
@click.option("--reason", help="Why, for the decision record.")
@pass_ctx
def promote(ctx: Ctx, version: str, reason: str | None) -> None:
    """Make VERSION the champion now (the old champion is archived)."""
    _manual(ctx, "PROMOTE", version, reason)


@main.command("reject")
@click.argument("version")
@click.option("--reason", help="Why, for the decision record.")
@pass_ctx
def reject(ctx: Ctx, version: str, reason: str | None) -> None:
    """Reject VERSION (ends its shadow test if it has one)."""
    _manual(ctx, "REJECT", version, reason)


@main.command("rollback")
@click.option("--reason", help="Why, for the decision record.")
@pass_ctx
def rollback(ctx: Ctx, reason: str | None) -> None:
    """Restore the previous champion (alias previous-champion)."""
    _manual(ctx, "ROLLBACK", None, reason)


# ---------------------------------------------------------------------------- serving


@main.command("serve")
@click.option("--stop", is_flag=True, help="Stop the server this project started.")
@click.option(
    "--reload",
    "reload_",
    is_flag=True,
    help="Make a running server reload its models from the registry aliases.",
)
@click.option("--detach", is_flag=True, help="Start in the background and return.")
@pass_ctx
def serve(ctx: Ctx, stop: bool, reload_: bool, detach: bool) -> None:
    """Start the Ray Serve app (champion plus shadows) on serving.host:serving.port."""
    from serving import runner

    settings = ctx.settings
    if stop:
        stopped = runner.stop(settings)
        click.echo("stopped" if stopped else "no server of ours was running")
        return
    if reload_:
        runner.reload(settings)
        click.echo("reloaded")
        return
    url = f"http://{settings.config.serving.host}:{settings.config.serving.port}"
    if detach:
        info = _guard(lambda: runner.start_detached(settings))
        click.echo(f"serving on {url} in the background ({info}); `mlops serve --stop` stops it")
        return
    click.echo(f"starting the server on {url} (Ctrl-C stops it)")
    _guard(lambda: runner.start(settings, blocking=True))


# ------------------------------------------------------------------------------- check


@main.command("check")
@click.option(
    "--repair",
    is_flag=True,
    help="Also break stale transition locks (their holder died or their lease ran out) and "
    "reconcile half-done registry moves.",
)
@pass_ctx
def check(ctx: Ctx, repair: bool) -> None:
    """Check dependencies, config, stores, services and ports; print the fix for each problem."""
    from mlops_assets import doctor

    settings = ctx.settings
    results = doctor.run_checks(settings, lambda: ctx.lifecycle)
    bad = 0
    for item in results:
        mark = "ok  " if item.ok else ("warn" if item.warning else "FAIL")
        click.echo(f"[{mark}] {item.name}: {item.detail}")
        if not item.ok and item.fix:
            click.echo(f"       fix: {item.fix}")
        bad += 0 if (item.ok or item.warning) else 1
    if repair:
        from mlops_assets.lifecycle import manager

        store = ctx.lifecycle.store
        for stale in _guard(store.stale_locks):
            broken = _guard(lambda name=stale.lock.name: store.break_stale_lock(name))
            if broken is not None:
                click.echo(
                    f"broke the stale transition lock {broken.name!r} held by {broken.holder} "
                    f"since {broken.acquired_at.isoformat()} ({stale.reason})"
                )
        repaired = _guard(lambda: manager.reconcile(ctx.lifecycle))
        click.echo(f"repaired {len(repaired)} pending decision(s)")
    sys.exit(EXIT_FAILED if bad else 0)


# -------------------------------------------------------------------------------- demo


@main.command("demo")
@click.option(
    "--samples",
    type=click.IntRange(min=200),
    default=4000,
    show_default=True,
    help="Rows per generated file.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Data seed.")
@click.option(
    "--shadow-duration",
    default="40s",
    show_default=True,
    help="Length of the demo's shadow test (overrides shadow_mode_duration for this run).",
)
@click.option(
    "--requests",
    "n_requests",
    type=click.IntRange(min=10),
    default=400,
    show_default=True,
    help="Live requests the built-in traffic generator sends while the shadow test runs.",
)
@click.option(
    "--no-serve", is_flag=True, help="Skip serving, traffic and the shadow test (offline only)."
)
@click.option("--keep-serving", is_flag=True, help="Leave the server running at the end.")
@pass_ctx
def demo(
    ctx: Ctx,
    samples: int,
    seed: int,
    shadow_duration: str,
    n_requests: int,
    no_serve: bool,
    keep_serving: bool,
) -> None:
    """The whole lifecycle on sample data, unattended, in a few minutes.

    \b
    1. baseline data -> a champion (BOOTSTRAP)
    2. drifted data -> a challenger, judged against the champion on the same holdout
    3. a shadow test: the Ray Serve app serves the champion and mirrors live traffic
       from the built-in traffic generator to the challenger
    4. labels for that traffic arrive (a label file and POST /feedback)
    5. the shadow test expires and is judged on the labelled requests: PROMOTE (the server
       hot-swaps) or a reasoned REJECT / EXTEND_SHADOW
    6. the status with the decision history

    Safe to run again: identical data is not retrained and decisions are not re-applied.
    """
    from mlops_assets.settings import parse_duration

    try:
        parse_duration(shadow_duration)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--shadow-duration") from None
    # Through the environment, so the Dagster runs and the server see the same policy.
    os.environ["MLOPS__CHAMPION_CHALLENGER__SHADOW_MODE_DURATION"] = shadow_duration
    from mlops_assets.demo import run_demo

    lc = ctx.lifecycle
    _guard(lambda: run_demo(lc, samples, seed, n_requests, no_serve, keep_serving))


if __name__ == "__main__":  # pragma: no cover
    main()
