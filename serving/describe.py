"""What `/health` and `/model/info` say about a slot: pure functions of its `info` dict."""

from typing import Any

SUMMARY_KEYS = (
    "slot",
    "version",
    "run_id",
    "alias",
    "mode",
    "loaded_at",
    "load_error",
    "fault",
    "pid",
    "nice",
)


def summarize(info: dict[str, Any]) -> dict[str, Any]:
    """The short form of a slot in `/health`."""
    return {k: info.get(k) for k in SUMMARY_KEYS}


def describe(
    info: dict[str, Any], model_name: str, details: Any | None, registry_error: str | None
) -> dict[str, Any]:
    """The long form of a loaded slot in `/model/info`, with its registry details if read."""
    out: dict[str, Any] = {
        "slot": info["slot"],
        "name": model_name,
        "version": info["version"],
        "run_id": info["run_id"],
        "alias": info.get("alias"),
        "mode": "fast path" if info.get("mode") == "torchscript" else "fallback",
        "runtime": info.get("mode"),
        "fast_path_error": info.get("fast_path_error"),
        "classes": info.get("classes"),
        "input_schema": info.get("schema"),
        "loaded_at": info.get("loaded_at"),
    }
    if details is not None:
        out.update(
            state=details.state,
            aliases=details.aliases,
            data_sha256=details.data_sha256,
            metrics=details.metrics,
            promoted_at=details.promoted_at,
        )
    if registry_error is not None:
        out["registry_error"] = registry_error
    return out
