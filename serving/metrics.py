"""Prometheus metrics of the serving app (the `mlops_*` names of DESIGN.md), no Ray.

The ingress deployment sees every request, every champion answer and every shadow call, so it
owns these counters in its own registry and `GET /metrics` renders them. The app runs one
ingress replica (`serving.app.INGRESS_REPLICAS`); were it scaled out, each replica would answer
`/metrics` with its own share, and Prometheus should scrape Ray's metrics port instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# `*_created` series double the output and nothing here reads them.
disable_created_metrics()

# Loopback requests take milliseconds; shadows can time out after seconds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class DecisionCounts(Collector):
    """`mlops_lifecycle_decisions_total{decision}`: counts of the store's append-only decisions.

    The lifecycle store is the source of truth (decisions are made by Dagster runs and the
    CLI, not here), so this counter is read from it rather than incremented: it only grows,
    and survives restarts of the server.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        """One sample per decision value."""
        family = CounterMetricFamily(
            "mlops_lifecycle_decisions",
            "Lifecycle decisions recorded in the lifecycle store, by decision",
            labels=["decision"],
        )
        for decision, count in sorted(self.counts.items()):
            family.add_metric([decision], count)
        yield family


class ServingMetrics:
    """The counters, gauges and histograms of one ingress replica."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlops_requests_total",
            "Requests by role, model version, endpoint and HTTP status (shadow: 200/422/500/504)",
            ["role", "model_version", "endpoint", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_request_latency_seconds",
            "Latency of answered requests (champion: end to end in the ingress; shadow: in its "
            "replica, as shadow copies travel in batches)",
            ["role", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "mlops_model_latency_seconds",
            "Time a model replica spent answering one request (validation and prediction); "
            "the like-for-like champion vs shadow comparison",
            ["role", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "mlops_predictions_total",
            "Predicted rows by role, model version and predicted class",
            ["role", "model_version", "class"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlops_shadow_mirror_dropped_total",
            "Sampled shadow copies not sent because max_inflight_shadow copies were pending",
            registry=r,
        )
        self.shadow_mirrored = Counter(
            "mlops_shadow_mirrored_total",
            "Requests mirrored to a shadow and answered or failed, by shadow model version",
            ["model_version"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "mlops_shadow_failures_total",
            "Mirrored requests the shadow did not answer (kind: error, timeout, invalid)",
            ["model_version", "kind"],
            registry=r,
        )
        self.shadow_inflight = Gauge(
            "mlops_shadow_inflight",
            "Mirrored requests buffered or in a shadow call right now",
            registry=r,
        )
        self.champion_info = Gauge(
            "mlops_champion_info",
            "1 for the model version that serves live traffic",
            ["model_version"],
            registry=r,
        )
        self.model_metric = Gauge(
            "mlops_model_metric",
            "Holdout metrics of the served versions, from their MLflow runs",
            ["role", "model_version", "metric"],
            registry=r,
        )
        self.input_warnings = Counter(
            "mlops_input_warnings_total",
            "Accepted inputs worth a look (kind: out_of_range, unknown_category, unknown_feature)",
            ["feature", "kind"],
            registry=r,
        )
        self.predlog_written = Counter(
            "mlops_prediction_log_written_total",
            "Prediction rows written to the lifecycle store",
            registry=r,
        )
        self.predlog_dropped = Counter(
            "mlops_prediction_log_dropped_total",
            "Prediction rows dropped (queue full, or the store still down at shutdown)",
            registry=r,
        )
        self.predlog_queued = Gauge(
            "mlops_prediction_log_queued_rows",
            "Prediction rows queued for the lifecycle store, or held while it is down",
            registry=r,
        )
        self.predlog_spilled = Counter(
            "mlops_prediction_log_spilled_total",
            "Prediction rows written to the spill file because the store was down at shutdown "
            "(the next start replays them)",
            registry=r,
        )
        self.predlog_replayed = Counter(
            "mlops_prediction_log_replayed_total",
            "Spilled prediction rows written back from the spill file at start",
            registry=r,
        )
        self.predlog_rows = Gauge(
            "mlops_prediction_log_rows",
            "Rows in the prediction log (every model and role), from the lifecycle store",
            registry=r,
        )
        self.predlog_bytes = Gauge(
            "mlops_prediction_log_bytes",
            "Approximate bytes on disk of the prediction log (PostgreSQL: table, indexes and "
            "TOAST; SQLite: the pages in use of the whole database file)",
            registry=r,
        )
        self.predlog_max_rows = Gauge(
            "mlops_prediction_log_max_rows",
            "The configured size bound of the prediction log (serving.prediction_log_max_rows)",
            registry=r,
        )
        self.bundle_mismatch = Gauge(
            "mlops_bundle_mismatch",
            "1 while a slot refuses a version whose serving bundle differs from the registered "
            "one (file: the first file that differs); the slot keeps its current version",
            ["slot", "model_version", "file"],
            registry=r,
        )
        self.labels_rejected = Counter(
            "mlops_labels_rejected_total",
            "Labels /feedback refused, by reason (unknown_id, conflict, unknown_class, ...)",
            ["reason"],
            registry=r,
        )
        self.feature_drift = Gauge(
            "mlops_feature_drift",
            "Latest drift statistic per feature and method against the champion's training "
            "data (psi: PSI; ks, chi_square: the test statistic), from the lifecycle store",
            ["feature", "method"],
            registry=r,
        )
        self.feature_drift_p = Gauge(
            "mlops_feature_drift_p_value",
            "p-value of the latest drift test per feature and method (ks, chi_square)",
            ["feature", "method"],
            registry=r,
        )
        self.decisions = DecisionCounts()
        r.register(self.decisions)
        self._champion_version: str | None = None
        self._metric_labels: set[tuple[str, str, str]] = set()
        self._drift_labels: set[tuple[str, str]] = set()

    def count_request(self, role: str, version: str | None, endpoint: str, code: int | str) -> None:
        """One answered request (`mlops_requests_total`)."""
        self.requests.labels(
            role=role, model_version=version or "none", endpoint=endpoint, code=str(code)
        ).inc()

    def observe_answer(
        self, role: str, version: str, latency_s: float, answer: Mapping[str, Any]
    ) -> None:
        """A model's successful answer: latencies, predicted classes, input warnings."""
        self.latency.labels(role=role, model_version=version).observe(latency_s)
        self.model_latency.labels(role=role, model_version=version).observe(
            answer["model_ms"] / 1000
        )
        counts: dict[str, int] = {}
        for label in answer["labels"]:
            counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
            self.predictions.labels(role=role, model_version=version, **{"class": label}).inc(n)
        if role == "champion":  # a mirrored copy's warnings were counted for the champion
            for (feature, kind), n in answer["warning_counts"].items():
                self.input_warnings.labels(feature=feature, kind=kind).inc(n)

    def set_bundle_mismatches(self, by_slot: Mapping[str, Mapping[str, str] | None]) -> None:
        """One sample per slot that refused a version for a bundle mismatch (see ModelHost)."""
        self.bundle_mismatch.clear()
        for slot, mismatch in by_slot.items():
            if mismatch:
                self.bundle_mismatch.labels(
                    slot=slot, model_version=mismatch["version"], file=mismatch["file"]
                ).set(1)

    def set_champion(self, version: str | None) -> None:
        """Point `mlops_champion_info` at `version` (one series at a time)."""
        if version == self._champion_version:
            return
        self.champion_info.clear()
        if version is not None:
            self.champion_info.labels(model_version=version).set(1)
        self._champion_version = version

    def set_model_metrics(self, served: Mapping[str, tuple[str, Mapping[str, float]]]) -> None:
        """Replace `mlops_model_metric` with {role: (version, {metric: value})}."""
        wanted = {
            (role, version, name): value
            for role, (version, metrics) in served.items()
            for name, value in metrics.items()
        }
        for labels in self._metric_labels - set(wanted):
            self.model_metric.remove(*labels)
        for (role, version, name), value in wanted.items():
            self.model_metric.labels(role=role, model_version=version, metric=name).set(value)
        self._metric_labels = set(wanted)

    def set_drift(self, rows: Mapping[tuple[str, str], tuple[float, float | None]]) -> None:
        """Replace the drift gauges with {(feature, method): (statistic, p_value)}."""
        for labels in self._drift_labels - set(rows):
            self.feature_drift.remove(*labels)
            with contextlib.suppress(KeyError):
                self.feature_drift_p.remove(*labels)
        for (feature, method), (statistic, p_value) in rows.items():
            if math.isnan(statistic):
                continue  # too few values to compute: no sample rather than a NaN one
            self.feature_drift.labels(feature=feature, method=method).set(statistic)
            if p_value is not None and not math.isnan(p_value):
                self.feature_drift_p.labels(feature=feature, method=method).set(p_value)
        self._drift_labels = {k for k, (v, _) in rows.items() if not math.isnan(v)}

    def set_prediction_log_size(
        self, rows: int, approx_bytes: int | None, max_rows: int | None = None
    ) -> None:
        """Set the prediction-log size gauges (from `LifecycleStore.prediction_log_stats()`)."""
        self.predlog_rows.set(rows)
        if approx_bytes is not None:
            self.predlog_bytes.set(approx_bytes)
        if max_rows is not None:
            self.predlog_max_rows.set(max_rows)

    def reject_labels(self, counts: Mapping[str, int]) -> None:
        """Count rejected labels, {reason: n}."""
        for reason, n in counts.items():
            if n:
                self.labels_rejected.labels(reason=reason).inc(n)

    def set_decision_counts(self, counts: Mapping[str, int]) -> None:
        """The store's decision counts behind `mlops_lifecycle_decisions_total`."""
        self.decisions.counts = dict(counts)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
