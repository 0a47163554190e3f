"""Jobs: the per-file challenger cycle."""

from __future__ import annotations

import dagster as dg

from mlops_assets.partitions import raw_files

CYCLE_ASSETS = [
    "raw_data",
    "validated_features",
    "challenger_model",
    "evaluation_report",
    "champion_deployment",
]

challenger_cycle_job = dg.define_asset_job(
    "challenger_cycle",
    selection=dg.AssetSelection.assets(*CYCLE_ASSETS),
    partitions_def=raw_files,
    description="Ingest -> validate -> train -> evaluate -> decide for one raw file.",
)
