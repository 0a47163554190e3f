"""The prediction-log size, spill and rejected-label metrics, as /metrics renders them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import ServingMetrics


def _samples(metrics: ServingMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_size_gauges_spill_counters_and_rejected_labels_render() -> None:
    m = ServingMetrics()
    m.set_prediction_log_size(4_100_000, 2_000_000_000, 5_000_000)
    m.set_prediction_log_size(4_200_000, None)  # no byte figure: the last one stays
    m.reject_labels({"unknown_id": 3, "conflict": 0})
    m.reject_labels({"unknown_id": 2, "unknown_class": 1})
    m.predlog_spilled.inc(7)
    m.predlog_replayed.inc(7)
    got = _samples(m)
    assert got[("mlops_prediction_log_rows", ())] == 4_200_000
    assert got[("mlops_prediction_log_bytes", ())] == 2_000_000_000
    assert got[("mlops_prediction_log_max_rows", ())] == 5_000_000
    assert got[("mlops_labels_rejected_total", (("reason", "unknown_id"),))] == 5
    assert got[("mlops_labels_rejected_total", (("reason", "unknown_class"),))] == 1
    assert ("mlops_labels_rejected_total", (("reason", "conflict"),)) not in got
    assert got[("mlops_prediction_log_spilled_total", ())] == 7
    assert got[("mlops_prediction_log_replayed_total", ())] == 7
