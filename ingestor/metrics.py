"""Prometheus metrics of one daemon: its own registry, counters read from state at scrape time.

Pull, not push: most figures (frames, klines, rejects per reason, batches, journal depth, per
stream lag, per connection reconnects) already live in ``PipelineState``, the feed connections
and the health probe, so a custom collector reads them when ``/metrics`` is scraped and the hot
path pays nothing. Only distributions need events, and the service reports them:

* ``observe_batch(size, flush_latency_s)`` once per stored batch;
* ``observe_commit_latency(seconds)`` with the kline-close-to-commit latency of every candle of a
  stored batch, as an array (bucketed with numpy in one call, not one call per candle);
* ``observe_positions_refresh(duration_s)`` once per positions refresh.

``Metrics(state, probe, rest=...)`` reads the pipeline's counters, the health probe
(``ingestor.probe``: connections, streams, queues) and the REST client's; parts the service
builds only while it runs (the positions loop and its mark-price feed) are handed over with
``watch``; their counters are read the same way.

Every ``Metrics`` owns a ``CollectorRegistry``; nothing touches prometheus-client's global one, so
two daemons (or tests) in one process never share a counter.
"""

from __future__ import annotations

import bisect
import math
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
    from ingestor.feed.markprice import MarkPriceSink
    from ingestor.feed.plan import Connection
    from ingestor.pacing import WeightPacer
    from ingestor.positions import PositionsStats
    from ingestor.probe import HealthProbe
    from ingestor.rest import RestClient
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
COMMIT_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
    2,
    3,
    5,
    10,
    30,
    60,
    300,
    3600,
)
REFRESH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _Histogram:
    """A histogram that takes a whole array per call (numpy), rendered as a metric family."""

    def __init__(self, name: str, doc: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.doc = doc
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds: list[float] = self.bounds.tolist()  # the same bounds, for bisect
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last: above every bound
        self.sum = 0.0

    def observe_one(self, value: float) -> None:
        """One value, without numpy's per-call cost (the per-batch figures)."""
        if math.isfinite(value):
            self.counts[bisect.bisect_left(self._bounds, value)] += 1
            self.sum += value

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
    """The daemon's metrics: counters read from ``state``, ``probe`` and ``rest`` at scrape time
    (each optional: a part not given publishes nothing), distributions from events."""

    #: The media type of :meth:`render`'s output.
    content_type = CONTENT_TYPE

    def __init__(
        self,
        state: PipelineState | None = None,
        probe: HealthProbe | None = None,
        *,
        rest: RestClient | None = None,
    ) -> None:
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
        self.state = state
        self.probe = probe
        self.rest = rest
        self.positions: PositionsStats | None = None
        self.mark_prices: MarkPriceSink | None = None
        self.mark_price_connections: Sequence[Connection] = ()
        self.registry.register(_Collector(self))

    def watch(
        self,
        *,
        rest: RestClient | None = None,
        positions: PositionsStats | None = None,
        mark_prices: MarkPriceSink | None = None,
        mark_price_connections: Sequence[Connection] = (),
    ) -> None:
        """Read these parts' counters at scrape time too (each once the service built it)."""
        if rest is not None:
            self.rest = rest
        if positions is not None:
            self.positions = positions
        if mark_prices is not None:
            self.mark_prices = mark_prices
            self.mark_price_connections = mark_price_connections

    # -- events the service reports -------------------------------------------------------------

    def observe_batch(self, size: int, flush_latency_s: float) -> None:
        self.batch_size.observe_one(size)
        self.flush_latency.observe_one(flush_latency_s)

    def observe_commit_latency(self, seconds: npt.ArrayLike) -> None:
        """Close-to-commit latency (real seconds) of each candle of one stored batch."""
        self.commit_latency.observe(seconds)

    def observe_positions_refresh(self, duration_s: float) -> None:
        self.positions_refresh.observe_one(duration_s)

    def record_readiness(self, ready: bool, db_up: bool) -> None:
        """The health server's latest verdict, published as gauges."""
        self.ready = ready
        self.db_up = db_up

    def render(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        out = generate_latest(self.registry)
        if self.probe is not None:
            out += _stream_lines(self.probe)
        return out


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
        yield from _positions_families(m.positions)
        yield _gauge("ingestor_ready", "1 when /readyz last answered 200.", float(m.ready))
        yield _gauge("ingestor_database_up", "1 when the database last answered.", float(m.db_up))
        if m.state is not None:
            yield from _state_families(m.state)
        if m.probe is not None:
            yield from _probe_families(m.probe)
        if m.rest is not None:
            yield _counter("ingestor_rest_requests", "REST requests sent.", m.rest.requests)
            if m.rest.pacer is not None:
                yield from _pacer_families(m.rest.pacer)
        if m.mark_prices is not None:
            yield from _mark_price_families(m.mark_prices, m.mark_price_connections)


def _pacer_families(p: WeightPacer) -> Iterator[Metric]:
    yield _gauge("ingestor_rest_weight_budget", "REST weight a minute it may use.", p.budget)
    yield _counter("ingestor_rest_weight_sent", "REST weight of the paced requests.", p.weight_sent)
    yield _counter(
        "ingestor_rest_paced_seconds", "Seconds paced requests waited for the budget.", p.waited_s
    )


def _state_families(s: PipelineState) -> Iterator[Metric]:
    yield _counter("ingestor_frames_received", "Websocket frames received.", s.frames)
    yield _counter("ingestor_closed_klines", "Closed klines received live.", s.closed_klines)
    yield _counter("ingestor_rest_klines", "Closed klines fetched from REST.", s.rest_klines)
    yield _counter(
        "ingestor_batches_stored",
        "Inserts into market_data (batches waiting together share one).",
        s.batches,
    )
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
    yield _counter(
        "ingestor_retention_delete_failures",
        "Failed deletes of expired candles by the daemon (embedded server; retried).",
        s.retention_delete_failures,
    )
    yield _counter("ingestor_database_failures", "Failed database operations.", s.db_failures)
    rejects = CounterMetricFamily(
        "ingestor_rejects", "Rejected input by reason.", labels=["reason"]
    )
    for reason, n in sorted(s.rejects.items()):
        rejects.add_metric([reason], n)
    yield rejects
    yield _counter(
        "ingestor_rejects_dropped",
        "Rejects counted but not stored (queue full).",
        s.rejects_dropped,
    )
    ignored = CounterMetricFamily(
        "ingestor_prices_ignored", "Price updates ignored, by reason.", labels=["reason"]
    )
    for reason, n in sorted(s.prices_ignored.items()):
        ignored.add_metric([reason], n)
    yield ignored
    permanent = CounterMetricFamily(
        "ingestor_permanent_errors",
        "Permanent failures (not retried until fixed) by component and reason.",
        labels=["component", "reason"],
    )
    for (component, reason), n in sorted(s.failures.counts.items()):
        permanent.add_metric([component, reason], n)
    yield permanent
    standing = GaugeMetricFamily(
        "ingestor_permanent_error",
        "1 per component blocked by a permanent failure now (the reason as a label).",
        labels=["component", "reason"],
    )
    for component, reason in s.failures.standing().items():
        standing.add_metric([component, reason], 1)
    yield standing
    yield _gauge("ingestor_journal_depth", "Batches journaled, not yet stored.", s.journal_depth)
    yield _counter(
        "ingestor_journal_syncs",
        "Journal fdatasyncs: of batches the database had not acknowledged in time, and at stops.",
        s.journal_syncs,
    )
    yield _counter(
        "ingestor_journal_damaged_bytes",
        "Torn or corrupt journal bytes set aside at startup (kept beside the journal).",
        s.journal_damaged_bytes,
    )
    yield _counter(
        "ingestor_journal_damaged_regions",
        "Stretches of torn or corrupt journal records set aside at startup.",
        s.journal_damaged_regions,
    )


def _probe_families(probe: HealthProbe) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "ingestor_feed_connected", "1 while the websocket connection is up.", labels=["connection"]
    )
    reconnects = CounterMetricFamily(
        "ingestor_feed_reconnects", "Reconnects of the websocket connection.", labels=["connection"]
    )
    rollovers = CounterMetricFamily(
        "ingestor_feed_rollovers",
        "Replacements of the websocket connection before the exchange's 24 h cut-off.",
        labels=["connection"],
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
        rollovers.add_metric(label, c.rollovers)
        if c.last_frame_age_s is not None:
            age.add_metric(label, c.last_frame_age_s)
    yield from (up, reconnects, rollovers, age)
    depth = GaugeMetricFamily("ingestor_queue_depth", "Items in a bounded queue.", labels=["queue"])
    cap = GaugeMetricFamily("ingestor_queue_capacity", "Bound of the queue.", labels=["queue"])
    for name, (n, bound) in sorted(probe.queues().items()):
        depth.add_metric([name], n)
        cap.add_metric([name], bound)
    yield from (depth, cap)
    yield _info(probe.version)


_STREAM_FAMILIES = (
    (
        "ingestor_stream_lag_seconds",
        "Exchange seconds since the first closed kline not yet stored closed (0: up to date).",
    ),
    (
        "ingestor_stream_last_stored_open_timestamp_seconds",
        "Open time of the newest stored kline of the stream.",
    ),
)


def _stream_lines(probe: HealthProbe) -> bytes:
    """The per-stream gauges as exposition text, vectorized: at thousands of streams
    prometheus-client's generic renderer costs ~20 us a sample, this ~1 us."""
    streams = probe.streams()
    n = len(streams)
    last = np.fromiter((st.last_stored_open_ms for st in streams), np.int64, n)
    tf = np.fromiter((st.timeframe_ms for st in streams), np.int64, n)
    stored = np.flatnonzero(last >= 0)
    lag = np.maximum(0, probe.now_ms() - (last + 2 * tf)) / 1000
    labels = []
    for i in stored.tolist():
        symbol, _, timeframe = streams[i].stream.partition(":")
        labels.append(f'{{symbol="{symbol}",timeframe="{timeframe}"}} ')
    out = []
    for (name, doc), values in zip(_STREAM_FAMILIES, (lag, last / 1000), strict=True):
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out.extend(
            f"{name}{label}{value!r}\n"
            for label, value in zip(labels, values[stored].tolist(), strict=True)
        )
    return "".join(out).encode()


#: PositionsStats counters: (field, name, help). Exported at 0 while the loop is off, so rules
#: and dashboards reading them always find them.
_POSITIONS_COUNTERS = (
    ("ticks", "ingestor_positions_ticks", "Positions refresh ticks started."),
    ("symbols_updated", "ingestor_positions_symbols_updated", "Symbol updates applied."),
    ("positions_matched", "ingestor_positions_matched", "Positions matched by the updates."),
    ("positions_modified", "ingestor_positions_modified", "Positions modified by the updates."),
    ("stale_skips", "ingestor_positions_stale_skips", "Prices too old to apply, per tick."),
    ("bad_prices", "ingestor_positions_bad_prices", "Prices not a positive number."),
    ("alerts_written", "ingestor_positions_alerts_written", "Margin alerts written."),
    ("update_errors", "ingestor_positions_update_errors", "Per-symbol updates that failed."),
    ("tick_errors", "ingestor_positions_tick_errors", "Ticks lost to a database error."),
    ("commands", "ingestor_positions_commands", "Database commands the loop issued."),
    ("censuses", "ingestor_positions_censuses", "Malformed-position censuses run."),
)


def _positions_families(stats: PositionsStats | None) -> Iterator[Metric]:
    for attr, name, doc in _POSITIONS_COUNTERS:
        yield _counter(name, doc, 0 if stats is None else getattr(stats, attr))
    malformed = GaugeMetricFamily(
        "ingestor_positions_malformed",
        "Positions the update skips as malformed, by reason (as of the last census).",
        labels=["reason"],
    )
    for reason, n in sorted((stats.malformed_skipped if stats else {}).items()):
        malformed.add_metric([reason], n)
    yield malformed


def _mark_price_families(
    sink: MarkPriceSink, connections: Sequence[Connection]
) -> Iterator[Metric]:
    yield _counter("ingestor_markprice_frames", "Mark-price frames received.", sink.frames)
    yield _counter("ingestor_markprice_updates", "Mark prices put in the book.", sink.updates)
    rejects = CounterMetricFamily(
        "ingestor_markprice_rejects", "Rejected mark-price frames by reason.", labels=["reason"]
    )
    for reason, n in sorted(sink.rejects.items()):
        rejects.add_metric([reason], n)
    yield rejects
    up = GaugeMetricFamily(
        "ingestor_markprice_connected",
        "1 while the mark-price connection is up.",
        labels=["connection"],
    )
    reconnects = CounterMetricFamily(
        "ingestor_markprice_reconnects",
        "Reconnects of the mark-price connection.",
        labels=["connection"],
    )
    rollovers = CounterMetricFamily(
        "ingestor_markprice_rollovers",
        "Replacements of the mark-price connection before the 24 h cut-off.",
        labels=["connection"],
    )
    for c in connections:
        label = [str(c.index)]
        up.add_metric(label, float(c.state.connected))
        reconnects.add_metric(label, c.state.reconnects)
        rollovers.add_metric(label, c.state.rollovers)
    yield from (up, reconnects, rollovers)


def _info(version: str) -> GaugeMetricFamily:
    info = GaugeMetricFamily("ingestor_build_info", "Version of the daemon.", labels=["version"])
    info.add_metric([version], 1)
    return info
