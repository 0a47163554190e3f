"""The Dagster resource that hands the plain lifecycle modules their settings, MLflow and store.

We wrap `MlflowClient` ourselves rather than use `dagster_mlflow.mlflow_tracking`: that
resource opens one MLflow run per Dagster run and its end-of-run hook can close the run early
(dagster#21872), while here each challenger owns its MLflow run and its registry moves.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.settings import Settings, load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.store import LifecycleStore


@cache
def _settings(path: str, tracking_uri: str | None, store_url: str | None) -> Settings:
    return load_settings(path).with_overrides(tracking_uri=tracking_uri, lifecycle_db_url=store_url)


@cache
def _store(url: str) -> LifecycleStore:
    from mlops_assets.lifecycle.store import LifecycleStore

    return LifecycleStore(url)


class LifecycleResource(dg.ConfigurableResource):
    """Config path plus optional MLflow URI and store URL (use `dg.EnvVar` for both)."""

    config_path: str
    tracking_uri: str | None = None
    store_url: str | None = None

    def settings(self) -> Settings:
        """The validated settings with this resource's URIs applied (loaded once per process)."""
        return _settings(self.config_path, self.tracking_uri or None, self.store_url or None)

    def mlflow(self) -> MlflowClient:
        """An MLflow client bound to the resolved tracking URI."""
        from mlflow import MlflowClient

        return MlflowClient(self.settings().tracking_uri)

    def store(self) -> LifecycleStore:
        """The lifecycle store (opened and migrated once per process)."""
        return _store(self.settings().lifecycle_db_url)
