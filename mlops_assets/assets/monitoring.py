"""Shadow tests: when one expires, judge the shadow on labelled live traffic and decide."""

import dagster as dg

from mlops_assets.actors import actor_from_run
from resources import LifecycleResource


@dg.asset(
    group_name="evaluation",
    deps=["champion_deployment"],
    kinds={"mlflow"},
    description="Every expired shadow test judged on the labelled mirrored requests (champion "
    "and shadow on the same requests, paired tests, error rates, latency) and decided: "
    "PROMOTE, EXTEND_SHADOW or REJECT.",
)
def shadow_evaluation(
    context: dg.AssetExecutionContext, lifecycle: LifecycleResource
) -> dg.MaterializeResult:
    """Ingest label files, then evaluate and decide every expired shadow test."""
    from mlops_assets.lifecycle.labels import ingest_label_files
    from mlops_assets.lifecycle.shadow import run_shadow_expiry

    lc = lifecycle.context()
    ingest = ingest_label_files(lc)
    records = run_shadow_expiry(
        lc, actor=actor_from_run(context.run.tags), dagster_run_id=context.run_id
    )
    lines = ["| version | decision | status | reasons |", "|---|---|---|---|"]
    for rec in records:
        lines.append(
            f"| v{rec.challenger_version} | {rec.decision.value} | {rec.status.value} | "
            + " ".join(rec.reasons).replace("|", "/")
            + " |"
        )
        context.log.info(f"shadow v{rec.challenger_version}: {rec.decision}")
    return dg.MaterializeResult(
        metadata={
            "expired_shadow_tests": len(records),
            "decisions": dg.MetadataValue.md("\n".join(lines) if records else "none expired"),
            "label_files": len(ingest.files),
            "labels_accepted": ingest.accepted,
            "label_files_quarantined": len(ingest.quarantined),
            # Still being written (not settled): taken on a later run, their labels awaited.
            "label_files_waiting": len(ingest.waiting),
            "label_files_waiting_names": ", ".join(ingest.waiting) or "none",
            "model_version": ", ".join(str(r.challenger_version) for r in records) or "none",
            "decision": ", ".join(r.decision.value for r in records) or "none",
        }
    )
