"""A Binance-spot-compatible exchange on one aiohttp port: websocket kline streams and REST.

Same paths and JSON as Binance (``/stream?streams=``, ``/ws/<name>``, SUBSCRIBE frames,
``/api/v3/klines`` ...), its limits (1024 streams and 5 incoming messages/s per connection,
24 h connection lifetime in *simulated* time, request weight per minute with 429/418), and
fault knobs, so the ingestor can be tested end to end and demoed offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ingestor.simulator.faults import FaultConfig, garbage_frame
from ingestor.simulator.market import (
    DEFAULT_SYMBOLS,
    INTERVAL_MS,
    MAX_KLINES_LIMIT,
    Market,
    Row,
    SimClock,
    floor_to,
    profile_for,
)
from ingestor.streams import StreamKey

__all__ = [
    "KLINES_WEIGHT",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve_until",
]

#: Request weights of Binance spot (GET /api/v3/klines is a flat 2 on spot; futures vary by limit).
KLINES_WEIGHT = 2
_WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20}
_WINDOW_S = 60.0
_log = logging.getLogger(__name__)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class SimConfig:
    """Everything a simulator run is made of; see ``cli.add_arguments`` for the meanings."""

    host: str = "127.0.0.1"
    port: int = 0
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    seed: int = 0
    speed: float = 1.0  # sim seconds per real second
    start_ms: int | None = None  # None: real now floored to the minute
    history_start_ms: int = 0  # sim time of the exchange's first kline (every stream)
    replays: dict[StreamKey, list[list[Any]]] = field(default_factory=dict)  # rows per stream
    update_interval_s: float = 2.0  # real seconds between forming-kline updates
    ping_interval_s: float = 20.0
    pong_timeout_s: float = 60.0
    max_streams_per_connection: int = 1024
    max_incoming_per_s: int = 5
    connection_lifetime_sim_ms: int = 24 * 3_600_000
    weight_limit_1m: int = 6000
    ban_after_violations: int = 2  # requests during a Retry-After window before the 418 ban
    ban_duration_s: float = 120.0
    send_queue_size: int = 10_000  # frames buffered per connection before it is dropped as slow
    max_finals_per_tick: int = 1000  # per stream; more closes than this in one tick are skipped
    faults: FaultConfig = field(default_factory=FaultConfig)
    time_source: Callable[[], float] = time.monotonic  # real monotonic clock (injectable)


@dataclass(slots=True)
class SimStats:
    """Counters, served as JSON at ``GET /_sim/stats``."""

    connections_open: int = 0
    connections_total: int = 0
    frames_sent: int = 0
    updates_sent: int = 0
    finals_sent: int = 0
    finals_dropped: int = 0
    finals_repeated: int = 0
    finals_skipped: int = 0
    garbage_sent: int = 0
    server_shutdowns_sent: int = 0
    lifetime_disconnects: int = 0
    fault_disconnects: int = 0
    rate_limit_disconnects: int = 0
    stream_limit_rejections: int = 0
    slow_consumer_disconnects: int = 0
    pong_timeouts: int = 0
    pings_sent: int = 0
    ws_messages_received: int = 0
    rest_requests: int = 0
    weight_used_1m: int = 0
    rest_429s: int = 0
    rest_418s: int = 0
    rest_400s: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True, eq=False)
class _Conn:
    """One websocket connection and its bounded outgoing queue."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    combined: bool
    streams: dict[str, None]  # ordered set of subscribed stream names
    queue: asyncio.Queue[str | tuple[int, str]]
    opened_sim_ms: int
    recv_times: deque[float]
    last_ping: float = 0.0
    last_pong: float = 0.0
    closing: bool = False


class _WeightWindow:
    """Request weight used in the last 60 real seconds."""

    def __init__(self) -> None:
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def used(self, now: float) -> int:
        while self._entries and self._entries[0][0] <= now - _WINDOW_S:
            self._used -= self._entries.popleft()[1]
        return self._used

    def add(self, now: float, weight: int) -> None:
        self._entries.append((now, weight))
        self._used += weight

    def seconds_until_fits(self, now: float, weight: int, limit: int) -> float:
        """Real seconds until ``weight`` more fits under ``limit`` as old entries expire."""
        used = self.used(now)
        if used + weight <= limit:
            return 0.0
        for t, w in self._entries:
            used -= w
            if used + weight <= limit:
                return t + _WINDOW_S - now
        return _WINDOW_S


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "msg": msg}),
        content_type="application/json",
    )


