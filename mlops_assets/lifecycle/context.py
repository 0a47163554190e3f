"""The lifecycle context: settings, one MLflow client and one store, opened once per process.

The caller builds it (the Dagster resource, the CLI, the Python API) and passes it to the
plain lifecycle functions, which never open a store or build a client themselves. A registry
move that was applied is reported to `on_applied`, which the caller chooses: the CLI and the
Dagster resource ask a running server to reload; tests pass nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlops_assets.lifecycle.states import Alias
from mlops_assets.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlops_assets.lifecycle.records import DecisionRecord
    from mlops_assets.lifecycle.registry import Registry
    from mlops_assets.lifecycle.store import LifecycleStore

log = logging.getLogger(__name__)

OnApplied = Callable[["DecisionRecord"], None]


def alias_version(client: MlflowClient, model_name: str, alias: Alias) -> str | None:
    """The version an alias points at, or None; TrackingUnreachable when MLflow is down."""
    from mlops_assets.lifecycle.tracking import missing_as_none, tracking_uri_of

    # The model's alias map, not get_model_version_by_alias: a missing alias of an existing
    # model comes back as INVALID_PARAMETER_VALUE, which cannot be told from a bad request.
    model = missing_as_none(
        lambda: client.get_registered_model(model_name),
        tracking_uri_of(client),
        f"reading the {alias.value!r} alias of {model_name}",
    )
    version = None if model is None else (model.aliases or {}).get(alias.value)
    return None if version is None else str(version)


@dataclass
class Lifecycle:
    """Settings, the registry client and the store that one process shares (see module doc)."""

    settings: Settings
    client: MlflowClient
    store: LifecycleStore
    on_applied: OnApplied | None = None
    _registry: Registry | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, on_applied: OnApplied | None = None) -> Lifecycle:
        """Build the MLflow client and open (and migrate) the store for `settings`."""
        from mlflow import MlflowClient

        from mlops_assets.lifecycle.store import LifecycleStore

        settings.home.mkdir(parents=True, exist_ok=True)
        store = LifecycleStore(settings.lifecycle_db_url)
        return cls(settings, MlflowClient(settings.tracking_uri), store, on_applied)

    @property
    def model_name(self) -> str:
        """The registered model this lifecycle manages."""
        return self.settings.model_name

    @property
    def registry(self) -> Registry:
        """The registry mover for the configured model (built on first use)."""
        if self._registry is None:
            from mlops_assets.lifecycle.registry import Registry

            self._registry = Registry(self.client, self.model_name, self.store)
        return self._registry

    def alias_version(self, alias: Alias) -> str | None:
        """The version `alias` points at for this model, or None."""
        return alias_version(self.client, self.model_name, alias)

    def applied(self, record: DecisionRecord) -> None:
        """Tell the caller's `on_applied` that a decision was applied."""
        if self.on_applied is not None:
            self.on_applied(record)

    def close(self) -> None:
        """Dispose of the store's engine."""
        self.store.close()

    def __enter__(self) -> Lifecycle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[tuple[str, str, str], Lifecycle] = {}


def shared_lifecycle(settings: Settings, *, on_applied: OnApplied | None = None) -> Lifecycle:
    """The one context of this process for these settings (opened on first use).

    The CLI and the Dagster resource both ask here, so a CLI command that materialises assets
    in process still opens the store once. The first caller's `on_applied` is kept: callers in
    one process pass the same one.
    """
    key = (str(settings.config_path.resolve()), settings.tracking_uri, settings.lifecycle_db_url)
    if key not in _shared:
        _shared[key] = Lifecycle.open(settings, on_applied=on_applied)
    return _shared[key]


def reload_endpoint(settings: Settings) -> tuple[str, dict[str, str]]:
    """The server's reload URL and the headers it needs (the admin token when one is set)."""
    serving = settings.config.serving
    headers = {}
    token = os.environ.get(serving.admin_token_env)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return f"http://{serving.host}:{serving.port}/admin/reload", headers


def server_reloader(settings: Settings) -> OnApplied:
    """An `on_applied` that asks a running server to reload; a server that is down is fine."""
    url, headers = reload_endpoint(settings)

    def reload(record: DecisionRecord) -> None:
        import httpx

        try:
            httpx.post(url, headers=headers, timeout=30.0)
            log.info("asked the server at %s to reload after decision %s", url, record.id)
        except httpx.HTTPError:
            log.debug("no server at %s; nothing to reload", url)

    return reload


def after_applied(settings: Settings) -> OnApplied:
    """The CLI's and Dagster's `on_applied`: reload a running server, then package the version.

    Packaging (mlops_assets/packaging.py) runs only with `deployment.package_images: true`, for
    START_SHADOW, PROMOTE and BOOTSTRAP; a failed build is logged and the decision stands.
    """
    reload = server_reloader(settings)
    if not settings.config.deployment.package_images:
        return reload

    def reload_and_package(record: DecisionRecord) -> None:
        from mlops_assets.packaging import package_after_decision

        reload(record)
        package_after_decision(settings, record)

    return reload_and_package
