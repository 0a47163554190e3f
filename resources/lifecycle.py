"""The Dagster resource that hands the plain lifecycle modules their lifecycle context.

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

    from mlops_assets.lifecycle.context import Lifecycle
    from mlops_assets.lifecycle.store import LifecycleStore


@cache
def _settings(path: str, tracking_uri: str | None, store_url: str | None) -> Settings:
    return load_settings(path).with_overrides(tracking_uri=tracking_uri, lifecycle_db_url=store_url)


class LifecycleResource(dg.ConfigurableResource):
    """Config path plus optional MLflow URI and store URL (use `dg.EnvVar` for both)."""

    config_path: str
    tracking_uri: str | None = None
    store_url: str | None = None

    def settings(self) -> Settings:
        """The validated settings with this resource's URIs applied (loaded once per process)."""
        return _settings(self.config_path, self.tracking_uri or None, self.store_url or None)

    def context(self) -> Lifecycle:
        """The process's lifecycle context; an applied decision asks a running server to reload."""
        from mlops_assets.lifecycle.context import after_applied, shared_lifecycle

        settings = self.settings()
        return shared_lifecycle(settings, on_applied=after_applied(settings))

    def mlflow(self) -> MlflowClient:
        """The context's MLflow client, bound to the resolved tracking URI."""
        return self.context().client

    def store(self) -> LifecycleStore:
        """The lifecycle store (opened and migrated once per process)."""
        return self.context().store
