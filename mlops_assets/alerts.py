"""Alerts: a log line, a line in `MLOPS_HOME/alerts.jsonl`, and an optional webhook POST."""

from __future__ import annotations

import json
import logging
from typing import Any

from mlops_assets.lifecycle.records import utcnow
from mlops_assets.settings import Settings

log = logging.getLogger("mlops.alerts")


def raise_alert(settings: Settings, *, kind: str, message: str, details: dict[str, Any]) -> dict:
    """Record an alert everywhere it is configured to go; never raises."""
    alert = {"time": utcnow().isoformat(), "kind": kind, "message": message, "details": details}
    log.error("ALERT %s: %s %s", kind, message, json.dumps(details, default=str))
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        with (settings.home / "alerts.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(alert, default=str) + "\n")
    except OSError:
        log.exception("could not write the alert log")
    url = settings.config.automation.alert_webhook_url
    if url:
        import httpx

        try:
            httpx.post(url, json=alert, timeout=10.0).raise_for_status()
        except httpx.HTTPError:
            log.exception("alert webhook %s failed", url)
    return alert
