"""The supervisor: one TaskGroup owning every task of the daemon, assembled from given parts.

Tasks and the bounded queues between them (one module each)::

    feed/connection x N --(decode, PriceBook)--> klines queue --> gate (sequence, REST gap fill,
    batch, enrich) --> store/spool (write-ahead journal --> store/writer --> market_data)
    beside them: gate.watch_finals (late finals -> Probe), rejects, positions, health, sd_notify,
    the expirer (retention on the embedded server)

The service is given its parts (``ingestor.assemble.build_service`` makes the production ones
from the configuration): its state objects (:class:`Observed`, which the health probe reads),
the exchange (clock, REST client, websocket connection factories), the storage (database,
candle store, journal) and the telemetry (health server, metrics, sd_notify).

``async with service:`` starts the health endpoint (so it answers during startup) and closes it
last; ``await service.run(stop)`` is three steps, as uvicorn's ``Server.serve``:

* **startup**: database, schema, REST clock, symbols listed, retention, journal replay, warm-up
  (``warmup.restore_streams``); then the tasks;
* **main loop**: until the ``stop`` event (set on SIGTERM/SIGINT) or a task ends;
* **shutdown**: the feed stops, the gate drains what was received and flushes its batch, the
  spool stores every batch (or leaves them journaled if the database is down), then the
  database client closes.

A task that crashes cancels the others and the exception propagates (exit code non-zero); a
task that ends on its own is a bug and is raised as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.batch import Batcher
from ingestor.candles import Candles
from ingestor.config import Config, parse_key_pattern
from ingestor.decode import Decoder, FrameKind
from ingestor.enrich import Enricher
from ingestor.errors import ConfigError, DecodeError
from ingestor.feed.connection import ConnectionState
from ingestor.feed.markprice import MarkPriceSink
from ingestor.feed.plan import ConnectionFactory, kline_urls, mark_price_urls
from ingestor.gate import Gate
from ingestor.health import HealthServer
from ingestor.history import History
from ingestor.latest import LatestCandles
from ingestor.metrics import Metrics
from ingestor.pacing import share_of
from ingestor.pipeline import GateQueue, Live, Stop, Tracks
from ingestor.positions import PositionsLoop
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock, RestClient
from ingestor.sdnotify import Notifier
from ingestor.sequence import Sequencer
from ingestor.state import MAX_AHEAD_MS, PipelineState, PriceBook
from ingestor.store.database import Database
from ingestor.store.journal import Journal
from ingestor.store.retention import Expirer, Retention, daemon_expires, read_retention
from ingestor.store.schema import ensure_schema
from ingestor.store.sink import CandleSink
from ingestor.store.spool import Spool
from ingestor.streams import StreamKey, StreamRegistry
from ingestor.validate import Rejected
from ingestor.warmup import restore_streams

__all__ = ["Exchange", "Observed", "Service", "Storage", "Telemetry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Observed:
    """The service's state objects: its stages update them, the health probe reads them."""

    shard: tuple[int, int]  # (index, count): this daemon ingests the symbols its shard owns
    registry: StreamRegistry  # this shard's streams (stream id = index)
    state: PipelineState  # the counters and each stream's newest stored open time
    feed: dict[int, ConnectionState]  # each kline connection's state, filled as they are made
    caught_up: asyncio.Event  # the startup catch-up from REST is done
    queue: GateQueue  # the main queue, feed -> gate
    latest: LatestCandles  # each stream's newest stored candle, for /status


@dataclass(frozen=True, slots=True)
class Exchange:
    """Binance (or the simulator): its clock, its REST API (opened at startup), and the
    factories of the kline and mark-price websocket connections."""

    clock: ExchangeClock
    rest: RestClient
    klines: ConnectionFactory
    mark_prices: ConnectionFactory


@dataclass(frozen=True, slots=True)
class Storage:
    """The database (opened at startup), the candle store made on it, the write-ahead journal."""

    database: Database
    store: Callable[[AsyncDatabase[dict[str, Any]]], CandleSink]
    journal: Journal


@dataclass(frozen=True, slots=True)
class Telemetry:
    health: HealthServer  # serves the probe made from ``Observed`` and ``metrics``
    metrics: Metrics
    notifier: Notifier


