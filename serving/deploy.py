"""Deploy the app declaratively and hot-swap models by changing only `user_config`.

Why declaratively: Serve gives an app deployed from a config (import path + args) a stable
code version, so re-applying the same config with other `user_config` values only calls
`reconfigure` on the live replicas (no restart, no dropped request). `serve.run` gives every
deployment a fresh random version instead, which restarts every replica, the ingress included.

`apply` works from any process connected to the Ray cluster: the runner (driver) and the
ingress replica (`POST /admin/reload`). Applications of other owners on the same cluster are
kept: their current config is re-applied unchanged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from serving.app import ingress_config, slot_config
from serving.config import APP_NAME, INGRESS_NAME, AppArgs, FaultSpec, IngressConfig
from serving.resolve import CHAMPION_SLOT, ModelRef, resolve_slots, shadow_slots

log = logging.getLogger(__name__)

IMPORT_PATH = "serving.app:app_builder"
ROUTE_PREFIX = "/"


def app_args_from_settings(settings: Any, *, log_predictions: bool = True) -> AppArgs:
    """Builder args with every URI resolved now (replicas need no config file or env)."""
    return AppArgs(
        config_path=str(settings.config_path),
        tracking_uri=settings.tracking_uri,
        model_name=settings.model_name,
        lifecycle_db_url=settings.lifecycle_db_url,
        max_shadows=settings.policy.max_shadows,
        shadow_traffic_percent=settings.policy.shadow_traffic_percent,
        serving=settings.config.serving,
        log_predictions=log_predictions,
        home=str(settings.home),
    )


def app_config(
    args: AppArgs,
    slots: dict[str, ModelRef | None],
    *,
    faults: dict[str, FaultSpec | dict[str, Any] | None] | None = None,
    mirroring: IngressConfig | None = None,
) -> dict[str, Any]:
    """The declarative config of our application (ServeApplicationSchema as a dict)."""
    faults = faults or {}
    if faults.get(CHAMPION_SLOT):
        raise ValueError("faults go to shadow slots only: the ingress hosts the champion")
    mirroring = mirroring or IngressConfig(shadow_traffic_percent=args.shadow_traffic_percent)
    deployments = [
        {"name": INGRESS_NAME, "user_config": ingress_config(mirroring, slots.get(CHAMPION_SLOT))}
    ]
    for slot in shadow_slots(args.max_shadows):
        deployments.append(
            {"name": slot, "user_config": slot_config(slots.get(slot), faults.get(slot))}
        )
    return {
        "name": args.app_name,
        "route_prefix": ROUTE_PREFIX,
        "import_path": IMPORT_PATH,
        "args": args.model_dump(mode="json"),
        "deployments": deployments,
    }


def merge_user_configs(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """`current` app config with the deployments' user_config values taken from `wanted`."""
    merged = dict(current)
    deployments = {d["name"]: dict(d) for d in current.get("deployments") or []}
    for dep in wanted["deployments"]:
        deployments.setdefault(dep["name"], {"name": dep["name"]})["user_config"] = dep[
            "user_config"
        ]
    merged["deployments"] = list(deployments.values())
    return merged


def current_mirroring(args: AppArgs, reread_config: bool) -> IngressConfig:
    """Mirroring knobs from the builder args, or re-read from the config file."""
    if reread_config and args.config_path:
        try:
            from mlops_assets.settings import load_settings

            settings = load_settings(args.config_path)
            serving = settings.config.serving
            return IngressConfig(
                shadow_traffic_percent=settings.policy.shadow_traffic_percent,
                shadow_timeout_s=serving.shadow_timeout_s,
                max_inflight_shadow=serving.max_inflight_shadow,
            )
        except Exception as exc:
            log.warning("cannot re-read %s (%s); keeping the mirroring", args.config_path, exc)
    return IngressConfig(shadow_traffic_percent=args.shadow_traffic_percent)


