"""Binance REST: klines, exchange info and server time (``ingestor.history`` pages and checks
the klines).

Every response's ``X-MBX-USED-WEIGHT-1M`` is recorded; a 429 raises :class:`RateLimited` with the
server's ``Retry-After`` (``retry_after.retry_after_s``: seconds or an HTTP-date, at most 600 s)
and the client waits that long before its next request; a 418 (IP banned) is never retried.
Given a :class:`~ingestor.pacing.WeightPacer`, every klines request waits until its weight fits
the budget, so concurrent callers (the daemon's startup, the backfill) stay under it together.
Given ``max_in_flight``, at most that many klines requests are on their way at once, whoever
sends them: requests already sent when one is answered 429 reach the exchange inside its
Retry-After window, and an exchange bans (418) an IP that sends there again and again. The
daemon keeps :data:`DAEMON_IN_FLIGHT` (2): a 429 then meets at most one request already sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from ingestor.errors import ExchangeError, RateLimited
from ingestor.pacing import KLINES_WEIGHT, WeightPacer
from ingestor.retry import Backoff
from ingestor.retry_after import retry_after_s
from ingestor.validate import MAX_BODY_BYTES

__all__ = ["KLINES_LIMIT", "ExchangeClock", "RestClient"]

log = logging.getLogger(__name__)

KLINES_LIMIT = 1000


class ExchangeClock:
    """The exchange's time in ms, from one ``/api/v3/time`` sample and a monotonic clock.

    ``time_scale`` is 1 against Binance; the accelerated simulator runs faster. ``monotonic`` is
    injectable (a test drives it together with the simulator's).
    """

    def __init__(
        self, time_scale: float = 1.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._server_ms = time.time() * 1000
        self._mono = monotonic()

    def sync(self, server_ms: int) -> None:
        self._server_ms = float(server_ms)
        self._mono = self._monotonic()

    def now_ms(self) -> int:
        return int(self._server_ms + (self._monotonic() - self._mono) * 1000 * self.time_scale)

    def real_seconds_since(self, exchange_ms: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Real seconds from each exchange time to now (e.g. a kline's close to its commit)."""
        return (self.now_ms() - exchange_ms) / 1000 / self.time_scale

    def closed_before_ms(self) -> int:
        """A kline whose close time is before this has closed, whatever our clock's skew:
        one second of real time (times the scale) behind our estimate of the exchange's now."""
        return self.now_ms() - int(1000 * max(1.0, self.time_scale))


#: Klines requests the daemon keeps in flight (see the module docstring).
DAEMON_IN_FLIGHT = 2


class RestClient:
    """A thin async client over one ``aiohttp.ClientSession``; ``pacer``: the weight budget of
    its klines requests (None: unpaced); ``max_in_flight``: how many of them may be on their
    way at once (None: no bound)."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        clock: ExchangeClock,
        pacer: WeightPacer | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.clock = clock
        self.pacer = pacer
        #: the REQUEST_WEIGHT per minute that exchangeInfo advertised (None: not seen yet)
        self.weight_limit_1m: int | None = None
        self.used_weight = 0
        self.requests = 0
        self._blocked_until = 0.0
        self._in_flight = (
            contextlib.nullcontext() if max_in_flight is None else asyncio.Semaphore(max_in_flight)
        )

    async def __aenter__(self) -> RestClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        body = await self._get_waiting(path, params)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ExchangeError(f"GET {path}: the body is not JSON: {exc}") from None

    async def _get_waiting(
        self, path: str, params: dict[str, Any] | None = None, cap: int | None = None
    ) -> bytes:
        """:meth:`_get_body`, waiting out 429s as Retry-After says (bounded by
        ``retry_after_s``); a 418 (a ban) is raised."""
        while True:
            try:
                return await self._get_body(path, params, cap)
            except RateLimited as exc:
                if exc.status == 418:
                    raise
                log.warning("REST rate limited; waiting %.1fs as Retry-After says", exc.retry_after)

    async def _get_body(
        self, path: str, params: dict[str, Any] | None = None, cap: int | None = None
    ) -> bytes:
        if self._session is None:
            raise ExchangeError("RestClient used outside 'async with'")
        wait = self._blocked_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        url = f"{self._base}{path}"
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        for attempt in range(5):
            try:
                async with self._session.get(url, params=params) as resp:
                    self.requests += 1
                    weight = resp.headers.get("X-MBX-USED-WEIGHT-1M")
                    if weight is not None and weight.isascii() and weight.isdigit():
                        self.used_weight = int(weight)
                    body = await (resp.read() if cap is None else _read_capped(resp, cap))
                    if resp.status in (418, 429):
                        retry_after = retry_after_s(resp.headers.get("Retry-After"))
                        self._blocked_until = time.monotonic() + retry_after
                        raise RateLimited(resp.status, retry_after)
                    if resp.status != 200:
                        raise ExchangeError(
                            f"GET {path} {params}: HTTP {resp.status}: {body[:200]!r}",
                            status=resp.status,
                        )
                    return body
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == 4:
                    raise ExchangeError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
                await backoff.wait()
        raise AssertionError("unreachable")

    async def sync_time(self) -> int:
        data = await self._get("/api/v3/time")
        server = data.get("serverTime") if isinstance(data, dict) else None
        if type(server) is not int or server < 0:
            raise ExchangeError(f"GET /api/v3/time: no serverTime in {str(data)[:200]!r}")
        self.clock.sync(server)
        return server

    async def exchange_symbols(self) -> dict[str, str]:
        """Symbol -> trading status of every symbol the exchange lists."""
        data = await self._get("/api/v3/exchangeInfo")
        symbols = data.get("symbols") if isinstance(data, dict) else None
        if not isinstance(symbols, list):
            raise ExchangeError(f"GET /api/v3/exchangeInfo: no symbols list in {str(data)[:200]!r}")
        self.weight_limit_1m = _weight_limit_1m(data.get("rateLimits"))
        return {
            s["symbol"]: str(s.get("status", ""))
            for s in symbols
            if isinstance(s, dict) and isinstance(s.get("symbol"), str)
        }

    async def klines_body(
        self,
        symbol: str,
        interval: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = KLINES_LIMIT,
    ) -> bytes:
        """A ``GET /api/v3/klines`` body, unparsed and capped at ``validate.MAX_BODY_BYTES``
        (``ingestor.history`` checks it with ``ingestor.validate``); waits for the pacer's
        budget, and out 429s."""
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        async with self._in_flight:
            if self.pacer is None:
                return await self._get_waiting("/api/v3/klines", params, MAX_BODY_BYTES)
            await self.pacer.acquire(KLINES_WEIGHT)
            header: int | None = None
            try:
                body = await self._get_waiting("/api/v3/klines", params, MAX_BODY_BYTES)
                header = self.used_weight
            finally:
                await self.pacer.release(KLINES_WEIGHT, header)
            return body


def _weight_limit_1m(rate_limits: object) -> int | None:
    """The per-minute ``REQUEST_WEIGHT`` limit of an exchangeInfo's ``rateLimits``, or None
    when it holds none that is well formed."""
    if not isinstance(rate_limits, list):
        return None
    for r in rate_limits:
        if (
            isinstance(r, dict)
            and r.get("rateLimitType") == "REQUEST_WEIGHT"
            and r.get("interval") == "MINUTE"
            and r.get("intervalNum") == 1
            and type(r.get("limit")) is int
            and r["limit"] > 0
        ):
            return int(r["limit"])
    return None


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, but never more than ``cap + 1`` bytes in memory: a longer one is cut there
    (``ingestor.validate`` then rejects it as too large) and the connection dropped."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            resp.close()
            return b"".join(chunks)[: cap + 1]
    return b"".join(chunks)