@dataclass(frozen=True, slots=True)
class _Started:
    """What startup opened and built, handed to the main loop and shutdown."""

    db: AsyncDatabase[dict[str, Any]]
    spool: Spool
    gate: Gate
    expirer: Expirer | None  # None: the database server expires candles itself


@dataclass(frozen=True, slots=True)
class _Tasks:
    stop: asyncio.Task[Any]
    writer: asyncio.Task[None]
    gate: asyncio.Task[None]
    rejects: asyncio.Task[None]
    feed: asyncio.Task[None]
    beside: tuple[asyncio.Task[None], ...]  # finals watcher, positions, watchdog, expirer

    def essential(self) -> set[asyncio.Task[Any]]:
        """Tasks that never end before ``stop``: one that does ends the service."""
        return {self.stop, self.writer, self.gate, self.rejects, self.feed}


class Service:
    """``async with Service(...) as svc: await svc.run(stop_event)``."""

    def __init__(
        self,
        config: Config,
        observed: Observed,
        exchange: Exchange,
        storage: Storage,
        telemetry: Telemetry,
    ) -> None:
        self.config = config
        self.observed = observed
        self.exchange = exchange
        self.storage = storage
        self.telemetry = telemetry
        ing = config.ingest
        self.keys = observed.registry.keys
        self.state = observed.state
        self.latest = observed.latest
        self.caught_up = observed.caught_up
        self.clock = exchange.clock
        self.journal = storage.journal
        self.health = telemetry.health
        self.metrics = telemetry.metrics
        self.notifier = telemetry.notifier
        self.prices = self._price_book()
        self.decoder = Decoder(observed.registry, self.clock.now_ms)
        self.sequencer = Sequencer([k.interval_ms for k in self.keys])
        self.enricher = Enricher(len(self.keys))
        self.batcher = Batcher(
            ing.max_batch, ing.linger_ms / 1000, intervals=[k.interval_ms for k in self.keys]
        )
        self.rejects = RejectSink(self.state, ing.queue_size)
        self.state.journal_damaged_bytes = self.journal.damaged_bytes
        self.state.journal_damaged_regions = self.journal.damaged_regions
        self.ready = asyncio.Event()  # every task started

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        """Health first (so it answers during startup), and closed last."""
        try:
            await self.health.start()
        except BaseException:
            self.journal.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.health.stop()
        finally:
            # Batches not yet durable become durable; a fully stored journal is removed.
            self.journal.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and flush; raises if any task crashes."""
        async with contextlib.AsyncExitStack() as resources:
            started = await self._startup(resources)
            async with asyncio.TaskGroup() as tg:
                tasks = self._start_tasks(tg, started, stop)
                if await self._main_loop(tasks):
                    await self._shutdown(tasks)
        log.info(
            "stopped: %d candles stored (%d from REST), %d rejects",
            self.state.inserted,
            self.state.rest_klines,
            sum(self.state.rejects.values()),
        )

    # -- 1. startup ----------------------------------------------------------------------------

    async def _startup(self, resources: contextlib.AsyncExitStack) -> _Started:
        """Open the database and the exchange, then bring every stream up to its watermark."""
        log.info("shard %d/%d: %d streams", *self.observed.shard, len(self.keys))
        db = await self._open_database(resources)
        store = self.storage.store(db)
        rest = await resources.enter_async_context(self.exchange.rest)
        await rest.sync_time()
        await self._check_symbols(rest)
        retention = await read_retention(db)
        expirer = self._expirer(db, retention)
        ing = self.config.ingest
        spool = Spool(
            self.journal,
            store,
            ing.queue_size // 64,
            self._stored,
            sync_after_s=ing.journal_sync_after_ms / 1000,
        )

        def emit(batch: Candles) -> None:
            spool.append(batch)
            self._journal_counts()

        history = History(rest, self.keys, self._quarantine, retention)
        tracks = Tracks(self.keys, self.sequencer, self.enricher, self.state, history, emit)
        await spool.replay()
        if expirer is not None:
            await expirer.expire_once()
        ing = self.config.ingest
        await restore_streams(tracks, store, ing.warmup_candles, ing.startup_concurrency)
        gate = Gate(tracks, self.batcher, self.rejects, self.caught_up, ing.startup_concurrency)
        return _Started(db, spool, gate, expirer)

    async def _open_database(
        self, resources: contextlib.AsyncExitStack
    ) -> AsyncDatabase[dict[str, Any]]:
        cfg = self.config.mongodb
        db = await resources.enter_async_context(self.storage.database)
        await ensure_schema(
            db,
            failures=self.state.failures,
            shard_key=parse_key_pattern(cfg.shard_key) if cfg.shard_key else (),
        )
        return db

    async def _check_symbols(self, rest: RestClient) -> None:
        listed = await rest.exchange_symbols()
        missing = [s for s in self.config.ingest.symbols if s not in listed]
        if missing:
            raise ConfigError("ingest.symbols", f"not listed by the exchange: {', '.join(missing)}")
        if rest.pacer is not None:
            if rest.weight_limit_1m is not None:
                # the exchange's own limit (Binance's is 6,000 today; it has changed before)
                share = self.config.exchange.max_weight_share
                rest.pacer.resize(share_of(rest.weight_limit_1m, share))
            log.info("REST weight budget: %d per minute", rest.pacer.budget)

    def _expirer(self, db: AsyncDatabase[dict[str, Any]], retention: Retention) -> Expirer | None:
        expirer = None
        if daemon_expires(self.config.mongodb.expiry, self.config.mongodb.uri):
            expirer = Expirer(
                db, self.keys, retention, on_deleted=self._deleted, on_failed=self._delete_failed
            )
        log.info(
            "retention: %s; expired candles deleted by %s",
            "none" if retention.expire_after_s is None else f"{retention.expire_after_s} s",
            "the daemon" if expirer is not None else "the server",
        )
        return expirer

    def _start_tasks(self, tg: asyncio.TaskGroup, started: _Started, stop: asyncio.Event) -> _Tasks:
        queue = self.observed.queue
        grace_ms = self.config.ingest.final_grace_ms
        tasks = _Tasks(
            writer=tg.create_task(started.spool.run(), name="writer"),
            gate=tg.create_task(self._gate(started.gate, started.spool), name="gate"),
            rejects=tg.create_task(self.rejects.run(started.db), name="rejects"),
            feed=tg.create_task(self._feed(), name="feed"),
            beside=(
                tg.create_task(
                    started.gate.watch_finals(queue, self.clock, grace_ms), name="finals-watcher"
                ),
                tg.create_task(self._positions(started.db), name="positions"),
                tg.create_task(self.notifier.watchdog_loop(), name="watchdog"),
                tg.create_task(self._expire(started.expirer), name="expirer"),
            ),
            stop=tg.create_task(stop.wait(), name="stop"),
        )
        self.state.started = True
        self.ready.set()
        self.notifier.ready()
        return tasks

    # -- 2. main loop --------------------------------------------------------------------------

    async def _main_loop(self, tasks: _Tasks) -> bool:
        """Wait for ``stop`` (True) or an essential task's end. A failed task's error is raised
        by the TaskGroup on exit (False); one that merely returned is a bug: never die quietly."""
        done, _ = await asyncio.wait(tasks.essential(), return_when=asyncio.FIRST_COMPLETED)
        if tasks.stop in done:
            return True
        ended = done.pop()
        if ended.cancelled() or ended.exception() is None:
            raise RuntimeError(f"task {ended.get_name()} ended unexpectedly")
        return False

    # -- 3. shutdown ---------------------------------------------------------------------------

    async def _shutdown(self, tasks: _Tasks) -> None:
        """The feed first, then drain the gate and flush the spool within the shutdown timeout;
        then the rejects."""
        log.info("stopping: feed first, then drain and flush")
        self.notifier.stopping()
        tasks.feed.cancel()
        for task in tasks.beside:
            task.cancel()
        try:
            async with asyncio.timeout(self.config.service.shutdown_timeout_s - 1.5):
                await self.observed.queue.put(Stop.STOP)
                await tasks.gate
                await tasks.writer
        except TimeoutError:
            # Everything received is in the fsync'd journal: the next start stores it.
            log.warning(
                "database did not take everything in time; %d batches stay "
                "journaled for the next start",
                len(self.journal),
            )
            tasks.gate.cancel()
            tasks.writer.cancel()
        await self.rejects.close()
        try:
            async with asyncio.timeout(1.0):
                await tasks.rejects
        except TimeoutError:
            tasks.rejects.cancel()

    # -- the tasks -----------------------------------------------------------------------------

    async def _gate(self, gate: Gate, spool: Spool) -> None:
        """The gate until the feed's queue ends; then the spool learns no more batches come."""
        await gate.run(self.observed.queue)
        spool.close()

    async def _expire(self, expirer: Expirer | None) -> None:
        """The embedded server's retention (see ``store.retention``); nothing on MongoDB."""
        if expirer is not None:
            await asyncio.sleep(expirer.every_s)  # ran once before the warm-up
            await expirer.run()

    async def _feed(self) -> None:
        cfg = self.config.exchange
        names = [k.stream_name for k in self.keys]
        async with asyncio.TaskGroup() as tg:
            for index, url in enumerate(kline_urls(cfg.ws_url, names, cfg.streams_per_connection)):
                conn = self.exchange.klines(index, url, self._on_frame)
                self.observed.feed[index] = conn.state
                tg.create_task(conn.run(), name=f"feed-{index}")
                await asyncio.sleep(0.05)  # stagger the first connects

    async def _on_frame(self, raw: str | bytes) -> bool:
        self.state.frames += 1
        try:
            frame = self.decoder.decode(raw)
        except DecodeError as exc:
            self.rejects.reject(raw, exc.reason, exc.detail)
            return False
        if frame.kind is FrameKind.SHUTDOWN:
            return True
        if frame.kind is FrameKind.KLINE:
            self.prices.update(frame.symbol, frame.price, frame.event_time)
            if frame.closed is not None:
                self.state.closed_klines += 1
                queue = self.observed.queue
                if queue.full():  # the gate is behind: wait (the feed stops reading)
                    await queue.put(Live(frame.closed, raw))
                else:
                    queue.put_nowait(Live(frame.closed, raw))
        return False

    async def _positions(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        """Keep open positions priced from the feed (optionally from futures mark prices)."""
        cfg = self.config.positions
        if not cfg.enabled:
            return
        symbols = sorted({k.symbol for k in self.keys})  # this shard's symbols
        book = self.prices
        async with asyncio.TaskGroup() as tg:
            if cfg.mark_prices:
                book = self._price_book()
                sink = MarkPriceSink(book)  # one for all mark-price connections: one set of counts
                marks = [
                    self.exchange.mark_prices(index, url, sink)
                    for index, url in enumerate(mark_price_urls(cfg.futures_ws_url, symbols))
                ]
                for conn in marks:
                    tg.create_task(conn.run(), name=f"markprice-{conn.index}")
                self.metrics.watch(mark_prices=sink, mark_price_connections=marks)
            loop = PositionsLoop(
                db,
                book,
                cfg,
                symbols=symbols,
                on_tick=lambda r: self.metrics.observe_positions_refresh(r.duration_s),
                failures=self.state.failures,
            )
            self.metrics.watch(positions=loop.stats)
            tg.create_task(loop.run(), name="positions-loop")

    # -- callbacks of the parts ----------------------------------------------------------------

    def _price_book(self) -> PriceBook:
        """A book of this shard's symbols; event times a minute (real time) ahead ignored."""
        return PriceBook(
            frozenset(k.symbol for k in self.keys),
            self.clock.now_ms,
            int(MAX_AHEAD_MS * max(1.0, self.config.exchange.time_scale)),
            ignored=self.state.prices_ignored,
        )

    def _deleted(self, n: int) -> None:
        self.state.expired_deleted += n

    def _delete_failed(self) -> None:
        self.state.retention_delete_failures += 1

    def _quarantine(self, reject: Rejected, key: StreamKey) -> None:
        self.rejects.reject(reject.raw, reject.reason, reject.detail, str(key))

    def _journal_counts(self) -> None:
        """The journal's depth and syncs, as of a batch journaled or stored (during an outage
        only the first happens)."""
        self.state.journal_depth = len(self.journal)
        self.state.journal_syncs = self.journal.syncs

    def _stored(self, batch: Candles, inserted: int, seconds: float) -> None:
        self.state.batches += 1
        self.state.inserted += inserted
        self._journal_counts()
        np.maximum.at(self.state.last_stored_open, batch.stream_id, batch.open_time)
        self.latest.record(batch)
        self.metrics.observe_batch(len(batch), seconds)
        self.metrics.observe_commit_latency(self.clock.real_seconds_since(batch.close_time))
