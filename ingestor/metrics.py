"""Prometheus metrics of one daemon: its own registry, counters read from state at scrape time.

Pull, not push: most figures (frames, klines, rejects per reason, batches, journal depth, per
stream lag, per connection reconnects) already live in ``PipelineState``, the feed connections
and the health probe, so a custom collector reads them when ``/metrics`` is scraped and the hot
path pays nothing. Only distributions need events, and the service reports them:

* ``observe_batch(size, flush_latency_s)`` once per stored batch;
* ``observe_commit_latency(seconds)`` with the kline-close-to-commit latency of every candle of a
  stored batch, as an array (bucketed with numpy in one call, not one call per candle);
* ``observe_positions_refresh(duration_s)`` once per positions refresh.

Every ``Metrics`` owns a ``CollectorRegistry``; nothing touches prometheus-client's global one, so
two daemons (or tests) in one process never share a counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ingestor.health import HealthProbe
    from ingestor.state import PipelineState

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "COMMIT_LATENCY_BUCKETS",
    "CONTENT_TYPE",
    "FLUSH_LATENCY_BUCKETS",
    "REFRESH_BUCKETS",
    "Metrics",
]

#: The classic text format every Prometheus (2.x and 3.x) reads; our names need no escaping.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
FLUSH_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
COMMIT_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 3600)
REFRESH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _Histogram:
    """A histogram that takes a whole array per call (numpy), rendered as a metric family."""

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last: above every bound
        self.sum = 0.0

    def observe(self, values: npt.ArrayLike) -> None:
        arr = np.asarray(values, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if not arr.size:
            return
        # Bucket i counts values <= bounds[i] (Prometheus' "le"); side="left" gives exactly that.
        idx = np.searchsorted(self.bounds, arr, side="left")
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.sum += float(arr.sum())

    def family(self) -> HistogramMetricFamily:
        cum = np.cumsum(self.counts)
        buckets = [
            (_le(b), float(c)) for b, c in zip(self.bounds.tolist(), cum.tolist(), strict=False)
        ]
        buckets.append(("+Inf", float(cum[-1])))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """The daemon's metrics; ``bind(state, probe)`` once the service has built them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_size = _Histogram(
            "ingestor_batch_size", "Candles per stored batch.", BATCH_SIZE_BUCKETS
        )
        self.flush_latency = _Histogram(
            "ingestor_flush_latency_seconds",
            "Time to store one batch in the database (insert, retries included).",
            FLUSH_LATENCY_BUCKETS,
        )
        self.commit_latency = _Histogram(
            "ingestor_commit_latency_seconds",
            "From a kline's close (exchange time) to its acknowledged insert, per candle.",
            COMMIT_LATENCY_BUCKETS,
        )
        self.positions_refresh = _Histogram(
            "ingestor_positions_refresh_seconds",
            "Duration of one positions refresh (the count is the number of refreshes).",
            REFRESH_BUCKETS,
        )
        self.ready = False
        self.db_up = False
        self.state: PipelineState | None = None
        self.probe: HealthProbe | None = None
        self.registry.register(_Collector(self))

    def bind(self, state: PipelineState, probe: HealthProbe) -> None:
        """Read counters from ``state`` and connections/streams from ``probe`` at scrape time."""
        self.state = state
        self.probe = probe

    # -- events the service reports -------------------------------------------------------------

    def observe_batch(self, size: int, flush_latency_s: float) -> None:
        self.batch_size.observe([size])
        self.flush_latency.observe([flush_latency_s])

    def observe_commit_latency(self, seconds: npt.ArrayLike) -> None:
        """Close-to-commit latency (real seconds) of each candle of one stored batch."""
        self.commit_latency.observe(seconds)

    def observe_positions_refresh(self, duration_s: float) -> None:
        self.positions_refresh.observe([duration_s])

    def record_readiness(self, ready: bool, db_up: bool) -> None:
        """The health server's latest verdict, published as gauges."""
        self.ready = ready
        self.db_up = db_up

    def render(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        return generate_latest(self.registry)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _Collector(Collector):
    """Builds every family from the bound state, probe and histograms at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.m
        yield from (m.batch_size.family(), m.flush_latency.family())
        yield from (m.commit_latency.family(), m.positions_refresh.family())
        yield _gauge("ingestor_ready", "1 when /readyz last answered 200.", float(m.ready))
        yield _gauge("ingestor_database_up", "1 when the database last answered.", float(m.db_up))
        if m.state is not None:
            yield from _state_families(m.state)
        if m.probe is not None:
            yield from _probe_families(m.probe)


def _state_families(s: PipelineState) -> Iterator[Metric]:
    yield _counter("ingestor_frames_received", "Websocket frames received.", s.frames)
    yield _counter("ingestor_closed_klines", "Closed klines received live.", s.closed_klines)
    yield _counter("ingestor_rest_klines", "Closed klines fetched from REST.", s.rest_klines)
    yield _counter("ingestor_batches_stored", "Batches stored.", s.batches)
    yield _counter("ingestor_candles_inserted", "Candles inserted.", s.inserted)
    yield _counter(
        "ingestor_seam_duplicates", "Live finals of klines REST delivered.", s.seam_duplicates
    )
    yield _counter("ingestor_final_probes", "REST probes for late finals.", s.final_probes)
    yield _counter("ingestor_healed", "Lost klines restored at startup.", s.healed)
    yield _counter(
        "ingestor_expired_skipped", "REST klines past the retention, not stored.", s.expired_skipped
    )
    yield _counter(
        "ingestor_expired_deleted", "Expired candles the daemon deleted.", s.expired_deleted
    )
    yield _counter("ingestor_database_failures", "Failed database operations.", s.db_failures)
    rejects = CounterMetricFamily(
        "ingestor_rejects", "Rejected input by reason.", labels=["reason"]
    )
    for reason, n in sorted(s.rejects.items()):
        rejects.add_metric([reason], n)
    yield rejects
    yield _gauge("ingestor_journal_depth", "Batches journaled, not yet stored.", s.journal_depth)


def _probe_families(probe: HealthProbe) -> Iterator[Metric]:
    now_ms = probe.now_ms()
    lag = GaugeMetricFamily(
        "ingestor_stream_lag_seconds",
        "Exchange seconds since the first closed kline not yet stored closed (0: up to date).",
        labels=["symbol", "timeframe"],
    )
    last = GaugeMetricFamily(
        "ingestor_stream_last_stored_open_timestamp_seconds",
        "Open time of the newest stored kline of the stream.",
        labels=["symbol", "timeframe"],
    )
    for st in probe.streams():
        symbol, _, tf = st.stream.partition(":")
        lag_ms = st.lag_ms(now_ms)
        if lag_ms is not None:
            lag.add_metric([symbol, tf], lag_ms / 1000)
            last.add_metric([symbol, tf], st.last_stored_open_ms / 1000)
    yield lag
    yield last
    up = GaugeMetricFamily(
        "ingestor_feed_connected", "1 while the websocket connection is up.", labels=["connection"]
    )
    reconnects = CounterMetricFamily(
        "ingestor_feed_reconnects", "Reconnects of the websocket connection.", labels=["connection"]
    )
    age = GaugeMetricFamily(
        "ingestor_feed_last_frame_age_seconds",
        "Seconds since the connection's last frame.",
        labels=["connection"],
    )
    for c in probe.connections():
        label = [str(c.index)]
        up.add_metric(label, float(c.connected))
        reconnects.add_metric(label, c.reconnects)
        if c.last_frame_age_s is not None:
            age.add_metric(label, c.last_frame_age_s)
    yield from (up, reconnects, age)
    depth = GaugeMetricFamily("ingestor_queue_depth", "Items in a bounded queue.", labels=["queue"])
    cap = GaugeMetricFamily("ingestor_queue_capacity", "Bound of the queue.", labels=["queue"])
    for name, (n, bound) in sorted(probe.queues().items()):
        depth.add_metric([name], n)
        cap.add_metric([name], bound)
    yield from (depth, cap)
    yield _info(probe.version)


def _info(version: str) -> GaugeMetricFamily:
    info = GaugeMetricFamily("ingestor_build_info", "Version of the daemon.", labels=["version"])
    info.add_metric([version], 1)
    return info
