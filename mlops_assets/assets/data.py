"""Ingestion: raw CSV files and their validated features."""

from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from mlops_assets import checks
from mlops_assets.assets.retries import retrying_when_down
from mlops_assets.lifecycle import manager
from mlops_assets.partitions import raw_files
from mlops_assets.validation import ValidationResult
from resources import LifecycleResource


class RawFile(BaseModel):
    """A raw data file, identified by its sha256."""

    path: str
    name: str
    sha256: str
    bytes: int


@dg.asset(
    group_name="ingestion",
    partitions_def=raw_files,
    kinds={"csv"},
    description="A CSV file in data/raw/ (one partition per file), identified by its sha256.",
)
def raw_data(
    context: dg.AssetExecutionContext, lifecycle: LifecycleResource
) -> dg.MaterializeResult[RawFile]:
    """Locate the partition's file and fingerprint it.

    The partition key must be a plain file name in data/raw/: a key added from the UI such as
    `../../etc/passwd` or `/etc/passwd` fails the run before anything is read or moved.
    """
    from mlops_assets.files import ignored_name, safe_child
    from mlops_assets.validation import file_sha256

    settings = lifecycle.settings()
    try:
        path = safe_child(settings.raw_dir, context.partition_key)
    except ValueError as err:
        raise dg.Failure(description=str(err)) from None
    if ignored_name(path.name):
        raise dg.Failure(
            description=f"{path.name!r} is a hidden or temporary name (dot-file, *.tmp, *.part, "
            "*~), which is never ingested: rename the file to its final name once it is complete",
        )
    if not path.is_file():
        raise dg.Failure(
            description=f"{path} does not exist or is not a file. Files that failed "
            f"validation are in {settings.quarantine_dir} with a report.",
        )
    sha = file_sha256(path)
    size = path.stat().st_size
    context.log.info(f"{path.name}: sha256 {sha}, {size} bytes")
    return dg.MaterializeResult(
        value=RawFile(path=str(path), name=path.name, sha256=sha, bytes=size),
        metadata={"path": dg.MetadataValue.path(str(path)), "sha256": sha, "bytes": size},
        data_version=dg.DataVersion(sha),
    )


@dg.asset(
    group_name="ingestion",
    partitions_def=raw_files,
    kinds={"pandas", "pandera"},
    check_specs=checks.VALIDATION_CHECKS,
    # With check specs Dagster cannot read the value type off the annotation.
    dagster_type=ValidationResult,
    description="The raw file checked by a pandera schema built from config; "
    "a failing file is moved to data/quarantine/ with a report.",
)
def validated_features(
    context: dg.AssetExecutionContext, lifecycle: LifecycleResource, raw_data: RawFile
) -> dg.MaterializeResult:
    """Validate the file; quarantine it when it fails (the blocking check then stops the run)."""
    with retrying_when_down(context):  # MLflow down: nothing was validated or moved yet
        result, moved = manager.validate_file(lifecycle.context(), Path(raw_data.path))
    metadata: dict = {"sha256": result.sha256, "rows": result.rows, "passed": result.ok}
    if result.ok and result.frame is not None:
        metadata["columns"] = len(result.frame.columns)
        metadata["preview"] = dg.MetadataValue.md(result.frame.head(5).to_markdown(index=False))
    else:
        metadata["problems"] = dg.MetadataValue.md(checks.problems_markdown(result))
        metadata["quarantined_to"] = dg.MetadataValue.path(str(moved))
        context.log.error(f"{raw_data.name} failed validation and was moved to {moved}")
    return dg.MaterializeResult(
        value=result,
        metadata=metadata,
        check_results=checks.validation_results(result),
        data_version=dg.DataVersion(result.sha256),
    )