def _json(payload: object) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


class _BadParam(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class Simulator:
    """The simulated exchange. ``async with Simulator(SimConfig()) as sim:`` serves on
    ``sim.rest_url`` / ``sim.ws_url`` until the block ends."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        cfg = self.config
        self.faults: FaultConfig = cfg.faults
        self.stats = SimStats()
        self.clock = SimClock(cfg.start_ms, cfg.speed, cfg.time_source)
        self.market = Market(
            cfg.seed,
            cfg.symbols,
            cfg.replays,
            anchor_ms=self.clock.start_ms,
            history_start_ms=cfg.history_start_ms,
        )
        self.host = cfg.host
        self.port = 0
        self._rng = random.Random(cfg.seed)
        self._conns: set[_Conn] = set()
        self._subs: dict[str, set[_Conn]] = {}
        self._last_open: dict[str, int] = {}
        self._parsed: dict[str, tuple[str, str, int] | None] = {}
        self._weight = _WeightWindow()
        self._retry_until = 0.0
        self._violations = 0
        self._banned_until = 0.0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._rest_middleware])
        app.router.add_get("/stream", self._ws_handler)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/ws/{streams:.*}", self._ws_handler)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_get("/_sim/faults", self._get_faults)
        app.router.add_post("/_sim/faults", self._post_faults)
        app.router.add_get("/_sim/clock", self._get_clock)
        app.router.add_post("/_sim/disconnect", self._post_disconnect)
        # 1024 stream names make a ~25 kB request line; aiohttp's default allows 8 kB
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=1.0, max_line_size=1 << 16
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._tasks = [
            asyncio.create_task(self._market_loop(), name="sim-market"),
            asyncio.create_task(self._disconnect_loop(), name="sim-disconnect"),
        ]

    async def stop(self) -> None:
        """Send ``serverShutdown`` to every connection, close them, stop serving."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for conn in list(self._conns):
            self._shutdown_conn(conn)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for conn in list(self._conns):
            self._abort(conn)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- runtime controls ------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs (same names and validation as ``POST /_sim/faults``)."""
        self.faults.update(changes)

    def disconnect_all(self) -> int:
        """Abort every websocket connection (no close frame, like a network drop)."""
        conns = list(self._conns)
        for conn in conns:
            self._abort(conn)
        self.stats.fault_disconnects += len(conns)
        return len(conns)

    # -- websocket -------------------------------------------------------------------------

    def _parse_stream(self, name: str) -> tuple[str, str, int] | None:
        if name not in self._parsed:
            parsed: tuple[str, str, int] | None = None
            sym, sep, tail = name.partition("@kline_")
            if sep and tail in INTERVAL_MS and self.market.has_symbol(sym.upper()):
                parsed = (sym.upper(), tail, INTERVAL_MS[tail])
            if len(self._parsed) < 100_000:
                self._parsed[name] = parsed
            return parsed
        return self._parsed[name]

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        combined = request.path == "/stream"
        if combined:
            raw = request.query.get("streams", "")
        else:
            raw = request.match_info.get("streams", "")
        names = [n for n in raw.split("/") if n]
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        transport = request.transport
        await ws.prepare(request)
        if len(names) > cfg.max_streams_per_connection:
            self.stats.stream_limit_rejections += 1
            await ws.close(code=1008, message=b"Too many streams")
            return ws
        conn = _Conn(
            ws=ws,
            transport=transport,
            combined=combined,
            streams={},
            queue=asyncio.Queue(maxsize=cfg.send_queue_size),
            opened_sim_ms=self.clock.now_ms(),
            recv_times=deque(maxlen=cfg.max_incoming_per_s + 1),
            last_pong=cfg.time_source(),
        )
        self._conns.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        self._subscribe(conn, names)
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
        writer = asyncio.create_task(self._writer(conn))
        pinger = asyncio.create_task(self._pinger(conn))
        try:
            async for msg in ws:
                if not await self._on_message(conn, msg):
                    break
        finally:
            self._drop(conn)
            pinger.cancel()
            if not writer.done():
                # let a pending close (serverShutdown) finish; otherwise stop now
                conn.closing = True
                with contextlib.suppress(asyncio.QueueFull):
                    conn.queue.put_nowait((1000, ""))
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(writer, timeout=1.0)
            if me is not None:
                self._handlers.discard(me)
        return ws

    async def _on_message(self, conn: _Conn, msg: Any) -> bool:
        """Handle one incoming frame; False ends the connection."""
        cfg = self.config
        if msg.type == WSMsgType.PONG:
            conn.last_pong = cfg.time_source()
            return True
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING):
            return False
        self.stats.ws_messages_received += 1
        now = cfg.time_source()
        conn.recv_times.append(now)
        if len(conn.recv_times) > cfg.max_incoming_per_s and now - conn.recv_times[0] < 1.0:
            self.stats.rate_limit_disconnects += 1
            self._close(conn, 1008, "Too many requests")
            return True  # keep reading until the close handshake completes
        if msg.type == WSMsgType.PING:
            await conn.ws.pong(msg.data)
            return True
        self._handle_method(conn, msg.data)
        return True

    def _handle_method(self, conn: _Conn, data: str | bytes) -> None:
        try:
            req = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._reply(conn, {"error": {"code": 3, "msg": f"Invalid JSON: {exc}"}, "id": None})
            return
        req_id = req.get("id") if isinstance(req, dict) else None
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request"}, "id": req_id})
            return
        method, params = req["method"], req.get("params", [])
        if not isinstance(params, list):
            self._reply(conn, {"error": {"code": 1, "msg": "Invalid value type"}, "id": req_id})
            return
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                self._reply(conn, {"error": {"code": 1, "msg": "Invalid value type"}, "id": req_id})
                return
            if method == "SUBSCRIBE":
                new = [p for p in params if p not in conn.streams]
                if len(conn.streams) + len(new) > self.config.max_streams_per_connection:
                    self.stats.stream_limit_rejections += 1
                    self._reply(
                        conn,
                        {
                            "error": {"code": 2, "msg": "Invalid request: too many streams"},
                            "id": req_id,
                        },
                    )
                    return
                self._subscribe(conn, params)
            else:
                self._unsubscribe(conn, params)
            self._reply(conn, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(conn, {"result": list(conn.streams), "id": req_id})
        elif method == "SET_PROPERTY" and len(params) == 2 and params[0] == "combined":
            if not isinstance(params[1], bool):
                self._reply(conn, {"error": {"code": 1, "msg": "Invalid value type"}, "id": req_id})
                return
            conn.combined = params[1]
            self._reply(conn, {"result": None, "id": req_id})
        elif method == "GET_PROPERTY" and params == ["combined"]:
            self._reply(conn, {"result": conn.combined, "id": req_id})
        else:
            self._reply(conn, {"error": {"code": 2, "msg": "Invalid request"}, "id": req_id})

    def _subscribe(self, conn: _Conn, names: list[str]) -> None:
        now = self.clock.now_ms()
        for name in names:
            conn.streams[name] = None
            subs = self._subs.setdefault(name, set())
            subs.add(conn)
            parsed = self._parse_stream(name)
            if parsed is not None and name not in self._last_open:
                self._last_open[name] = floor_to(now, parsed[2])
        self._wake.set()

    def _unsubscribe(self, conn: _Conn, names: list[str]) -> None:
        for name in names:
            conn.streams.pop(name, None)
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subs[name]
                    self._last_open.pop(name, None)

    def _drop(self, conn: _Conn) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            self.stats.connections_open -= 1
        self._unsubscribe(conn, list(conn.streams))

    def _reply(self, conn: _Conn, payload: dict[str, Any]) -> None:
        self._enqueue(conn, orjson.dumps(payload).decode())

    def _enqueue(self, conn: _Conn, item: str | tuple[int, str]) -> bool:
        if conn.closing:
            return False
        try:
            conn.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.slow_consumer_disconnects += 1
            self._abort(conn)
            return False
        if isinstance(item, str):
            self.stats.frames_sent += 1
        return True

    def _close(self, conn: _Conn, code: int, reason: str) -> None:
        """Close after the frames already queued."""
        if not conn.closing:
            self._enqueue(conn, (code, reason))
            conn.closing = True

    def _shutdown_conn(self, conn: _Conn) -> None:
        """Binance's ``serverShutdown`` event, then close (1001 going away)."""
        if conn.closing:
            return
        event = {"event": {"e": "serverShutdown", "E": self.clock.now_ms()}}
        if self._enqueue(conn, orjson.dumps(event).decode()):
            self.stats.server_shutdowns_sent += 1
        self._close(conn, 1001, "serverShutdown")

    def _abort(self, conn: _Conn) -> None:
        conn.closing = True
        if conn.transport is not None and not conn.transport.is_closing():
            abort = getattr(conn.transport, "abort", None)
            if callable(abort):
                abort()
            else:
                conn.transport.close()
        self._drop(conn)

    async def _writer(self, conn: _Conn) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                item = await conn.queue.get()
                if isinstance(item, tuple):
                    await conn.ws.close(code=item[0], message=item[1].encode())
                    return
                await conn.ws.send_str(item)

    async def _pinger(self, conn: _Conn) -> None:
        cfg = self.config
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not conn.closing:
                await asyncio.sleep(cfg.ping_interval_s)
                now = cfg.time_source()
                if conn.last_ping and conn.last_pong < conn.last_ping:
                    if now - conn.last_ping >= cfg.pong_timeout_s:
                        self.stats.pong_timeouts += 1
                        self._close(conn, 1008, "Pong timeout")
                        return
                    continue
                conn.last_ping = now
                self.stats.pings_sent += 1
                await conn.ws.ping(str(self.clock.now_ms()).encode())

    # -- the market loop -------------------------------------------------------------------

    def _deliver(self, name: str, event: dict[str, Any], final: bool) -> None:
        faults = self.faults
        raw: str | None = None
        wrapped: str | None = None
        for conn in list(self._subs.get(name, ())):
            if conn.closing:
                continue
            if (
                faults.garbage_p
                and self._rng.random() < faults.garbage_p
                and self._enqueue(
                    conn, garbage_frame(event, name if conn.combined else None, self._rng)
                )
            ):
                self.stats.garbage_sent += 1
            if final and faults.drop_final_p and self._rng.random() < faults.drop_final_p:
                self.stats.finals_dropped += 1
                continue
            if conn.combined:
                if wrapped is None:
                    wrapped = orjson.dumps({"stream": name, "data": event}).decode()
                frame = wrapped
            else:
                if raw is None:
                    raw = orjson.dumps(event).decode()
                frame = raw
            if not self._enqueue(conn, frame):
                continue
            if not final:
                self.stats.updates_sent += 1
                continue
            self.stats.finals_sent += 1
            if (
                faults.repeat_final_p
                and self._rng.random() < faults.repeat_final_p
                and self._enqueue(conn, frame)
            ):
                self.stats.finals_repeated += 1

    def _tick(self, send_updates: bool) -> int:
        """Emit due finals (and updates); return the sim time of the next kline close."""
        now = self.clock.now_ms()
        next_close = now + 86_400_000
        for name in list(self._subs):
            parsed = self._parse_stream(name)
            if parsed is None:
                continue
            symbol, tf, iv = parsed
            cur = floor_to(now, iv)
            last = self._last_open.get(name, cur)
            if cur > last:
                first = max(last, cur - self.config.max_finals_per_tick * iv)
                self.stats.finals_skipped += (first - last) // iv
                for t in range(first, cur, iv):
                    self._deliver(name, self.market.event(symbol, tf, t, now), final=True)
                self._last_open[name] = cur
            if send_updates:
                self._deliver(name, self.market.event(symbol, tf, cur, now), final=False)
            next_close = min(next_close, cur + iv)
        lifetime = self.config.connection_lifetime_sim_ms
        for conn in list(self._conns):
            if conn.closing:
                continue
            if now - conn.opened_sim_ms >= lifetime:
                self.stats.lifetime_disconnects += 1
                self._shutdown_conn(conn)
            else:
                next_close = min(next_close, conn.opened_sim_ms + lifetime)
        return next_close

    async def _market_loop(self) -> None:
        mono = self.config.time_source
        interval = self.config.update_interval_s
        next_update = mono() + interval
        while True:
            self._wake.clear()
            due = mono() >= next_update
            if due:
                next_update = max(next_update + interval, mono())
            try:
                next_sim = self._tick(send_updates=due)
            except Exception:  # a bug must not silently stop every stream: log, keep ticking
                _log.exception("simulator tick failed")
                next_sim = self.clock.now_ms() + 1000
            wait = min(next_update - mono(), self.clock.real_seconds_until(next_sim), 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))

    async def _disconnect_loop(self) -> None:
        mono = self.config.time_source
        last = mono()
        armed: float | None = None
        while True:
            await asyncio.sleep(0.02)
            every = self.faults.disconnect_every_s
            if every != armed:
                armed, last = every, mono()
            if every is not None and mono() - last >= every:
                last = mono()
                self.disconnect_all()

    # -- REST ------------------------------------------------------------------------------

    @web.middleware
    async def _rest_middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        cfg = self.config
        self.stats.rest_requests += 1
        weight = (
            KLINES_WEIGHT if request.path == "/api/v3/klines" else _WEIGHTS.get(request.path, 1)
        )
        now = cfg.time_source()
        rejected = self._throttle(now, weight)
        resp: web.StreamResponse
        if rejected is not None:
            resp = rejected
        else:
            self._weight.add(now, weight)
            if self.faults.rest_delay_s:
                await asyncio.sleep(self.faults.rest_delay_s)
            try:
                resp = await handler(request)
            except _BadParam as bad:
                resp = bad.response
            if resp.status == 400:
                self.stats.rest_400s += 1
        used = self._weight.used(cfg.time_source())
        self.stats.weight_used_1m = used
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        resp.headers["X-MBX-USED-WEIGHT"] = str(used)
        return resp

    def _throttle(self, now: float, weight: int) -> web.Response | None:
        """429/418 like Binance: over the weight limit, or a forced 429; requests sent inside a
        Retry-After window count as violations, and enough of them earn a 418 ban."""
        cfg = self.config
        if now < self._banned_until:
            return self._reject(418, self._banned_until - now)
        if now < self._retry_until:
            self._violations += 1
            if self._violations >= cfg.ban_after_violations:
                self._banned_until = now + cfg.ban_duration_s
                self._violations = 0
                return self._reject(418, cfg.ban_duration_s)
            return self._reject(429, self._retry_until - now)
        self._violations = 0
        if self.faults.rest_429_p and self._rng.random() < self.faults.rest_429_p:
            retry = float(self.faults.rest_429_retry_after_s)
            self._retry_until = now + retry
            return self._reject(429, retry)
        if self._weight.used(now) + weight > cfg.weight_limit_1m:
            retry = self._weight.seconds_until_fits(now, weight, cfg.weight_limit_1m)
            self._retry_until = now + retry
            return self._reject(429, retry)
        return None

    def _reject(self, status: int, retry_after_s: float) -> web.Response:
        retry = max(1, math.ceil(retry_after_s)) if retry_after_s > 0 else 0
        limit = self.config.weight_limit_1m
        if status == 418:
            self.stats.rest_418s += 1
            until = self.clock.now_ms() + retry * 1000
            msg = (
                f"Way too much request weight used; IP banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans."
            )
        else:
            self.stats.rest_429s += 1
            msg = (
                f"Too much request weight used; current limit is {limit} request weight per "
                "1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
            )
        resp = _error(status, -1003, msg)
        resp.headers["Retry-After"] = str(retry)
        return resp

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.clock.now_ms()})

    def _symbol_info(self, symbol: str) -> dict[str, Any]:
        prof = profile_for(symbol)
        quote = next(
            (
                q
                for q in ("USDT", "FDUSD", "USDC", "BUSD", "BTC", "ETH", "BNB")
                if symbol.endswith(q) and symbol != q
            ),
            symbol[-4:],
        )
        base = symbol[: -len(quote)]

        def dec8(text: str) -> str:
            return f"{float(text):.8f}"

        return {
            "symbol": symbol,
            "status": "TRADING",
            "baseAsset": base,
            "baseAssetPrecision": 8,
            "quoteAsset": quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": [
                "LIMIT",
                "LIMIT_MAKER",
                "MARKET",
                "STOP_LOSS_LIMIT",
                "TAKE_PROFIT_LIMIT",
            ],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": True,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": dec8(prof.tick),
                    "maxPrice": "1000000.00000000",
                    "tickSize": dec8(prof.tick),
                },
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "5",
                    "multiplierDown": "0.2",
                    "avgPriceMins": 5,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": dec8(prof.step),
                    "maxQty": "9000000.00000000",
                    "stepSize": dec8(prof.step),
                },
                {
                    "filterType": "MIN_NOTIONAL",
                    "minNotional": "10.00000000",
                    "applyToMarket": True,
                    "avgPriceMins": 5,
                },
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": "100000.00000000",
                    "stepSize": "0.00000000",
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": ["SPOT", "MARGIN"],
        }

    async def _exchange_info(self, request: web.Request) -> web.Response:
        q = request.query
        if "symbol" in q and "symbols" in q:
            return _error(400, -1128, "Combination of optional parameters invalid.")
        wanted: list[str] = list(self.market.symbols)
        if "symbol" in q:
            wanted = [q["symbol"]]
        elif "symbols" in q:
            try:
                parsed = orjson.loads(q["symbols"])
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                return _error(400, -1100, "Illegal characters found in parameter 'symbols'.")
            wanted = parsed
        if any(not self.market.has_symbol(s) for s in wanted):
            return _error(400, -1121, "Invalid symbol.")
        limit = self.config.weight_limit_1m
        return _json(
            {
                "timezone": "UTC",
                "serverTime": self.clock.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": limit,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "DAY",
                        "intervalNum": 1,
                        "limit": 200000,
                    },
                    {
                        "rateLimitType": "RAW_REQUESTS",
                        "interval": "MINUTE",
                        "intervalNum": 5,
                        "limit": 61000,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(s) for s in wanted],
            }
        )

    @staticmethod
    def _int_param(request: web.Request, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 20:
            raise _BadParam(
                _error(
                    400,
                    -1100,
                    f"Illegal characters found in parameter '{name}'; "
                    "legal range is '^[0-9]{1,20}$'.",
                )
            )
        return int(raw)

    async def _klines(self, request: web.Request) -> web.Response:
        q = request.query
        for name in ("symbol", "interval"):
            if not q.get(name):
                return _error(
                    400,
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        symbol, tf = q["symbol"], q["interval"]
        if not self.market.has_symbol(symbol):
            return _error(400, -1121, "Invalid symbol.")
        if tf not in INTERVAL_MS:
            return _error(400, -1120, "Invalid interval.")
        limit = self._int_param(request, "limit")
        start = self._int_param(request, "startTime")
        end = self._int_param(request, "endTime")
        limit = MAX_KLINES_LIMIT // 2 if limit is None else min(limit, MAX_KLINES_LIMIT)
        if limit < 1:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'.")
        if start is not None and end is not None and start > end:
            return _error(400, -1023, "Start time is greater than end time.")
        rows: list[Any] = self.klines_rows(symbol, tf, start, end, limit)
        extra = self.faults.rest_extra_rows
        if extra and len(rows) + len(extra) <= limit:
            rows = rows + extra
        return _json(rows)

    def klines_rows(
        self, symbol: str, timeframe: str, start: int | None, end: int | None, limit: int
    ) -> list[Row]:
        """What ``GET /api/v3/klines`` answers now: open_time in [start, end], ascending, at most
        ``limit`` (the oldest first with ``start``, else the most recent); the forming kline, if
        in range, comes last with its partial values."""
        now = self.clock.now_ms()
        iv = INTERVAL_MS[timeframe]
        hi = floor_to(now, iv) if end is None else min(floor_to(now, iv), floor_to(end, iv))
        if start is not None:
            lo = floor_to(start + iv - 1, iv)
            hi = min(hi, lo + (limit - 1) * iv)
        else:
            lo = max(0, hi - (limit - 1) * iv)
        lo = max(lo, self.market.first_open(timeframe))
        return [self.market.row_at(symbol, timeframe, t, now) for t in range(lo, hi + 1, iv)]

    # -- admin -----------------------------------------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        self.stats.weight_used_1m = self._weight.used(self.config.time_source())
        self.stats.connections_open = len(self._conns)
        return _json(self.stats.to_json())

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(changes)
        except (ValueError, orjson.JSONDecodeError) as exc:
            return web.Response(
                status=400, body=orjson.dumps({"error": str(exc)}), content_type="application/json"
            )
        return _json(self.faults.to_json())

    async def _get_clock(self, request: web.Request) -> web.Response:
        c = self.clock
        return _json({"now_ms": c.now_ms(), "start_ms": c.start_ms, "speed": c.speed})

    async def _post_disconnect(self, request: web.Request) -> web.Response:
        return _json({"disconnected": self.disconnect_all()})


async def serve_until(
    config: SimConfig,
    stop: asyncio.Event,
    on_ready: Callable[[Simulator], None] | None = None,
) -> None:
    """Run a simulator until ``stop`` is set (the standalone / CLI entry)."""
    async with Simulator(config) as sim:
        if on_ready is not None:
            on_ready(sim)
        await stop.wait()