def apply(
    args: AppArgs,
    *,
    faults: dict[str, FaultSpec | dict[str, Any] | None] | None = None,
    shadow_traffic_percent: float | None = None,
    shadow_timeout_s: float | None = None,
    max_inflight_shadow: int | None = None,
    reread_policy: bool = False,
    wait_s: float = 180.0,
) -> dict[str, ModelRef | None]:
    """Resolve the aliases, apply the config, wait until every slot serves its version.

    `reread_policy` re-reads the mirroring knobs (shadow_traffic_percent, shadow_timeout_s,
    max_inflight_shadow) from the config file; explicit arguments override them.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    slots = resolve_slots(args.tracking_uri, args.model_name, args.max_shadows)
    mirroring = current_mirroring(args, reread_policy)
    overrides = {
        "shadow_traffic_percent": shadow_traffic_percent,
        "shadow_timeout_s": shadow_timeout_s,
        "max_inflight_shadow": max_inflight_shadow,
    }
    mirroring = mirroring.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    mirroring = IngressConfig.model_validate(mirroring.model_dump())
    ours = app_config(args, slots, faults=faults, mirroring=mirroring)
    client = _get_global_client()
    details = client.get_serve_details()
    apps = details.get("applications") or {}
    current = (apps.get(args.app_name) or {}).get("deployed_app_config")
    if current:
        # Keep import path, args and runtime_env exactly as deployed (they fix the code
        # version: any change there would rebuild and restart every replica).
        ours = merge_user_configs(current, ours)
    others = [
        app["deployed_app_config"]
        for name, app in apps.items()
        if name != args.app_name and app.get("deployed_app_config")
    ]
    config: dict[str, Any] = {"applications": [*others, ours]}
    if details.get("http_options"):
        config["http_options"] = details["http_options"]
    if details.get("proxy_location"):
        config["proxy_location"] = details["proxy_location"]
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    log.info(
        "applied %s: %s",
        args.app_name,
        {s: (r.version if r else None) for s, r in slots.items()},
    )
    wait_for_slots(args.app_name, slots, faults or {}, timeout_s=wait_s)
    wait_for_mirroring(args, mirroring, timeout_s=wait_s)
    return slots


def wait_for_mirroring(args: AppArgs, wanted: IngressConfig, timeout_s: float = 180.0) -> None:
    """Block until the ingress applies `wanted` (it reconfigures apart from the models)."""
    from ray import serve

    expect = wanted.model_copy(
        update={
            "shadow_timeout_s": wanted.shadow_timeout_s or args.serving.shadow_timeout_s,
            "max_inflight_shadow": wanted.max_inflight_shadow or args.serving.max_inflight_shadow,
        }
    ).model_dump()
    deadline = time.monotonic() + timeout_s
    current: Any = None
    while time.monotonic() < deadline:
        try:
            handle = serve.get_deployment_handle(INGRESS_NAME, app_name=args.app_name)
            current = handle.mirroring.remote().result(timeout_s=10)
        except Exception as exc:  # not deployed yet, or restarting
            current = repr(exc)
        if current == expect:
            # Make the ingress re-read what each slot serves now, rather than at its next
            # periodic refresh, so mirroring targets are current when this returns.
            handle.refresh_roles.remote().result(timeout_s=30)
            return
        time.sleep(0.2)
    raise TimeoutError(f"the ingress did not apply {expect} in {timeout_s:g}s: {current}")


def wait_for_slots(
    app_name: str,
    slots: dict[str, ModelRef | None],
    faults: dict[str, Any],
    timeout_s: float = 180.0,
) -> None:
    """Block until every slot reports the version (and fault) it was given."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    pending = dict(slots)
    last: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        _raise_if_failed(app_name)
        for slot, ref in list(pending.items()):
            try:
                # The ingress hosts the champion and answers `info` for it.
                name = INGRESS_NAME if slot == CHAMPION_SLOT else slot
                handle = serve.get_deployment_handle(name, app_name=app_name)
                info = handle.info.remote().result(timeout_s=10)
            except Exception as exc:  # not deployed yet, or restarting
                last[slot] = repr(exc)
                continue
            last[slot] = info
            want = ref.version if ref else None
            fault = faults.get(slot)
            want_fault = (
                (fault.kind if isinstance(fault, FaultSpec) else fault.get("kind"))
                if fault
                else None
            )
            settled = info.get("target_version") == want and info.get("fault") == want_fault
            served = info.get("version") if info.get("loaded") else None
            if settled and (served == want or info.get("load_error")):
                if info.get("load_error"):
                    log.error("%s could not load version %s: %s", slot, want, info["load_error"])
                pending.pop(slot)
        if pending:
            time.sleep(0.25)
    if pending:
        raise TimeoutError(f"slots not ready after {timeout_s:g}s: {last}")


def _raise_if_failed(app_name: str) -> None:
    from ray import serve

    status = serve.status().applications.get(app_name)
    if status is not None and status.status == "DEPLOY_FAILED":
        raise RuntimeError(f"{app_name} failed to deploy: {status.message}")


def wait_for_app(app_name: str = APP_NAME, timeout_s: float = 180.0) -> None:
    """Block until the application is RUNNING (raise when it failed to deploy)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status: Any = None
    while time.monotonic() < deadline:
        apps = serve.status().applications
        status = apps.get(app_name)
        if status is not None:
            if status.status == "RUNNING":
                return
            if status.status == "DEPLOY_FAILED":
                raise RuntimeError(f"{app_name} failed to deploy: {status.message}")
        time.sleep(0.25)
    raise TimeoutError(f"{app_name} not running after {timeout_s:g}s: {status}")
