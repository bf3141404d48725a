"""A feed connection holds a bounded number of bytes: a frame far larger than any real one
(3 MB) ends the connection (close code 1009) instead of reaching the decoder, and the
connection comes back."""

from __future__ import annotations

import contextlib

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ingestor.feed.clients import WS_CLIENTS, connection_class
from ingestor.feed.connection import MAX_FRAME_BYTES, MAX_QUEUE
from ingestor.feed.limits import AttemptBudget
from ingestor.retry import Backoff
from tests.ingestor.feed.helpers import running
from tests.integration.harness import eventually

SMALL = '{"e": "kline"}'


@pytest.mark.parametrize("client", WS_CLIENTS)
async def test_a_3mb_frame_is_refused_and_the_connection_comes_back(client: str) -> None:
    assert 16 * 1024 <= MAX_FRAME_BYTES <= 256 * 1024 and MAX_QUEUE <= 32
    got: list[int] = []
    closes: list[int | None] = []

    async def sink(raw: str | bytes) -> bool:
        got.append(len(raw))
        return False

    async def handler(ws: ServerConnection) -> None:
        if not closes:
            await ws.send("x" * 3_000_000)
        else:
            await ws.send(SMALL)
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        closes.append(ws.close_code)

    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = connection_class(client)(
            0, f"ws://127.0.0.1:{port}/ws", sink, AttemptBudget(), backoff=Backoff(0.01, 0.05)
        )
        async with running(conn):

            async def small_frame() -> bool:
                return bool(got)

            await eventually(small_frame, 15, "a frame on the second connection")
    assert got == [len(SMALL)]
    assert closes[0] == 1009  # message too big
    assert conn.state.reconnects >= 1
