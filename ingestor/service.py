"""The supervisor: one TaskGroup owning every task of the daemon.

Tasks and the bounded queues between them::

    FeedConnection x N --(decode, PriceBook)--> klines queue --> gate (Sequencer, REST gap fill,
    Batcher, Enricher) --> journal (fsync'd, write-ahead) + bounded memory cache --> writer
    (CandleStore)          finals watcher --> Probe --> gate          rejects --> RejectSink

Every batch is journaled before it is inserted and dropped from the journal once stored, so a
database outage costs memory only up to the cache bound (the rest waits on disk) and a kill -9
at any moment loses nothing: the journal is replayed (insert-missing-only) at the next start.

Shutdown (``stop`` event, set on SIGTERM/SIGINT): the feed stops, the gate drains what was
received and flushes its batch, the writer stores every batch, then the database client closes.
A task that crashes cancels the others and the exception propagates (exit code non-zero).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.batch import Batcher
from ingestor.candles import Candles
from ingestor.config import Config
from ingestor.decode import ClosedKline, Decoder, FrameKind, check_rules
from ingestor.embedded import EmbeddedMongo
from ingestor.enrich import Enricher, batch_indicators
from ingestor.errors import ConfigError, DecodeError
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.feed.markprice import MarkPriceSink, mark_price_url
from ingestor.health import HealthServer, probe_from_service
from ingestor.metrics import Metrics
from ingestor.positions import PositionsLoop
from ingestor.rejects import RejectSink
from ingestor.rest import ExchangeClock, RestClient
from ingestor.sdnotify import Notifier
from ingestor.sequence import Sequencer, VerdictKind
from ingestor.shard import owned_symbols, parse_shard
from ingestor.state import PipelineState, PriceBook
from ingestor.store.journal import Journal
from ingestor.store.schema import ensure_schema
from ingestor.store.writer import CandleStore
from ingestor.streams import StreamRegistry

__all__ = ["Probe", "Service"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the gate to fill a stream from its watermark up to now from REST."""

    stream_id: int


