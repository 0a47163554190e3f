"""Deployment: apply the decision to the registry (aliases, tags) and the running server."""

import dagster as dg

from mlops_assets.lifecycle import manager
from mlops_assets.lifecycle.evaluation import EvaluationResult
from mlops_assets.lifecycle.records import DecisionRecord
from mlops_assets.lifecycle.states import Alias
from mlops_assets.partitions import raw_files
from resources import LifecycleResource


@dg.asset(
    group_name="deployment",
    partitions_def=raw_files,
    kinds={"mlflow", "ray"},
    description="The champion after this file's decision: MLflow aliases and lifecycle.state "
    "tags moved crash-safely, the decision recorded, the server hot-swapped when running.",
)
def champion_deployment(
    context: dg.AssetExecutionContext,
    lifecycle: LifecycleResource,
    evaluation_report: EvaluationResult,
) -> dg.MaterializeResult[DecisionRecord]:
    """Apply the proposed decision under the transition lock."""
    lc = lifecycle.context()
    applied = manager.apply_decision(lc, evaluation_report.record)
    champion = lc.alias_version(Alias.CHAMPION)
    if evaluation_report.already_decided:
        context.log.info(
            f"{applied.decision} was applied earlier (decision {applied.id}); nothing to do. "
            f"The champion is v{champion}."
        )
    else:
        context.log.info(f"{applied.decision} applied; champion is now v{champion}")
    return dg.MaterializeResult(
        value=applied,
        metadata={
            "decision": applied.decision.value,
            "decision_id": applied.id,
            "status": applied.status.value,
            "already_decided": evaluation_report.already_decided,
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in applied.reasons)),
            "champion_version": champion or "none",
            "challenger_version": applied.challenger_version or "none",
            "model_version": applied.challenger_version or "none",
        },
    )
