"""What the `mlops` commands print: a cycle's run report and the lifecycle status table."""

from __future__ import annotations

from typing import Any

import click

EXIT_FAILED = 1


def print_cycle_report(report: dict[str, Any]) -> None:
    """Print what one asset-graph run did: validation, training, checks, the decision."""
    assets = report["assets"]
    vf = assets.get("validated_features", {})
    if vf and not vf.get("passed", True):
        click.echo(f"\n{report['file']} FAILED validation and was quarantined:")
        click.echo(f"  moved to {vf.get('quarantined_to')}")
        click.echo(str(vf.get("problems", "")))
        return
    cm = assets.get("challenger_model")
    if cm:
        reused = " (reused: identical data and config)" if cm.get("reused_existing_version") else ""
        click.echo(
            f"\nchallenger: {cm['model_name']} v{cm['model_version']}{reused}  "
            f"run {cm['mlflow_run_id']}"
        )
        metrics = {
            k.removeprefix("holdout_"): v
            for k, v in cm.items()
            if k.startswith("holdout_") and k != "holdout_rows"
        }
        click.echo("  holdout: " + "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    td = assets.get("training_dataset")
    if td:
        click.echo(
            f"  trained on {td.get('dagster/row_count')} rows of {td['files']} file(s) "
            f"(window {td['window']}); holdout from {td['holdout_source']}"
        )
    failed = [name for name, c in report["checks"].items() if not c["passed"]]
    if failed:
        click.echo(f"  failed checks: {', '.join(failed)}")
    cd = assets.get("champion_deployment")
    ev = assets.get("evaluation_report")
    if cd:
        when = "decided earlier, not re-applied" if cd.get("already_decided") else cd["status"]
        click.echo(
            f"\ndecision: {cd['decision']} ({when})  champion is now v{cd['champion_version']}"
        )
        click.echo(str(cd.get("reasons", "")))
    elif ev:
        click.echo(f"\nproposed decision: {ev['decision']} (not applied)")
        click.echo(str(ev.get("reasons", "")))
    if report.get("errors"):
        click.echo("\nerrors:\n  " + "\n  ".join(report["errors"]), err=True)
    click.echo(f"\nDagster run {report['run_id']} ({report['seconds']} s)")


def status_table(status: dict[str, Any]) -> str:
    """`manager.status` as the aligned text `mlops status` prints."""
    lines = [f"model         {status['model_name']}", f"tracking URI  {status['tracking_uri']}"]
    champ = status.get("champion")
    if champ:
        metrics = "  ".join(f"{k}={v:.3f}" for k, v in sorted(champ["metrics"].items()))
        lines.append(
            f"champion      v{champ['version']}  run {champ['run_id'][:12]}  "
            f"data {champ['data_files']} ({(champ['data_sha256'] or '')[:12]})"
        )
        lines.append(f"              {metrics}")
    else:
        lines.append("champion      none yet (run `mlops demo` or `mlops train-challenger`)")
    for shadow in status.get("shadows", []):
        lines.append(f"shadow        v{shadow['version']}  run {shadow['run_id'][:12]}")
    for test in status.get("open_shadow_tests", []):
        lines.append(f"shadow test   v{test['version']} expires {test['expires_at']}")
    prev = status.get("previous_champion")
    if prev:
        lines.append(f"previous      v{prev['version']} (`mlops rollback` restores it)")
    lines.append("")
    lines.append("last decisions:")
    if not status["last_decisions"]:
        lines.append("  none")
    for d in status["last_decisions"]:
        versions = f"champion v{d['champion_version']} / challenger v{d['challenger_version']}"
        lines.append(
            f"  {d['time'][:19]}  {d['decision']:<14} {d['status']:<8} {d['actor']:<8} {versions}"
        )
        for reason in d["reasons"]:
            lines.append(f"      - {reason}")
    lines.append("")
    lines.extend(_drift_lines(status.get("drift")))
    return "\n".join(lines)


def _drift_lines(drift: dict[str, Any] | None) -> list[str]:
    if not drift:
        return ["drift: not computed yet (it runs in every cycle once there is a champion)"]
    ref = f"v{drift['reference_version']}" if drift["reference_version"] else "the reference"
    head = (
        f"drift: data {drift['data_sha256'][:12]} vs champion {ref}'s training data, "
        f"{drift['computed_at'][:19]}"
    )
    drifted = [r for r in drift["results"] if r["drifted"]]
    if not drifted:
        return [head, "  no feature drifted"]
    lines = [head, f"  {len(drift['drifted_features'])} feature(s) drifted:"]
    for r in drifted:
        p = "" if r["p_value"] is None else f"  p={r['p_value']:.2g}"
        stat = "nan" if r["statistic"] is None else f"{r['statistic']:.3f}"
        lines.append(f"    {r['feature']:<24} {r['method']:<10} statistic={stat}{p}")
    return lines


def print_lineage(info: dict[str, Any]) -> None:
    """Print `mlops lineage`: files (sha256, rows), configs, digests, image, runs, decisions."""
    click.echo(
        f"{info['model_name']} v{info['version']}  state={info['state']}  "
        f"aliases={','.join(info['aliases']) or '-'}"
    )
    click.echo(f"  data window   {info['data_window']} (holdout from the first file)")
    for f in info["data_files"]:
        rows = f" {f['rows']} rows" if f.get("rows") is not None else ""
        click.echo(f"  data file     {f['file']}  sha256 {f['sha256']}{rows}")
    click.echo(f"  ludwig config {info['ludwig_config_hash']}")
    if info.get("chosen_config_hash"):
        # The config as trained: features resolved, and hyperopt's winner when it ran.
        click.echo(f"  config used   {info['chosen_config_hash']} (ludwig_config.json on the run)")
    click.echo(f"  bundle sha256 {info.get('bundle_sha256') or '- (registered without digests)'}")
    image = info.get("image")
    click.echo(
        f"  image         {image['ref']}  {image['digest']}"
        if image
        else "  image         - (not packaged: mlops package VERSION)"
    )
    click.echo(f"  MLflow run    {info['mlflow_run_id']}")
    click.echo(f"  Dagster run   {info['dagster_run_id'] or '-'}")
    for d in info["decisions"]:
        click.echo(f"  decision      {d['time'][:19]} {d['decision']} ({d['status']}) {d['id']}")
