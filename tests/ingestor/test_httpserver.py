"""The hardened HTTP server over real sockets: idle and trickling connections are closed after
the header timeout, keep-alive is short, and no more than ``max_connections`` are ever open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from ingestor.httpserver import HttpServer, Response
from tests.conftest import TIMEOUT_FACTOR

TIMEOUT = 0.5


async def _ok() -> Response:
    return Response(200, b'{"ok": true}')


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, int]]:
    srv = HttpServer({"/ok": _ok}, header_timeout_s=TIMEOUT, max_connections=8)
    port = await srv.start("127.0.0.1", 0)
    try:
        yield srv, port
    finally:
        await srv.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    t0 = time.monotonic()
    async with asyncio.timeout(seconds * TIMEOUT_FACTOR):
        assert await reader.read() == b""  # EOF (or reset): the server closed it
    return time.monotonic() - t0


async def test_idle_and_trickling_connections_are_closed(server: tuple[HttpServer, int]) -> None:
    srv, port = server
    idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
    slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        for byte in b"GET /ok HTTP/1.1\r\nHost: x\r\n":
            slow_w.write(bytes([byte]))
            await asyncio.sleep(TIMEOUT / 10)

    task = asyncio.create_task(trickle())
    waits = await asyncio.gather(_closed_within(idle_r, 3), _closed_within(slow_r, 3))
    task.cancel()
    assert all(w < 3 * TIMEOUT_FACTOR for w in waits)
    assert srv.timed_out == 2
    for w in (idle_w, slow_w):
        w.close()


async def test_keep_alive_is_short(server: tuple[HttpServer, int]) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(2):  # two requests on one connection
        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Keep-Alive: timeout=" in head
        assert await reader.readexactly(12) == b'{"ok": true}'
    await _closed_within(reader, 3)  # then idle: closed
    writer.close()


async def test_at_most_max_connections_are_open(server: tuple[HttpServer, int]) -> None:
    srv, port = server
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    peak = 0
    deadline = time.monotonic() + 3 * TIMEOUT_FACTOR
    while time.monotonic() < deadline and srv.open_connections <= 8 + 1:
        peak = max(peak, srv.open_connections - 1)  # less the accept task
        await asyncio.sleep(0.01)
    assert 0 < peak <= 8
    # A request waiting in the backlog is served once the idle ones time out.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(30 * TIMEOUT_FACTOR):
        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
    for _, w in [*conns, (reader, writer)]:
        w.close()


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"POST /ok HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
        (b"GET /ok HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"400"),
    ],
)
async def test_bad_requests(
    server: tuple[HttpServer, int], request_head: bytes, status: bytes
) -> None:
    _, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_head)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.split(b" ")[1] == status
    writer.close()
