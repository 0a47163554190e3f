"""What `shadow_evaluation` reports about label files: taken, quarantined, still awaited."""

from __future__ import annotations

import dagster as dg

from mlops_assets.settings import load_settings


def test_label_files_still_being_written_are_counted_as_waiting(make_project) -> None:
    from mlops_assets.definitions import build_definitions
    from mlops_assets.pipeline import dagster_instance

    # A long settle time: the file just written is not settled yet, so it is left for later.
    root = make_project({"data": {"settle_seconds": 3600}})
    settings = load_settings(root / "config" / "config.yaml")
    settings.ensure_dirs()
    (settings.labels_dir / "late.csv").write_text("request_id,label\nr-1,yes\n")
    (settings.labels_dir / "later.csv").write_text("request_id,label\nr-2,no\n")
    defs = build_definitions(settings.config_path)

    result = dg.materialize(
        assets=list(defs.assets or []),
        selection=["shadow_evaluation"],
        instance=dagster_instance(settings),
        resources=defs.resources,
    )

    (mat,) = [e.materialization for e in result.get_asset_materialization_events()]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["label_files"], meta["labels_accepted"]) == (0, 0)
    assert meta["label_files_waiting"] == 2
    assert meta["label_files_waiting_names"] == "late.csv, later.csv"
    assert (settings.labels_dir / "late.csv").is_file()