_STOP = object()


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
        self.prices = PriceBook()
        self.decoder = Decoder(self.registry)
        self.sequencer = Sequencer([k.interval_ms for k in self.keys])
        self.enricher = Enricher(len(self.keys))
        self.batcher = Batcher(ing.max_batch, ing.linger_ms / 1000)
        self.rejects = RejectSink(self.state, ing.queue_size)
        self.clock = ExchangeClock(config.exchange.time_scale)
        self.connections: list[FeedConnection] = []
        self._from_rest = [False] * len(self.keys)  # last admitted kline came from REST
        self._klines: asyncio.Queue[Any] = asyncio.Queue(ing.queue_size)
        self._cache: deque[tuple[int, Candles]] = deque()
        self._cache_max = max(2, ing.queue_size // 64)
        self._wake_writer = asyncio.Event()
        self._gate_done = False
        self.journal = Journal(
            Path(config.service.data_dir) / "journal", [str(k) for k in self.keys]
        )
        self._probe_after = np.zeros(len(self.keys))  # monotonic time before which no probe
        self._stack = contextlib.AsyncExitStack()
        self.db: AsyncDatabase[dict[str, Any]] | None = None
        self.store: CandleStore | None = None
        self.rest: RestClient | None = None
        self.positions: PositionsLoop | None = None
        self.ready = asyncio.Event()
        self.caught_up = asyncio.Event()  # the startup catch-up from REST is done
        self.metrics = Metrics()
        self.notifier = Notifier()

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Service:
        cfg = self.config
        try:
            # Health first (so it answers during startup) and closed last.
            probe = probe_from_service(
                self, queues=lambda: {"klines": (self._klines.qsize(), self._klines.maxsize)}
            )
            self.metrics.bind(self.state, probe)
            self.health = await self._stack.enter_async_context(
                HealthServer(cfg.health.host, cfg.health.port, probe, self.metrics)
            )
            log.info("shard %d/%d: %d streams", *self.shard, len(self.keys))
            uri = cfg.mongodb.uri
            if not uri:
                uri = await self._stack.enter_async_context(
                    EmbeddedMongo(Path(cfg.service.data_dir) / "db")
                )
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                uri,
                tz_aware=True,
                serverSelectionTimeoutMS=cfg.mongodb.timeout_ms,
                connectTimeoutMS=cfg.mongodb.timeout_ms,
            )
            self._stack.push_async_callback(client.close)
            self.db = client[cfg.mongodb.database]
            await ensure_schema(self.db)
            self.store = CandleStore(self.db, self.keys, on_state=self.state.set_db_ok)
            self.rest = await self._stack.enter_async_context(
                RestClient(cfg.exchange.rest_url, cfg.exchange.request_timeout_s, self.clock)
            )
            await self.rest.sync_time()
            await self._check_symbols()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _check_symbols(self) -> None:
        assert self.rest is not None
        listed = await self.rest.exchange_symbols()
        missing = [s for s in self.config.ingest.symbols if s not in listed]
        if missing:
            raise ConfigError("ingest.symbols", f"not listed by the exchange: {', '.join(missing)}")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain and flush; raises if any task crashes."""
        assert self.db is not None
        await self._replay_journal()
        await self._warm_up()
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._writer(), name="writer")
            gate = tg.create_task(self._gate(), name="gate")
            rejects = tg.create_task(self.rejects.run(self.db), name="rejects")
            feed = tg.create_task(self._feed(), name="feed")
            watcher = tg.create_task(self._watch_finals(), name="finals-watcher")
            positions = tg.create_task(self._positions(), name="positions")
            watchdog = tg.create_task(self.notifier.watchdog_loop(), name="watchdog")
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
            try:
                async with asyncio.timeout(self.config.service.shutdown_timeout_s - 1.5):
                    await self._klines.put(_STOP)
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

    # -- startup -------------------------------------------------------------------------------

    async def _warm_up(self) -> None:
        """Indicator state and watermark of every stream, from the database or the exchange."""
        assert self.store is not None and self.rest is not None
        n = self.config.ingest.warmup_candles
        now = self.clock.now_ms()
        for sid, key in enumerate(self.keys):
            times, closes = await self.store.history(key, n)
            if len(times) and (times[-1] - times[0]) // key.interval_ms + 1 != len(times):
                await self._heal(sid, times)
                times, closes = await self.store.history(key, n)
            if len(times):
                self.enricher.warm(sid, closes)
                self.sequencer.set_watermark(sid, int(times[-1]))
                self.state.last_stored_open[sid] = int(times[-1])
            else:
                # Nothing stored: the stream's stored history starts n candles back.
                start = (now // key.interval_ms - n) * key.interval_ms
                self.sequencer.start_at(sid, start)
        log.info("warmed %d streams; filling each from its watermark", len(self.keys))

    async def _heal(self, sid: int, times: npt.NDArray[np.int64]) -> None:
        """Store the klines missing inside the warm-up window (defence in depth: e.g. writes a
        failed-over database acknowledged and then lost), indicators from a full warm-up."""
        assert self.store is not None and self.rest is not None
        key, iv = self.keys[sid], self.keys[sid].interval_ms
        missing = np.setdiff1d(np.arange(times[0], times[-1] + iv, iv, dtype=np.int64), times)
        rows: list[list[Any]] = []
        # Indicators as the live path computed them: over the stored series from its start
        # (or a full warm-up before the window when the series is longer).
        first = await self.store.first_open(key)
        start = max(first, int(times[0]) - self.config.ingest.warmup_candles * iv)
        async for page in self.rest.closed_klines(
            key.symbol, key.timeframe, start, int(times[-1]), known_closed=True
        ):
            rows.extend(page)
        if not rows:
            return
        series = Candles.from_rows([sid] * len(rows), [r[:11] for r in rows])
        series.indicators = batch_indicators(series.close_f)
        holes = series.take(np.isin(series.open_time, missing))
        inserted = await self.store.insert(holes, suspect=True)
        self.state.healed += inserted
        log.warning("%s: %d missing klines inside the stored history restored", key, inserted)

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
                book = PriceBook()
                budget = AttemptBudget()
                for i in range(0, len(symbols), 200):
                    url = mark_price_url(cfg.futures_ws_url, symbols[i : i + 200])
                    conn = FeedConnection(1000 + i, url, MarkPriceSink(book), budget)
                    tg.create_task(conn.run(), name=f"markprice-{i}")
            self.positions = PositionsLoop(
                self.db,
                book,
                cfg,
                symbols=symbols,
                on_tick=lambda r: self.metrics.observe_positions_refresh(r.duration_s),
            )
            tg.create_task(self.positions.run(), name="positions-loop")

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
                conn = FeedConnection(
                    len(self.connections),
                    url,
                    self._on_frame,
                    budget,
                    max_age_s=23.5 * 3600 / scale,
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

    # -- gate: exactly once, in order --------------------------------------------------------

    async def _gate(self) -> None:
        loop = asyncio.get_running_loop()
        # Catch up every stream from its watermark first; live klines wait in the bounded queue.
        for sid in range(len(self.keys)):
            await self._fill(sid, None)
        log.info("caught up: %d klines from REST", self.state.rest_klines)
        self.caught_up.set()
        while True:
            deadline = self.batcher.deadline()
            try:
                if deadline is None:
                    item = await self._klines.get()
                else:
                    async with asyncio.timeout_at(deadline):
                        item = await self._klines.get()
            except TimeoutError:
                await self._flush()
                continue
            if item is _STOP:
                await self._flush()
                self._gate_done = True
                self._wake_writer.set()
                return
            if isinstance(item, Probe):
                self._probe_after[item.stream_id] = time.monotonic() + self._probe_backoff_s
                await self._fill(item.stream_id, None)
            else:
                kline, raw = item
                await self._admit(kline, raw)
            if self.batcher.due(loop.time()):
                await self._flush()

    async def _admit(self, kline: ClosedKline, raw: str | bytes) -> None:
        sid, open_ms = kline.stream_id, int(kline.row[0])
        verdict = self.sequencer.check(sid, open_ms)
        if verdict.kind is VerdictKind.GAP:
            await self._fill(sid, open_ms)
            verdict = self.sequencer.check(sid, open_ms)
            if verdict.kind is VerdictKind.GAP:
                log.warning(
                    "%s: exchange has no klines in [%d, %d)",
                    self.keys[sid],
                    verdict.gap_start,
                    open_ms,
                )
        if verdict.kind in (VerdictKind.ACCEPT, VerdictKind.GAP):
            self.sequencer.advance(sid, open_ms)
            self._from_rest[sid] = False
            await self._add(kline)
        elif self._from_rest[sid] and open_ms < self.sequencer.next_open[sid]:
            # The live final of a kline that REST already delivered: the seam, not bad input.
            self.state.seam_duplicates += 1
        else:
            self.rejects.reject(
                raw, verdict.kind.value, f"open_time {open_ms}", str(self.keys[sid])
            )

    async def _fill(self, sid: int, before_ms: int | None) -> None:
        """Fetch the stream's closed klines from its watermark up to ``before_ms`` (or now)."""
        assert self.rest is not None
        key = self.keys[sid]
        start = int(self.sequencer.next_open[sid])
        if start < 0:
            return
        end = None if before_ms is None else before_ms - 1
        async for rows in self.rest.closed_klines(
            key.symbol, key.timeframe, start, end, known_closed=before_ms is not None
        ):
            for row in rows:
                open_ms = int(row[0])
                if open_ms < self.sequencer.next_open[sid]:
                    continue
                o, h, low, c = (float(row[i]) for i in (1, 2, 3, 4))
                broken = check_rules(o, h, low, c, tuple(float(row[i]) for i in (5, 7, 9, 10)))
                if broken:
                    self.rejects.reject(repr(row), "rule_violation", broken, str(key))
                    continue
                self.sequencer.advance(sid, open_ms)
                self._from_rest[sid] = True
                self.state.rest_klines += 1
                await self._add(ClosedKline(sid, tuple(row[:11])))

    async def _add(self, kline: ClosedKline) -> None:
        full = self.batcher.add(kline, asyncio.get_running_loop().time())
        if full is not None:
            await self._emit(full)

    async def _flush(self) -> None:
        batch = self.batcher.flush()
        if batch is not None:
            await self._emit(batch)

    async def _emit(self, batch: Candles) -> None:
        self.enricher.enrich(batch)
        seq = self.journal.append(batch)
        if len(self._cache) < self._cache_max:
            self._cache.append((seq, batch))
        self.state.journal_depth = len(self.journal)
        self._wake_writer.set()

    # -- writer --------------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Store journal records in order; the memory cache saves re-reading recent ones."""
        assert self.store is not None
        while True:
            if not len(self.journal):
                if self._gate_done:
                    return
                self._wake_writer.clear()
                await self._wake_writer.wait()
                continue
            head = self.journal.head_seq
            while self._cache and self._cache[0][0] < head:
                self._cache.popleft()
            if self._cache and self._cache[0][0] == head:
                batch = self._cache[0][1]
            else:
                read = self.journal.peek()
                assert read is not None
                batch = read
            t0 = time.perf_counter()
            inserted = await self.store.insert(batch)
            elapsed = time.perf_counter() - t0
            self.metrics.observe_batch(len(batch), elapsed)
            self.metrics.observe_commit_latency(
                (self.clock.now_ms() - batch.close_time) / 1000 / self.clock.time_scale
            )
            self.journal.consume()
            self.state.journal_depth = len(self.journal)
            self._stored(batch, inserted)
            log.debug("stored %d candles in %.1f ms", inserted, (time.perf_counter() - t0) * 1e3)

    def _stored(self, batch: Candles, inserted: int) -> None:
        self.state.batches += 1
        self.state.inserted += inserted
        last = self.state.last_stored_open
        np.maximum.at(last, batch.stream_id, batch.open_time)

    async def _replay_journal(self) -> None:
        """Batches journaled by a previous run that may not be stored: insert what is missing."""
        assert self.store is not None
        if not len(self.journal):
            return
        log.info("replaying %d journaled batches from the previous run", len(self.journal))
        while (batch := self.journal.peek()) is not None:
            inserted = await self.store.insert(batch, suspect=True)
            self.journal.consume()
            self._stored(batch, inserted)

    # -- missing finals ----------------------------------------------------------------------

    @property
    def _probe_backoff_s(self) -> float:
        return max(1.0, self.config.ingest.final_grace_ms / 1000)

    async def _watch_finals(self) -> None:
        """Probe REST for a kline whose final event is ``final_grace_ms`` late."""
        grace_ms = self.config.ingest.final_grace_ms * self.clock.time_scale
        period = max(0.05, min(1.0, self.config.ingest.final_grace_ms / 4000))
        seq = self.sequencer
        while True:
            await asyncio.sleep(period)
            now = self.clock.now_ms()
            late = (seq.next_open >= 0) & (now > seq.next_open + seq.interval + grace_ms)
            late &= self._probe_after <= time.monotonic()
            for sid in np.flatnonzero(late).tolist():
                self._probe_after[sid] = time.monotonic() + self._probe_backoff_s
                try:
                    self._klines.put_nowait(Probe(sid))
                except asyncio.QueueFull:
                    break
                self.state.final_probes += 1
