"""The REST client against a real HTTP server on a free port: whatever the exchange answers in
``Retry-After`` and ``X-MBX-USED-WEIGHT-1M``, the client waits a bounded time or raises a typed
error, never an uncaught one and never forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

from ingestor.errors import ExchangeError, RateLimited
from ingestor.pacing import KLINES_WEIGHT, WeightPacer
from ingestor.rest import ExchangeClock, RestClient
from ingestor.retry_after import MAX_WAIT_S, retry_after_s

Answer = Callable[[], web.Response]


@pytest.fixture
async def exchange() -> AsyncIterator[tuple[str, list[Answer]]]:
    """A real HTTP server answering ``/api/v3/klines`` with canned responses, then 200s."""
    answers: list[Answer] = []

    async def klines(request: web.Request) -> web.Response:
        if answers:
            return answers.pop(0)()
        return web.json_response([])

    async def server_time(request: web.Request) -> web.Response:
        if answers:
            return answers.pop(0)()
        return web.json_response({"serverTime": 1_700_000_000_000})

    async def exchange_info(request: web.Request) -> web.Response:
        if answers:
            return answers.pop(0)()
        return web.json_response({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING"}]})

    app = web.Application()
    app.router.add_get("/api/v3/klines", klines)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", exchange_info)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", answers
    finally:
        await runner.cleanup()


def _limited(status: int, retry_after: str) -> Answer:
    return lambda: web.Response(status=status, headers={"Retry-After": retry_after})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("inf", 60.0),  # not a number of seconds: the default
        ("nan", 60.0),
        ("1e12", MAX_WAIT_S),
        ("99999999999999999999", MAX_WAIT_S),
        ("-5", 60.0),  # no such delay: the default
        ("\u00b2", 60.0),  # a digit to str.isdigit, not to int()
        ("", 60.0),
        ("soon", 60.0),
        ("7", 7.0),
        (" 2.5 ", 2.5),
    ],
)
async def test_a_418s_retry_after_is_parsed_and_bounded(
    exchange: tuple[str, list[Answer]], header: str, expected: float
) -> None:
    url, answers = exchange
    answers.append(_limited(418, header))
    async with RestClient(url, 5, ExchangeClock()) as rest:
        with pytest.raises(RateLimited) as info:
            await rest.klines_body("BTCUSDT", "1m")
    assert info.value.retry_after == expected


async def test_an_http_date_retry_after_is_waited_out(
    exchange: tuple[str, list[Answer]],
) -> None:
    url, answers = exchange
    soon = datetime.now(UTC) + timedelta(seconds=2)
    answers.append(_limited(429, format_datetime(soon, usegmt=True)))
    answers.append(_limited(429, "Thu, 01 Jan 1970 00:00:00 GMT"))  # long past: no wait
    async with RestClient(url, 5, ExchangeClock()) as rest:
        t0 = time.monotonic()
        body = await rest.klines_body("BTCUSDT", "1m")
        waited = time.monotonic() - t0
    assert body == b"[]"
    assert 0.5 <= waited <= 10, waited  # the date's ~1-2 s (whole seconds), not forever


async def test_a_mangled_used_weight_header_is_ignored(
    exchange: tuple[str, list[Answer]],
) -> None:
    url, answers = exchange
    answers.append(lambda: web.json_response([], headers={"X-MBX-USED-WEIGHT-1M": "\u00b2"}))
    answers.append(lambda: web.json_response([], headers={"X-MBX-USED-WEIGHT-1M": "42"}))
    async with RestClient(url, 5, ExchangeClock()) as rest:
        assert await rest.klines_body("BTCUSDT", "1m") == b"[]"
        assert rest.used_weight == 0
        assert await rest.klines_body("BTCUSDT", "1m") == b"[]"
        assert rest.used_weight == 42


def test_retry_after_parser() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_s("120") == 120.0
    assert retry_after_s(None) == 60.0
    assert retry_after_s("x", default_s=5) == 5.0
    assert retry_after_s("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert retry_after_s("Thu, 01 Jan 2026 06:00:00 GMT", now=now) == MAX_WAIT_S
    assert retry_after_s("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0.0
    assert retry_after_s("Wed, 31 Dec 2025 23:00:00", now=now) == 0.0  # no zone: UTC
    assert retry_after_s("Mon, 99 Foo 2025 99:00:00 GMT", now=now) == 60.0
    assert retry_after_s("30", max_s=10) == 10.0
    assert MAX_WAIT_S == 600.0


async def test_the_startup_calls_wait_out_429s(exchange: tuple[str, list[Answer]]) -> None:
    """Found by make soak: a 429 on the server-time request at startup ended the daemon."""
    url, answers = exchange
    answers.extend([_limited(429, "1"), _limited(429, "1")])
    async with RestClient(url, 5, ExchangeClock()) as rest:
        assert await rest.sync_time() == 1_700_000_000_000
        answers.append(_limited(429, "1"))
        assert await rest.exchange_symbols() == {"BTCUSDT": "TRADING"}
    assert not answers


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"[]", b'{"serverTime": "soon"}', b'{"symbols": 3}', b"7"],
)
async def test_hostile_startup_bodies_are_exchange_errors(
    exchange: tuple[str, list[Answer]], body: bytes
) -> None:
    url, answers = exchange
    answers.extend([lambda: web.Response(body=body)] * 2)
    async with RestClient(url, 5, ExchangeClock()) as rest:
        with pytest.raises(ExchangeError):
            await rest.sync_time()
        with pytest.raises(ExchangeError):
            await rest.exchange_symbols()


def _info(rate_limits: object) -> Answer:
    body = {"rateLimits": rate_limits, "symbols": [{"symbol": "BTCUSDT", "status": "TRADING"}]}
    return lambda: web.json_response(body)


_WEIGHT = {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1}


@pytest.mark.parametrize(
    ("rate_limits", "expected"),
    [
        ([{**_WEIGHT, "limit": 6000}], 6000),
        ([{"rateLimitType": "ORDERS", "limit": 50}, {**_WEIGHT, "limit": 1200}], 1200),
        ([{**_WEIGHT, "intervalNum": 5, "limit": 61000}], None),  # not per minute
        ([{**_WEIGHT, "limit": "6000"}], None),
        ([{**_WEIGHT, "limit": 0}], None),
        ([{**_WEIGHT, "limit": True}], None),
        ([{**_WEIGHT, "limit": 6000.5}], None),
        ("6000", None),
        ([None, 7, []], None),
        (None, None),
    ],
)
async def test_the_advertised_weight_limit_is_read_or_left_unknown(
    exchange: tuple[str, list[Answer]], rate_limits: object, expected: int | None
) -> None:
    url, answers = exchange
    answers.append(_info(rate_limits))
    async with RestClient(url, 5, ExchangeClock()) as rest:
        assert await rest.exchange_symbols() == {"BTCUSDT": "TRADING"}
        assert rest.weight_limit_1m == expected


async def test_a_paced_client_counts_every_klines_request(
    exchange: tuple[str, list[Answer]],
) -> None:
    url, answers = exchange
    pacer = WeightPacer(100)
    answers.append(_limited(429, "0"))  # waited out inside one paced request
    async with RestClient(url, 5, ExchangeClock(), pacer) as rest:
        await asyncio.gather(*(rest.klines_body("BTCUSDT", "1m") for _ in range(5)))
        await rest.sync_time()  # not a klines request: not paced
    assert pacer.requests == 5 and pacer.weight_sent == 5 * KLINES_WEIGHT
    assert pacer.used() == 5 * KLINES_WEIGHT  # all done, still inside the window
    pacer.resize(KLINES_WEIGHT)
    assert pacer.budget == KLINES_WEIGHT
    with pytest.raises(ValueError, match="below one request"):
        pacer.resize(1)
