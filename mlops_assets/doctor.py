"""`mlops check`: dependencies, config, stores, services and ports, each with its fix."""

from __future__ import annotations

import importlib.metadata as md
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlops_assets.settings import Settings

if TYPE_CHECKING:
    from mlops_assets.lifecycle.context import Lifecycle

# The measured stack (shared STACK.md); a different version is a warning, not a failure.
EXPECTED = {
    "torch": "2.14.1",
    "ludwig": "0.11.0",
    "dagster": "1.13.27",
    "mlflow": "3.17.2",
    "ray": "2.60.0",
    "pandera": "0.35.0",
}


@dataclass
class CheckItem:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _open(
    settings: Settings, open_lifecycle: Callable[[], Lifecycle] | None
) -> tuple[Lifecycle | None, Exception | None]:
    """The caller's lifecycle context (or a new one), or the error that stopped it opening."""
    try:
        if open_lifecycle is not None:
            return open_lifecycle(), None
        from mlops_assets.lifecycle.context import Lifecycle

        return Lifecycle.open(settings), None
    except Exception as err:  # reported as a failed check, not raised
        return None, err


def run_checks(
    settings: Settings, open_lifecycle: Callable[[], Lifecycle] | None = None
) -> list[CheckItem]:
    """Run every check; never raises (without the caller's context one is opened and closed)."""
    items: list[CheckItem] = []
    for package, want in EXPECTED.items():
        try:
            have = md.version(package)
        except md.PackageNotFoundError:
            items.append(CheckItem(package, False, "not installed", "make setup"))
            continue
        same = have.split("+")[0] == want
        items.append(
            CheckItem(
                package,
                same,
                f"{have} (tested: {want})",
                "make setup (rebuilds the venv from pyproject.toml)",
                warning=not same,
            )
        )
    items.append(
        CheckItem(
            "config", True, f"{settings.config_path} and {settings.ludwig_config_path} are valid"
        )
    )
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        probe = settings.home / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        items.append(CheckItem("MLOPS_HOME", True, f"{settings.home} is writable"))
    except OSError as err:
        items.append(
            CheckItem("MLOPS_HOME", False, str(err), "set MLOPS_HOME to a writable folder")
        )
    lc, store_error = _open(settings, open_lifecycle)
    try:
        if lc is not None:
            client = lc.client
        else:
            from mlflow import MlflowClient

            client = MlflowClient(settings.tracking_uri)
        client.search_experiments(max_results=1)
        items.append(CheckItem("MLflow", True, f"{settings.tracking_uri} answers"))
    except Exception as err:  # any failure here is reported, not raised
        items.append(
            CheckItem(
                "MLflow",
                False,
                f"{settings.tracking_uri}: {err}"[:300],
                "start the tracking server or unset MLFLOW_TRACKING_URI "
                "to use the embedded SQLite store",
            )
        )
    try:
        if lc is None:
            raise store_error or RuntimeError("the lifecycle store was not opened")
        pending = lc.store.pending_decisions(settings.model_name)
        items.append(
            CheckItem("lifecycle store", True, f"opens; {len(pending)} pending decision(s)")
        )
        if pending:
            items.append(
                CheckItem(
                    "pending decisions",
                    False,
                    f"{len(pending)} half-done registry move(s)",
                    "mlops check --repair",
                    warning=True,
                )
            )
        for stale in lc.store.stale_locks():
            items.append(
                CheckItem(
                    "transition lock",
                    False,
                    f"{stale.lock.name!r} is held by {stale.lock.holder}, which is stale: "
                    f"{stale.reason}",
                    "mlops check --repair (breaks it and says whose it was)",
                    warning=True,
                )
            )
    except Exception as err:  # any failure here is reported, not raised
        items.append(
            CheckItem(
                "lifecycle store",
                False,
                str(err)[:300],
                "check lifecycle_store.url / MLOPS_LIFECYCLE_DB",
            )
        )
    finally:
        if lc is not None and open_lifecycle is None:
            lc.close()
    serving = settings.config.serving
    for name, port in (
        ("Ray Serve", serving.port),
        ("Dagster webserver", 3000),
        ("MLflow server", 5000),
        ("Prometheus", 9090),
    ):
        used = _port_in_use(serving.host, port)
        items.append(
            CheckItem(
                f"port {port}", True, f"{name}: {'something is listening' if used else 'free'}"
            )
        )
    return items
