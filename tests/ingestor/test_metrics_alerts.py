"""Margin alerts the positions loop writes are published on /metrics (the dashboard reads it)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ingestor.metrics import Metrics


def _value(metrics: Metrics, name: str) -> float:
    samples = {
        s.name: s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }
    return samples[name]


def test_alerts_written_per_refresh_add_up() -> None:
    m = Metrics()
    assert _value(m, "ingestor_positions_alerts_written_total") == 0
    m.observe_positions_refresh(0.01, alerts=3)
    m.observe_positions_refresh(0.02)
    m.observe_positions_refresh(0.01, alerts=2)
    assert _value(m, "ingestor_positions_alerts_written_total") == 5
    assert _value(m, "ingestor_positions_refresh_seconds_count") == 3
