"""A websocket handshake the exchange refuses for good (HTTP 4xx) is a permanent failure: reported
once, re-tried only at the slow cadence; a 5xx is transient. Against a real HTTP server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ingestor.failures import Failures
from ingestor.feed.clients import WS_CLIENTS, connection_class
from ingestor.feed.limits import AttemptBudget
from ingestor.retry import Backoff
from tests.conftest import TIMEOUT_FACTOR


class Refuser:
    """An HTTP server answering every websocket handshake with ``status``."""

    def __init__(self) -> None:
        self.status = 403
        self.attempts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        return web.Response(status=self.status, text="refused")


@pytest.fixture
async def refuser() -> AsyncIterator[tuple[Refuser, str]]:
    r = Refuser()
    app = web.Application()
    app.router.add_get("/stream", r.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield r, f"ws://127.0.0.1:{port}/stream?streams=btcusdt@kline_1m"
    finally:
        await runner.cleanup()


async def _sink(raw: str | bytes) -> bool:
    return False


@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_a_refused_handshake_is_reported_once_and_rechecked_slowly(
    refuser: tuple[Refuser, str], caplog: pytest.LogCaptureFixture, client: str
) -> None:
    server, url = refuser
    failures = Failures()
    recheck_s = 0.3
    conn = connection_class(client)(
        0, url, _sink, AttemptBudget(), failures=failures, recheck_s=recheck_s
    )
    with caplog.at_level(logging.WARNING):
        t0 = time.monotonic()
        task = asyncio.create_task(conn.run())
        try:
            deadline = t0 + 10 * TIMEOUT_FACTOR
            while sum(failures.counts.values()) < 3:
                assert time.monotonic() < deadline, "no permanent failure reported"
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - t0
        finally:
            task.cancel()
    reports = sum(failures.counts.values())
    assert server.attempts <= reports + 1  # one handshake per re-check, no busy loop
    assert elapsed >= (reports - 1) * recheck_s
    assert set(failures.counts) == {(conn.component, "http_403")}
    assert failures.reasons()[conn.component].startswith("http_403: ")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "permanent failure" in lines[0] and "http_403" in lines[0]


@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_a_5xx_handshake_is_retried_with_backoff(
    refuser: tuple[Refuser, str], client: str
) -> None:
    server, url = refuser
    server.status = 503
    failures = Failures()
    conn = connection_class(client)(
        0, url, _sink, AttemptBudget(), failures=failures, backoff=Backoff(0.01, 0.05)
    )
    task = asyncio.create_task(conn.run())
    try:
        deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
        while server.attempts < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert not failures  # transient: retried, never a standing failure
