"""The production ``Service``, assembled from the configuration: every part made here, once.

``build_service(config)`` is what ``ingestor run`` starts. Its keyword arguments replace one
part each, for tests and benchmarks: ``clock`` (an ``ExchangeClock`` a test drives),
``store`` (a candle store made on the opened database, e.g. ``store.sink.NullStore``),
``connect`` (the websocket client). The state objects are made first, the health probe from
them (``ingestor.probe``), the metrics and the health server from the probe, and the service
from all of them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ingestor.config import Config
from ingestor.failures import Failures
from ingestor.feed.clients import connection_class
from ingestor.feed.limits import AttemptBudget
from ingestor.feed.plan import Connection, ConnectionFactory, FrameSink
from ingestor.health import HealthServer
from ingestor.latest import LatestCandles
from ingestor.metrics import Metrics
from ingestor.pacing import BINANCE_WEIGHT_LIMIT_1M, WeightPacer, share_of
from ingestor.pipeline import GateQueue
from ingestor.probe import service_probe
from ingestor.rest import DAEMON_IN_FLIGHT, ExchangeClock, RestClient
from ingestor.sdnotify import Notifier
from ingestor.service import Exchange, Observed, Service, Storage, Telemetry
from ingestor.shard import owned_symbols, parse_shard
from ingestor.state import PipelineState
from ingestor.store.database import Database
from ingestor.store.journal import Journal
from ingestor.store.sink import CandleSink
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamRegistry

__all__ = ["StoreFactory", "build_service", "websocket_factory"]

#: Makes the candle store on the opened database: ``(db, registry, state) -> CandleSink``.
StoreFactory = Callable[[AsyncDatabase[dict[str, Any]], StreamRegistry, PipelineState], CandleSink]


def _candle_store(
    db: AsyncDatabase[dict[str, Any]], registry: StreamRegistry, state: PipelineState
) -> CandleSink:
    return CandleStore(db, registry.keys, on_state=state.set_db_ok, failures=state.failures)


def websocket_factory(
    failures: Failures, kind: str, max_age_s: float = 23.5 * 3600, client: str = "websockets"
) -> ConnectionFactory:
    """Connections of one kind (``feed``, ``mark-price``) on websocket ``client``
    (``exchange.ws_client``): one attempt budget between them, failures reported as
    ``<kind> connection <index>``, replaced after ``max_age_s``."""
    budget = AttemptBudget()
    cls = connection_class(client)

    def connect(index: int, url: str, sink: FrameSink) -> Connection:
        return cls(
            index,
            url,
            sink,
            budget,
            max_age_s=max_age_s,
            failures=failures,
            component=f"{kind} connection {index}",
        )

    return connect


def build_service(
    config: Config,
    *,
    clock: ExchangeClock | None = None,
    store: StoreFactory = _candle_store,
    connect: Callable[[Failures, str, float, str], ConnectionFactory] = websocket_factory,
) -> Service:
    ing, exchange = config.ingest, config.exchange
    shard = parse_shard(config.service.shard, socket.gethostname())
    registry = StreamRegistry(owned_symbols(ing.symbols, *shard), list(ing.timeframes))
    keys = registry.keys
    state = PipelineState(len(keys))
    queue: GateQueue = asyncio.Queue(ing.queue_size)
    observed = Observed(
        shard=shard,
        registry=registry,
        state=state,
        feed={},
        caught_up=asyncio.Event(),
        queue=queue,
        latest=LatestCandles([str(k) for k in keys]),
    )
    clock = clock or ExchangeClock(exchange.time_scale)
    # paced under max_weight_share of the limit the exchange advertises (Binance's until then)
    pacer = WeightPacer(share_of(BINANCE_WEIGHT_LIMIT_1M, exchange.max_weight_share))
    rest = RestClient(
        exchange.rest_url, exchange.request_timeout_s, clock, pacer, max_in_flight=DAEMON_IN_FLIGHT
    )
    database = Database(config)
    probe = service_probe(
        config,
        keys,
        state,
        feed=observed.feed,
        caught_up=observed.caught_up,
        now_ms=clock.now_ms,
        db_ok=database.ping,
        queues=lambda: {"klines": (queue.qsize(), queue.maxsize)},
        candles=observed.latest.rows,
    )
    metrics = Metrics(state, probe, rest=rest)
    return Service(
        config,
        observed,
        Exchange(
            clock,
            rest,
            klines=connect(
                state.failures, "feed", 23.5 * 3600 / exchange.time_scale, exchange.ws_client
            ),
            # the mark-price feed keeps Binance's real 24 h cut-off (not scaled)
            mark_prices=connect(state.failures, "mark-price", 23.5 * 3600, exchange.ws_client),
        ),
        Storage(
            database,
            lambda db: store(db, registry, state),
            Journal(Path(config.service.data_dir) / "journal", [str(k) for k in keys]),
        ),
        Telemetry(
            HealthServer(config.health.host, config.health.port, probe, metrics),
            metrics,
            Notifier(),
        ),
    )
