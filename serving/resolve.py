"""Which model version serves which role, read from the MLflow registry aliases (no Ray).

Roles are slots: `champion` (alias `champion`) and `shadow-1` ... `shadow-N` (aliases
`challenger`, `challenger-2`, ... `challenger-N`, with N = `max_shadows`). The aliases are the
source of truth for what is served (DESIGN.md).
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlops_assets.lifecycle.states import STATE_TAG, Alias, Tag, holdout_metrics

log = logging.getLogger(__name__)

BUNDLE_ARTIFACT = "serving"
CHAMPION_SLOT = "champion"


class ModelRef(BaseModel):
    """One registered model version, as a slot's user_config carries it."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    run_id: str
    alias: str
    # The registered sha256 of the bundle's sha256.json (tag `bundle.sha256`); None for a
    # version registered before bundles had digests.
    bundle_sha256: str | None = None


def shadow_slots(max_shadows: int) -> list[str]:
    """Deployment names of the shadow slots: `shadow-1` ... `shadow-N`."""
    return [f"shadow-{i}" for i in range(1, max_shadows + 1)]


def slot_alias(slot: str) -> str:
    """The registry alias a slot serves (`shadow-1` -> `challenger`, `shadow-2` -> ...-2)."""
    if slot == CHAMPION_SLOT:
        return Alias.CHAMPION.value
    index = int(slot.removeprefix("shadow-"))
    return Alias.CHALLENGER.value if index == 1 else f"{Alias.CHALLENGER.value}-{index}"


# What MLflow answers for an alias or model that does not exist (file, SQL and REST stores).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


@cache
def _client(tracking_uri: str) -> Any:
    """One MLflow client per tracking URI for the replica's lifetime."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def resolve_alias(client: Any, model_name: str, alias: str) -> ModelRef | None:
    """The version behind `alias`, or None when the alias (or the model) does not exist.

    Any other failure (the tracking server unreachable) raises: "MLflow is down" must never
    read as "no champion", which would empty the slot.
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code not in NOT_FOUND_CODES:
            raise
        log.debug("no %s@%s: %s", model_name, alias, exc)
        return None
    return ModelRef(
        name=model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        alias=alias,
        bundle_sha256=(mv.tags or {}).get(Tag.BUNDLE_SHA256.value) or None,
    )


def resolve_slots(
    tracking_uri: str, model_name: str, max_shadows: int
) -> dict[str, ModelRef | None]:
    """Map every slot to the version its alias points at (None: nothing to serve there)."""
    client = _client(tracking_uri)
    slots: dict[str, ModelRef | None] = {}
    champion = resolve_alias(client, model_name, Alias.CHAMPION.value)
    slots[CHAMPION_SLOT] = champion
    for slot in shadow_slots(max_shadows):
        ref = resolve_alias(client, model_name, slot_alias(slot))
        # A version can't shadow itself: after a promotion the alias may lag for a moment.
        if ref is not None and champion is not None and ref.version == champion.version:
            ref = None
        slots[slot] = ref
    return slots


def download_bundle(tracking_uri: str, run_id: str, dest: Path) -> Path:
    """Download the run's `serving/` artifacts into `dest` and return the bundle folder."""
    import mlflow.artifacts

    dest.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(dest), tracking_uri=tracking_uri
    )
    return Path(local)


class VersionDetails(BaseModel):
    """Registry facts about a served version for `GET /model/info`."""

    name: str
    version: str
    run_id: str
    state: str | None = None
    aliases: list[str] = []
    data_sha256: list[str] = []
    promoted_at: str | None = None
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}


def version_details(tracking_uri: str, model_name: str, version: str) -> VersionDetails:
    """Tags, aliases and holdout metrics of one version (fresh from the registry)."""
    client = _client(tracking_uri)
    mv = client.get_model_version(model_name, str(version))
    tags = dict(mv.tags or {})
    metrics: dict[str, float] = {}
    try:
        run = client.get_run(mv.run_id)
        raw = run.data.metrics
        metrics = holdout_metrics(raw) or dict(raw)
    except Exception as exc:  # a deleted run must not break the info endpoint
        log.warning("cannot read run %s of version %s: %s", mv.run_id, version, exc)
    sha = tags.get(Tag.DATA_SHA256, "")
    return VersionDetails(
        name=model_name,
        version=str(mv.version),
        run_id=mv.run_id,
        state=tags.get(STATE_TAG),
        aliases=list(getattr(mv, "aliases", []) or []),
        data_sha256=[s for s in sha.split(",") if s],
        promoted_at=tags.get(Tag.PROMOTED_AT),
        metrics={k: float(v) for k, v in metrics.items()},
        tags=tags,
    )
