"""The supervisor: one TaskGroup owning every task of the daemon.

Tasks and the bounded queues between them (one module each)::

    feed/connection x N --(decode, PriceBook)--> klines queue --> gate (sequence, REST gap fill,
    batch, enrich) --> store/spool (write-ahead journal --> store/writer --> market_data)
    beside them: gate.watch_finals (late finals -> Probe), rejects, positions, health, sd_notify,
    the expirer (retention on the embedded server)

Startup: health endpoint, database (embedded if no URI), schema, REST clock, symbols listed,
journal replay, warm-up (warmup.restore_streams); then the tasks. Shutdown (``stop`` event, set
on SIGTERM/SIGINT): the feed stops, the gate drains what was received and flushes its batch, the
spool stores every batch (or leaves them journaled if the database is down), then the database
client and the health endpoint close. A task that crashes cancels the others and the exception
propagates (exit code non-zero); a task that ends on its own is a bug and is raised as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.batch import Batcher
from ingestor.candles import Candles
from ingestor.config import Config, parse_key_pattern
from ingestor.decode import Decoder, FrameKind
from ingestor.enrich import Enricher
from ingestor.errors import ConfigError, DecodeError
from ingestor.feed.clients import connection_class
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.feed.markprice import MarkPriceSink, mark_price_url
from ingestor.gate import STOP, Gate
from ingestor.health import HealthServer, probe_from_service
from ingestor.history import History
from ingestor.latest import LatestCandles
from ingestor.metrics import Metrics
from ingestor.positions import PositionsLoop
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock, RestClient
from ingestor.sdnotify import Notifier
from ingestor.sequence import Sequencer
from ingestor.shard import owned_symbols, parse_shard
from ingestor.state import MAX_AHEAD_MS, PipelineState, PriceBook
from ingestor.store.database import open_database
from ingestor.store.journal import Journal
from ingestor.store.retention import Expirer, daemon_expires, read_retention
from ingestor.store.schema import ensure_schema
from ingestor.store.spool import Spool
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamKey, StreamRegistry
from ingestor.validate import Rejected
from ingestor.warmup import restore_streams

__all__ = ["Service"]

log = logging.getLogger(__name__)


class Service:
    """``async with Service(config) as svc: await svc.run(stop_event)``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        ing = config.ingest
        # Scale-out: this daemon ingests only the symbols its shard owns (all their timeframes).
        self.shard = parse_shard(config.service.shard, socket.gethostname())
        symbols = owned_symbols(ing.symbols, *self.shard)
        self.registry = StreamRegistry(symbols, list(ing.timeframes))
        self.keys = self.registry.keys
        self.state = PipelineState(len(self.keys))
        self.latest = LatestCandles([str(k) for k in self.keys])  # for /status
        self.clock = ExchangeClock(config.exchange.time_scale)
        self.prices = self._price_book()
        self.decoder = Decoder(self.registry, self.clock.now_ms)
        self.sequencer = Sequencer([k.interval_ms for k in self.keys])
        self.enricher = Enricher(len(self.keys))
        self.batcher = Batcher(ing.max_batch, ing.linger_ms / 1000)
        self.rejects = RejectSink(self.state, ing.queue_size)
        self.connections: list[FeedConnection] = []
        self._klines: asyncio.Queue[Any] = asyncio.Queue(ing.queue_size)
        self.journal = Journal(
            Path(config.service.data_dir) / "journal", [str(k) for k in self.keys]
        )
        self.state.journal_damaged_bytes = self.journal.damaged_bytes
        self.state.journal_damaged_regions = self.journal.damaged_regions
        self.spool: Spool | None = None
        self.gate: Gate | None = None
        self.caught_up = asyncio.Event()  # the startup catch-up from REST is done
        self._stack = contextlib.AsyncExitStack()
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self.store: CandleStore | None = None
        self.rest: RestClient | None = None
        self.positions: PositionsLoop | None = None
        self.history: History | None = None
        self.expirer: Expirer | None = None
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        self.notifier = Notifier()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        cfg = self.config
        try:
            # Health first (so it answers during startup) and closed last.
            probe = probe_from_service(
                self,
                queues=lambda: {"klines": (self._klines.qsize(), self._klines.maxsize)},
                candles=self.latest.rows,
            )
            self.metrics.bind(self.state, probe)
            self.health = await self._stack.enter_async_context(
                HealthServer(cfg.health.host, cfg.health.port, probe, self.metrics)
            )
            log.info("shard %d/%d: %d streams", *self.shard, len(self.keys))
            self.db = await self._stack.enter_async_context(open_database(cfg))
            await ensure_schema(
                self.db,
                failures=self.state.failures,
                shard_key=parse_key_pattern(cfg.mongodb.shard_key) if cfg.mongodb.shard_key else (),
            )
            self.store = CandleStore(
                self.db, self.keys, on_state=self.state.set_db_ok, failures=self.state.failures
            )
            self.rest = await self._stack.enter_async_context(
                RestClient(cfg.exchange.rest_url, cfg.exchange.request_timeout_s, self.clock)
            )
            self.metrics.watch(rest=self.rest)
            await self.rest.sync_time()
            await self._check_symbols()
            retention = await read_retention(self.db)
            self.history = History(self.rest, self.keys, self._quarantine, retention)
            if daemon_expires(cfg.mongodb.expiry, cfg.mongodb.uri):
                self.expirer = Expirer(
                    self.db,
                    self.keys,
                    retention,
                    on_deleted=self._deleted,
                    on_failed=self._delete_failed,
                )
            log.info(
                "retention: %s; expired candles deleted by %s",
                "none" if retention.expire_after_s is None else f"{retention.expire_after_s} s",
                "the daemon" if self.expirer is not None else "the server",
            )
            self.spool = Spool(
                self.journal, self.store, self.config.ingest.queue_size // 64, self._stored
            )
            self.gate = Gate(
                self.keys,
                self.sequencer,
                self.batcher,
                self.enricher,
                self.history,
                self.rejects,
                self.state,
                self._spool_batch,
                self.caught_up,
            )
        except BaseException:
            await self._stack.aclose()
            self.journal.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._stack.aclose()
        finally:
            # Batches not yet durable become durable; a fully stored journal is removed.
            self.journal.close()

    async def _check_symbols(self) -> None:
        assert self.rest is not None
        listed = await self.rest.exchange_symbols()
        missing = [s for s in self.config.ingest.symbols if s not in listed]
        if missing:
            raise ConfigError("ingest.symbols", f"not listed by the exchange: {', '.join(missing)}")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and flush; raises if any task crashes."""
        assert self.db is not None and self.store is not None and self.rest is not None
        assert self.spool is not None and self.gate is not None and self.history is not None
        await self.spool.replay()
        if self.expirer is not None:
            await self.expirer.expire_once()
        await restore_streams(
            self.keys,
            self.store,
            self.history,
            self.enricher,
            self.sequencer,
            self.state,
            self.config.ingest.warmup_candles,
            self._spool_batch,
        )
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self.spool.run(), name="writer")
            gate = tg.create_task(self._gate(self.gate, self.spool), name="gate")
            rejects = tg.create_task(self.rejects.run(self.db), name="rejects")
            feed = tg.create_task(self._feed(), name="feed")
            watcher = tg.create_task(
                self.gate.watch_finals(self._klines, self.clock, self.config.ingest.final_grace_ms),
                name="finals-watcher",
            )
            positions = tg.create_task(self._positions(), name="positions")
            watchdog = tg.create_task(self.notifier.watchdog_loop(), name="watchdog")
            expirer = tg.create_task(self._expire(), name="expirer")
            self.state.started = True
            self.ready.set()
            self.notifier.ready()
            stopper = tg.create_task(stop.wait(), name="stop")
            done, _ = await asyncio.wait(
                {stopper, writer, gate, rejects, feed}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopper not in done:
                # A task ended on its own. If it failed, the TaskGroup re-raises its error on
                # exit; if it merely returned, that is a bug: never die quietly.
                ended = done.pop()
                if ended.cancelled() or ended.exception() is None:
                    raise RuntimeError(f"task {ended.get_name()} ended unexpectedly")
                return
            log.info("stopping: feed first, then drain and flush")
            self.notifier.stopping()
            feed.cancel()
            watcher.cancel()
            positions.cancel()
            watchdog.cancel()
            expirer.cancel()
            try:
                async with asyncio.timeout(self.config.service.shutdown_timeout_s - 1.5):
                    await self._klines.put(STOP)
                    await gate
                    await writer
            except TimeoutError:
                # Everything received is in the fsync'd journal: the next start stores it.
                log.warning(
                    "database did not take everything in time; %d batches stay "
                    "journaled for the next start",
                    len(self.journal),
                )
                gate.cancel()
                writer.cancel()
            await self.rejects.close()
            try:
                async with asyncio.timeout(1.0):
                    await rejects
            except TimeoutError:
                rejects.cancel()
        log.info(
            "stopped: %d candles stored (%d from REST), %d rejects",
            self.state.inserted,
            self.state.rest_klines,
            sum(self.state.rejects.values()),
        )

    async def _expire(self) -> None:
        """The embedded server's retention (see ``store.retention``); nothing on MongoDB."""
        if self.expirer is not None:
            await asyncio.sleep(self.expirer.every_s)  # ran once before the warm-up
            await self.expirer.run()

    def _deleted(self, n: int) -> None:
        self.state.expired_deleted += n

    def _delete_failed(self) -> None:
        self.state.retention_delete_failures += 1

    def _quarantine(self, reject: Rejected, key: StreamKey) -> None:
        self.rejects.reject(reject.raw, reject.reason, reject.detail, str(key))

    async def _gate(self, gate: Gate, spool: Spool) -> None:
        """The gate until the feed's queue ends; then the spool learns no more batches come."""
        await gate.run(self._klines)
        spool.close()

    def _spool_batch(self, batch: Candles) -> None:
        assert self.spool is not None
        self.spool.append(batch)
        self.state.journal_depth = len(self.journal)

    def _stored(self, batch: Candles, inserted: int, seconds: float) -> None:
        self.state.batches += 1
        self.state.inserted += inserted
        self.state.journal_depth = len(self.journal)
        np.maximum.at(self.state.last_stored_open, batch.stream_id, batch.open_time)
        self.latest.record(batch)
        self.metrics.observe_batch(len(batch), seconds)
        self.metrics.observe_commit_latency(
            (self.clock.now_ms() - batch.close_time) / 1000 / self.clock.time_scale
        )

    # -- positions -----------------------------------------------------------------------------

    async def _positions(self) -> None:
        """Keep open positions priced from the feed (optionally from futures mark prices)."""
        cfg = self.config.positions
        if not cfg.enabled:
            return
        assert self.db is not None
        symbols = sorted({k.symbol for k in self.keys})  # this shard's symbols
        book = self.prices
        async with asyncio.TaskGroup() as tg:
            if cfg.mark_prices:
                book = self._price_book()
                sink = MarkPriceSink(book)  # one for all mark-price connections: one set of counts
                budget = AttemptBudget()
                marks: list[FeedConnection] = []
                for i in range(0, len(symbols), 200):
                    url = mark_price_url(cfg.futures_ws_url, symbols[i : i + 200])
                    marks.append(
                        FeedConnection(1000 + i, url, sink, budget, failures=self.state.failures)
                    )
                    tg.create_task(marks[-1].run(), name=f"markprice-{i}")
                self.metrics.watch(mark_prices=sink, mark_price_connections=marks)
            self.positions = PositionsLoop(
                self.db,
                book,
                cfg,
                symbols=symbols,
                on_tick=lambda r: self.metrics.observe_positions_refresh(r.duration_s),
                failures=self.state.failures,
            )
            self.metrics.watch(positions=self.positions.stats)
            tg.create_task(self.positions.run(), name="positions-loop")

    def _price_book(self) -> PriceBook:
        """A book of this shard's symbols; event times a minute (real time) ahead ignored."""
        return PriceBook(
            frozenset(k.symbol for k in self.keys),
            self.clock.now_ms,
            int(MAX_AHEAD_MS * max(1.0, self.config.exchange.time_scale)),
            ignored=self.state.prices_ignored,
        )

    # -- feed ----------------------------------------------------------------------------------

    async def _feed(self) -> None:
        cfg = self.config.exchange
        names = [k.stream_name for k in self.keys]
        per = cfg.streams_per_connection
        budget = AttemptBudget()
        base = cfg.ws_url.rstrip("/")
        scale = cfg.time_scale
        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(names), per):
                url = f"{base}/stream?streams={'/'.join(names[i : i + per])}"
                conn = connection_class(cfg.ws_client)(
                    len(self.connections),
                    url,
                    self._on_frame,
                    budget,
                    max_age_s=23.5 * 3600 / scale,
                    failures=self.state.failures,
                )
                self.connections.append(conn)
                tg.create_task(conn.run(), name=f"feed-{conn.index}")
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
                await self._klines.put((frame.closed, raw))
        return False
