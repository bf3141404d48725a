"""Binance's websocket market streams: connections, their subscriptions, and frame delivery.

Same paths and frames as Binance (``/stream?streams=``, ``/ws/<name>``, SUBSCRIBE /
UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY ``combined``) and its per-connection limits
(streams, incoming messages per second, pings and pong timeout, a bounded send queue that drops
a slow consumer). Each connection has one writer task, so frames leave in order and a close
(``serverShutdown``, a limit) goes out after the frames already queued. What to send and when is
the ticker's business; this module only knows who listens to what.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMessage, WSMsgType, web

from ingestor.simulator.config import SimConfig
from ingestor.simulator.faults import FaultConfig, garbage_frame
from ingestor.simulator.market import INTERVAL_MS, Market, SimClock, floor_to
from ingestor.simulator.stats import SimStats

__all__ = ["Streams"]


@dataclass(slots=True, eq=False)
class _Conn:
    """One websocket connection and its bounded outgoing queue."""

    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    combined: bool
    streams: dict[str, None]  # ordered set of subscribed stream names
    queue: asyncio.Queue[str | tuple[int, str]]
    opened_sim_ms: int  # the 24 h lifetime counts in simulated time from here
    recv_times: deque[float]
    last_ping: float = 0.0
    last_pong: float = 0.0
    closing: bool = False


class Streams:
    """Every open websocket connection and the streams each one is subscribed to."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        clock: SimClock,
        market: Market,
        faults: FaultConfig,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock
        self.market = market
        self.faults = faults
        self._rng = rng
        self._conns: set[_Conn] = set()
        self._subs: dict[str, set[_Conn]] = {}
        self._parsed: dict[str, tuple[str, str, int] | None] = {}
        self._handlers: set[asyncio.Task[Any]] = set()
        #: Open time of each subscribed kline stream's forming kline as of the last tick: set at
        #: the first subscription (a new stream gets no past finals), advanced by the ticker,
        #: dropped with the stream's last subscriber.
        self.last_open: dict[str, int] = {}
        #: Set on every subscription, so the ticker serves a new stream without waiting.
        self.changed = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/stream", self._ws_handler),
            web.get("/ws", self._ws_handler),
            web.get("/ws/{streams:.*}", self._ws_handler),
        ]

    def names(self) -> list[str]:
        """The stream names someone is subscribed to (a snapshot)."""
        return list(self._subs)

    def open_count(self) -> int:
        """Connections open now (``/_sim/stats`` refreshes ``connections_open`` from it)."""
        return len(self._conns)

    def disconnect_all(self) -> int:
        """Abort every websocket connection (no close frame, like a network drop)."""
        conns = list(self._conns)
        for conn in conns:
            self._abort(conn)
        self.stats.fault_disconnects += len(conns)
        return len(conns)

    def parse(self, name: str) -> tuple[str, str, int] | None:
        """``(SYMBOL, timeframe, interval_ms)`` of a kline stream name, None for any other name
        (cached: the ticker asks on every tick; bounded against hostile subscribers)."""
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
        self.stats.last_connection_opened_ms = conn.opened_sim_ms
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

    async def _on_message(self, conn: _Conn, msg: WSMessage) -> bool:
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
            parsed = self.parse(name)
            if parsed is not None and name not in self.last_open:
                self.last_open[name] = floor_to(now, parsed[2])
        self.changed.set()

    def _unsubscribe(self, conn: _Conn, names: list[str]) -> None:
        for name in names:
            conn.streams.pop(name, None)
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subs[name]
                    self.last_open.pop(name, None)

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

    def deliver(self, name: str, event: dict[str, Any], final: bool) -> None:
        """Queue ``event`` to every subscriber of ``name``, with the delivery faults applied."""
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

    def retire_expired(self, now_ms: int) -> int | None:
        """``serverShutdown`` every connection past its lifetime (simulated time); return when
        the next one expires, or None if no open connection will."""
        lifetime = self.config.connection_lifetime_sim_ms
        next_expiry: int | None = None
        for conn in list(self._conns):
            if conn.closing:
                continue
            if now_ms - conn.opened_sim_ms >= lifetime:
                self.stats.lifetime_disconnects += 1
                self._shutdown_conn(conn)
            elif next_expiry is None or conn.opened_sim_ms + lifetime < next_expiry:
                next_expiry = conn.opened_sim_ms + lifetime
        return next_expiry

    async def shutdown(self) -> None:
        """``serverShutdown`` to every connection, let the handlers finish, abort stragglers."""
        for conn in list(self._conns):
            self._shutdown_conn(conn)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        for conn in list(self._conns):
            self._abort(conn)
