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
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ingestor.simulator.config import SimConfig
from ingestor.simulator.exchange_info import exchange_info
from ingestor.simulator.faults import FaultConfig, disconnect_schedule
from ingestor.simulator.market import (
    INTERVAL_MS,
    MAX_KLINES_LIMIT,
    Market,
    Row,
    SimClock,
    floor_to,
)
from ingestor.simulator.stats import SimStats
from ingestor.simulator.streams import Streams
from ingestor.simulator.throttle import Rejection, Throttle
from ingestor.simulator.ticker import Ticker

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
_log = logging.getLogger(__name__)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        self.market = Market(cfg.seed, cfg.symbols, cfg.replays, anchor_ms=self.clock.start_ms)
        self.host = cfg.host
        self.port = 0
        self._rng = random.Random(cfg.seed)
        self._throttle = Throttle(
            cfg.weight_limit_1m,
            cfg.ban_after_violations,
            cfg.ban_duration_s,
            self.faults,
            self._rng,
        )
        self._streams = Streams(cfg, self.stats, self.clock, self.market, self.faults, self._rng)
        self._ticker = Ticker(cfg, self.stats, self.clock, self.market, self._streams)
        self._tasks: list[asyncio.Task[None]] = []
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
        app.router.add_routes(self._streams.routes())
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
            asyncio.create_task(self._ticker.run(), name="sim-market"),
            asyncio.create_task(
                disconnect_schedule(self.faults, self.config.time_source, self.disconnect_all),
                name="sim-disconnect",
            ),
        ]

    async def stop(self) -> None:
        """Send ``serverShutdown`` to every connection, close them, stop serving."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._streams.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def _retry_until(self) -> float:
        """The Retry-After window's end; tests reset it to skip waiting it out."""
        return self._throttle.retry_until

    @_retry_until.setter
    def _retry_until(self, value: float) -> None:
        self._throttle.retry_until = value

    # -- runtime controls ------------------------------------------------------------------

    def set_faults(self, **changes: Any) -> None:
        """Change fault knobs (same names and validation as ``POST /_sim/faults``)."""
        self.faults.update(changes)

    def disconnect_all(self) -> int:
        """Abort every websocket connection (no close frame, like a network drop)."""
        return self._streams.disconnect_all()

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
        rejection = self._throttle.admit(now, weight)
        resp: web.StreamResponse
        if rejection is not None:
            resp = self._reject(rejection)
        else:
            if self.faults.rest_delay_s:
                await asyncio.sleep(self.faults.rest_delay_s)
            try:
                resp = await handler(request)
            except _BadParam as bad:
                resp = bad.response
            if resp.status == 400:
                self.stats.rest_400s += 1
        used = self._throttle.used(cfg.time_source())
        self.stats.weight_used_1m = used
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        resp.headers["X-MBX-USED-WEIGHT"] = str(used)
        return resp

    def _reject(self, rejection: Rejection) -> web.Response:
        status, retry_after_s = rejection.status, rejection.retry_after_s
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
        return _json(exchange_info(wanted, self.clock.now_ms(), self.config.weight_limit_1m))

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
        return _json(self.klines_rows(symbol, tf, start, end, limit))

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
        return [self.market.row_at(symbol, timeframe, t, now) for t in range(lo, hi + 1, iv)]

    # -- admin -----------------------------------------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        self.stats.weight_used_1m = self._throttle.used(self.config.time_source())
        self.stats.connections_open = self._streams.open_count()
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
