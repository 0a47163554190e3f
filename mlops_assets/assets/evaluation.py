"""Evaluation: challenger and champion on the same holdout, with a verdict and plots."""

import dagster as dg

from mlops_assets import checks
from mlops_assets.actors import actor_from_run
from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.evaluation import EvaluationResult
from mlops_assets.lifecycle.training import TrainingOutcome
from mlops_assets.partitions import raw_files
from resources import LifecycleResource


def metrics_table(result: EvaluationResult) -> str:
    """The comparison as a Markdown table."""
    rows = ["| metric | champion | challenger | delta | 95% CI | p |", "|---|---|---|---|---|---|"]

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:.4f}"

    for c in result.record.comparisons:
        ci = "—" if c.ci_low is None else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]"
        rows.append(
            f"| {c.metric} | {fmt(c.champion)} | {fmt(c.challenger)} | "
            f"{'—' if c.delta is None else f'{c.delta:+.4f}'} | {ci} | {fmt(c.p_value)} |"
        )
    return "\n".join(rows)


@dg.asset(
    group_name="evaluation",
    partitions_def=raw_files,
    kinds={"mlflow"},
    check_specs=checks.EVALUATION_CHECKS,
    # With check specs Dagster cannot read the value type off the annotation.
    dagster_type=EvaluationResult,
    description="Challenger vs champion on the challenger's holdout rows: metrics, paired "
    "significance tests, the proposed decision with its reasons, and plots.",
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    challenger_model: TrainingOutcome,
) -> dg.MaterializeResult:
    """Score both models on the same rows and propose a decision (applied downstream)."""
    lc = lifecycle.context()
    manager.reconcile(lc)
    result = manager.evaluate(
        lc,
        challenger_model.version,
        actor=actor_from_run(context.run.tags),
        dagster_run_id=context.run_id,
    )
    record = result.record
    if result.already_decided:
        context.log.info(f"v{challenger_model.version} was already judged: {record.decision}")
    else:
        context.log.info(f"proposed {record.decision}: " + " ".join(record.reasons))
    return dg.MaterializeResult(
        value=result,
        metadata={
            "decision": record.decision.value,
            "already_decided": result.already_decided,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in record.reasons)),
            "model_version": challenger_model.version,
            "champion_version": result.champion_version or "none",
            "mlflow_run_id": challenger_model.run_id,
            "data_sha256": challenger_model.data_sha256,
            "holdout_rows": result.holdout_rows,
            "metrics": dg.MetadataValue.md(metrics_table(result)),
            "plots": dg.MetadataValue.md(result.plot_markdown() or "none"),
            "report": dg.MetadataValue.path(result.report_dir or "none"),
        },
        check_results=checks.evaluation_results(result),
    )
