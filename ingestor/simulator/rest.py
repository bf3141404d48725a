"""Binance spot's public REST endpoints: ping, time, exchangeInfo, klines.

Same paths, parameters, error codes and messages as Binance, and its request-weight accounting:
every ``/api/`` request is weighed and admitted by the ``Throttle`` (429 / 418 with Retry-After),
delayed by the ``rest_delay_s`` fault, and answered with the ``X-MBX-USED-WEIGHT-1M`` header, so
a client's pacing is tested against the rules it will meet.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ingestor.simulator.config import SimConfig
from ingestor.simulator.exchange_info import exchange_info
from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.market import INTERVAL_MS, MAX_KLINES_LIMIT, Market, Row, SimClock, floor_to
from ingestor.simulator.stats import SimStats
from ingestor.simulator.throttle import Rejection, Throttle

__all__ = ["KLINES_WEIGHT", "Rest", "json_response"]

#: Request weights of Binance spot (GET /api/v3/klines is a flat 2 on spot; futures vary by limit).
KLINES_WEIGHT = 2
_WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": KLINES_WEIGHT,
}
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: object) -> web.Response:
    """A 200 JSON answer, serialised by orjson (also used by the ``/_sim/`` admin routes)."""
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _error(status: int, code: int, msg: str) -> web.Response:
    """Binance's error body: ``{"code": -1121, "msg": "Invalid symbol."}``."""
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "msg": msg}),
        content_type="application/json",
    )


class _BadParam(Exception):
    """A malformed query parameter, raised deep in a handler and answered by the middleware."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class Rest:
    """The ``/api/v3`` routes and the middleware that weighs and throttles them."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        clock: SimClock,
        market: Market,
        faults: FaultConfig,
        throttle: Throttle,
    ) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock
        self.market = market
        self.faults = faults
        self._throttle = throttle

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v3/ping", self._ping),
            web.get("/api/v3/time", self._time),
            web.get("/api/v3/exchangeInfo", self._exchange_info),
            web.get("/api/v3/klines", self._klines),
        ]

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Weigh, throttle, delay and count every ``/api/`` request; other paths pass through."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        cfg = self.config
        self.stats.rest_requests += 1
        weight = _WEIGHTS.get(request.path, 1)
        now = cfg.time_source()
        rejection = self._throttle.admit(now, weight)
        resp: web.StreamResponse
        if rejection is not None:
            resp = self._reject(rejection)
        else:
            st = self.stats
            st.rest_in_flight += 1
            st.rest_in_flight_max = max(st.rest_in_flight_max, st.rest_in_flight)
            try:
                if self.faults.rest_delay_s:
                    await asyncio.sleep(self.faults.rest_delay_s)
                resp = await handler(request)
            except _BadParam as bad:
                resp = bad.response
            finally:
                st.rest_in_flight -= 1
            if resp.status == 400:
                self.stats.rest_400s += 1
        used = self._throttle.used(cfg.time_source())
        self.stats.weight_used_1m = used
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        resp.headers["X-MBX-USED-WEIGHT"] = str(used)
        return resp

    def _reject(self, rejection: Rejection) -> web.Response:
        """Binance's -1003 answer with Retry-After in whole seconds (at least 1 while waiting)."""
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
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self.clock.now_ms()})

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
        return json_response(
            exchange_info(wanted, self.clock.now_ms(), self.config.weight_limit_1m)
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
        return json_response(rows)

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
