"""`mlops demo`: the whole lifecycle on sample data, end to end (the README's main command)."""

from __future__ import annotations

import sys
import time

import click

from mlops_assets.cli_text import EXIT_FAILED, print_cycle_report, status_table
from mlops_assets.lifecycle.context import Lifecycle
from mlops_assets.pipeline import run_cycle_for_file


def run_demo(
    lc: Lifecycle,
    samples: int,
    seed: int,
    n_requests: int,
    no_serve: bool,
    keep_serving: bool,
) -> None:
    """Generate data, bootstrap, judge a challenger, serve, label, expire the shadow, report."""
    from mlops_assets.datagen import generate_frame, write_dataset
    from mlops_assets.lifecycle.records import utcnow
    from mlops_assets.pipeline import materialize

    settings = lc.settings
    steps = 4 if no_serve else 7
    click.echo(f"[1/{steps}] generating sample data ({samples} rows each) in {settings.raw_dir}")
    baseline = write_dataset(settings.raw_dir, samples, seed=seed, drift=False)
    drift = write_dataset(settings.raw_dir, samples, seed=seed + 1, drift=True)
    click.echo(f"\n[2/{steps}] champion from {baseline.name}")
    report = run_cycle_for_file(settings, baseline, evaluate=True)
    print_cycle_report(report)
    if not report["success"]:
        sys.exit(EXIT_FAILED)
    click.echo(f"\n[3/{steps}] challenger from {drift.name}, judged against the champion")
    report = run_cycle_for_file(settings, drift, evaluate=True)
    print_cycle_report(report)
    if not report["success"]:
        sys.exit(EXIT_FAILED)
    tests = lc.store.open_shadow_tests(settings.model_name)
    if no_serve or not tests:
        if not no_serve:
            click.echo("\nno shadow test was started (see the decision above): skipping serving")
        _demo_end(lc, steps)
        return

    from mlops_assets import traffic
    from serving import runner

    test = tests[0]
    url = f"http://{settings.config.serving.host}:{settings.config.serving.port}"
    click.echo(f"\n[4/{steps}] serving champion + shadow v{test.version} at {url}")
    info = runner.start_detached(settings)
    click.echo(f"  {info}")
    try:
        live = generate_frame(max(n_requests, 200), seed=seed + 2, drift=True)
        target = settings.config.data.target_column
        click.echo(f"  sending {n_requests} live requests (mirrored to the shadow)")
        sent = traffic.send_traffic(url, live, target, requests=n_requests, seed=seed)
        click.echo(
            f"  {sent.ok}/{sent.sent} answered 200, p50 {sent.p50_ms:.1f} ms, "
            f"p99 {sent.p99_ms:.1f} ms, served by {sent.versions}"
        )
        click.echo(f"\n[5/{steps}] labels arrive for {len(sent.labelled)} requests")
        half = len(sent.labelled) // 2
        path = traffic.write_label_file(
            settings.labels_dir, sent.labelled[:half], f"demo-labels-{int(time.time())}.csv"
        )
        click.echo(f"  {half} in {path}")
        accepted = traffic.post_feedback(url, sent.labelled[half:])
        click.echo(f"  {accepted} through POST /feedback")
        wait = (test.expires_at - utcnow()).total_seconds()
        # The label file is ingested only once it has settled (data.settle_seconds).
        settle = settings.config.data.settle_seconds
        if wait > 0:
            click.echo(f"\n[6/{steps}] waiting {wait:.0f} s for the shadow test to expire")
            time.sleep(max(wait + 1, settle))
        else:
            click.echo(f"\n[6/{steps}] the shadow test has expired")
            if settle > 0:
                click.echo(f"  waiting {settle:g} s for the label file to settle")
                time.sleep(settle)
        time.sleep(settings.config.serving.prediction_log_flush_s * 2)
        report = materialize(settings, ["shadow_evaluation"], tags={"mlops/actor": "cli"})
        shadow = report["assets"].get("shadow_evaluation", {})
        click.echo(f"  decision: {shadow.get('decision', 'none')}")
        click.echo(str(shadow.get("decisions", "")))
        if not report["success"]:
            click.echo("\n".join(report.get("errors", [])), err=True)
        info_now = _served_versions(url)
        click.echo(f"  the server now answers with: {info_now}")
    finally:
        if not keep_serving:
            runner.stop(settings)
            click.echo("  server stopped (`mlops serve` starts it again)")
    _demo_end(lc, steps)


def _served_versions(url: str) -> str:
    import httpx

    try:
        info = httpx.get(f"{url}/model/info", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return "unknown"
    champion = (info.get("champion") or {}).get("version")
    shadows = [s.get("version") for s in info.get("shadows") or []]
    return f"champion v{champion}, shadows {shadows or 'none'}"


def _demo_end(lc: Lifecycle, steps: int) -> None:
    from mlops_assets.lifecycle import manager

    settings = lc.settings
    click.echo(f"\n[{steps}/{steps}] status\n")
    click.echo(status_table(manager.status(lc)))
    click.echo(
        "\nNext:\n"
        f"  MLflow UI:   .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} "
        "--port 5000\n"
        f"  Dagster UI:  DAGSTER_HOME={settings.home / 'dagster'} .venv/bin/dagster dev "
        "-w workspace.yaml -p 3000\n"
        "  Lineage:     .venv/bin/mlops lineage\n"
        "  Serve:       .venv/bin/mlops serve"
    )
