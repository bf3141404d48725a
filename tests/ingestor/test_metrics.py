"""Counters the daemon's parts keep are read at scrape time and published on /metrics (names
and values); a positions counter is exported at 0 while the loop is off (the dashboard reads
``ingestor_positions_alerts_written_total``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.feed.markprice import MarkPriceSink
from ingestor.metrics import COMMIT_LATENCY_BUCKETS, Metrics, _Histogram
from ingestor.pacing import WeightPacer
from ingestor.positions import PositionsStats
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock, RestClient
from ingestor.state import PipelineState, PriceBook


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(metrics.render().decode())
        for s in fam.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics)[name, tuple(sorted(labels.items()))]


def test_positions_counters_come_from_the_loops_stats() -> None:
    m = Metrics()
    assert _value(m, "ingestor_positions_alerts_written_total") == 0  # loop not running yet
    stats = PositionsStats()
    m.watch(positions=stats)
    stats.alerts_written, stats.ticks, stats.tick_errors = 5, 7, 1
    stats.malformed_skipped["bad_side"] = 2
    for seconds in (0.01, 0.02, 0.01):
        m.observe_positions_refresh(seconds)
    assert _value(m, "ingestor_positions_alerts_written_total") == 5
    assert _value(m, "ingestor_positions_ticks_total") == 7
    assert _value(m, "ingestor_positions_tick_errors_total") == 1
    assert _value(m, "ingestor_positions_malformed", reason="bad_side") == 2
    assert _value(m, "ingestor_positions_refresh_seconds_count") == 3


async def test_mark_price_counters_are_summed_over_connections() -> None:
    m = Metrics()
    sink = MarkPriceSink(PriceBook())
    conns = [FeedConnection(i, "ws://x/market", sink, AttemptBudget()) for i in (1000, 1200)]
    m.watch(mark_prices=sink, mark_price_connections=conns)
    assert await sink(b'{"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1.5"}') is False
    assert await sink(b"{") is False
    conns[1].state.rollovers = 2
    assert _value(m, "ingestor_markprice_frames_total") == 2
    assert _value(m, "ingestor_markprice_updates_total") == 1
    assert _value(m, "ingestor_markprice_rejects_total", reason="malformed_json") == 1
    assert _value(m, "ingestor_markprice_rollovers_total", connection="1200") == 2
    assert _value(m, "ingestor_markprice_reconnects_total", connection="1000") == 0


def test_a_reject_whose_copy_is_dropped_is_counted() -> None:
    state = PipelineState(1)
    sink = RejectSink(state, maxsize=1)
    sink.reject("a", "malformed_json")
    sink.reject("b", "malformed_json")  # the queue is full: counted, its copy dropped
    assert sink.dropped == state.rejects_dropped == 1
    assert state.rejects["malformed_json"] == 2


def test_rest_requests_are_counted() -> None:
    m = Metrics()
    rest = RestClient("http://127.0.0.1:1", 1.0, ExchangeClock())
    rest.requests = 3
    m.watch(rest=rest)
    assert _value(m, "ingestor_rest_requests_total") == 3
    assert "ingestor_rest_weight_budget" not in m.render().decode()  # unpaced: no pacer figures


async def test_the_pacers_figures_are_published() -> None:
    m = Metrics()
    pacer = WeightPacer(3000)
    await pacer.acquire(2)
    await pacer.release(2, None)
    m.watch(rest=RestClient("http://127.0.0.1:1", 1.0, ExchangeClock(), pacer))
    assert _value(m, "ingestor_rest_weight_budget") == 3000
    assert _value(m, "ingestor_rest_weight_sent_total") == 2
    assert _value(m, "ingestor_rest_paced_seconds_total") == pacer.waited_s


_VALUES = st.one_of(
    st.floats(-1e9, 1e9),
    st.sampled_from([0.05, 0.1, 1.0, 0.0, -1.0, math.nan, math.inf, -math.inf]),
)


@given(st.lists(_VALUES, max_size=30))
def test_one_value_at_a_time_counts_as_the_array_path(values: list[float]) -> None:
    """``observe_one`` (per-batch figures) and ``observe`` (arrays) fill the same buckets; a
    value on a bound counts in that bound's bucket (Prometheus' ``le``)."""
    one = _Histogram("h", "doc", COMMIT_LATENCY_BUCKETS)
    many = _Histogram("h", "doc", COMMIT_LATENCY_BUCKETS)
    for v in values:
        one.observe_one(v)
    many.observe(values)
    assert one.counts.tolist() == many.counts.tolist()
    assert one.sum == pytest.approx(many.sum, nan_ok=True)
