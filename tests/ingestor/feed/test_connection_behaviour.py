"""What a feed connection does on the wire, proven for every websocket client
(``exchange.ws_client``): pings answered, ``serverShutdown`` and the server's close codes
answered and followed by a reconnect, a silent connection dropped, the rollover (the new
connection first, the old one closed with 1000 only once the new one delivers), and a slow sink
holding the server back instead of buffering without bound. Against the simulator and real
websocket servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ingestor.feed.clients import WS_CLIENTS, connection_class
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.retry import Backoff
from ingestor.simulator import SimConfig, Simulator
from tests.ingestor.feed.helpers import running as running_conn
from tests.integration.harness import eventually

pytestmark = pytest.mark.parametrize("client", WS_CLIENTS)

SHUTDOWN = '{"event": {"e": "serverShutdown", "E": 1}}'


@dataclass
class Peer:
    """One connection as the server saw it."""

    index: int
    ws: ServerConnection
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None  # the code the client sent (or answered with)


@dataclass
class Server:
    """A websocket server running ``script(ws, peer)`` per connection, recording each one."""

    script: Callable[[ServerConnection, Peer], Awaitable[None]]
    peers: list[Peer] = field(default_factory=list)

    async def handler(self, ws: ServerConnection) -> None:
        peer = Peer(len(self.peers), ws, time.monotonic())
        self.peers.append(peer)
        with contextlib.suppress(Exception):
            await self.script(ws, peer)
            await ws.wait_closed()
        peer.closed_at = time.monotonic()
        peer.close_code = ws.close_code


@contextlib.asynccontextmanager
async def running(
    server: Server, client: str, sink: Callable[[str | bytes], Awaitable[bool]], **kw: object
) -> AsyncIterator[FeedConnection]:
    async with serve(server.handler, "127.0.0.1", 0, max_size=None) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        conn = connection_class(client)(
            0,
            f"ws://127.0.0.1:{port}/stream?streams=btcusdt@kline_1m",
            sink,
            AttemptBudget(),
            backoff=Backoff(0.01, 0.05),
            **kw,  # type: ignore[arg-type]
        )
        async with running_conn(conn):
            yield conn


class Frames:
    """A sink keeping what it got (and when); True for a serverShutdown event."""

    def __init__(self) -> None:
        self.got: list[tuple[float, str]] = []

    async def __call__(self, raw: str | bytes) -> bool:
        text = raw.decode() if isinstance(raw, bytes) else raw
        self.got.append((time.monotonic(), text))
        return "serverShutdown" in text


async def test_the_simulators_pings_are_answered(client: str) -> None:
    """The simulator pings every 50 ms and drops a connection whose pong is 300 ms late."""
    cfg = SimConfig(
        symbols=("BTCUSDT",),
        speed=60.0,
        update_interval_s=0.05,
        ping_interval_s=0.05,
        pong_timeout_s=0.3,
    )
    frames = Frames()
    async with Simulator(cfg) as sim:
        conn = connection_class(client)(
            0, f"{sim.ws_url}/stream?streams=btcusdt@kline_1m", frames, AttemptBudget()
        )
        async with running_conn(conn):

            async def pinged() -> bool:
                return sim.stats.pings_sent >= 20 and bool(frames.got)

            await eventually(pinged, 15, "20 pings sent")
        assert sim.stats.pong_timeouts == 0
        assert sim.stats.connections_total == 1 and conn.state.reconnects == 0


async def test_server_shutdown_from_the_simulator_reconnects_at_once(
    client: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The simulator's 24 h lifetime (here one simulated minute, a real second) ends each
    connection with ``serverShutdown`` then close 1001: the client reconnects at once."""
    cfg = SimConfig(
        symbols=("BTCUSDT",),
        speed=60.0,
        update_interval_s=0.05,
        connection_lifetime_sim_ms=60_000,
    )
    frames = Frames()
    async with Simulator(cfg) as sim:
        conn = connection_class(client)(
            0,
            f"{sim.ws_url}/stream?streams=btcusdt@kline_1m",
            frames,
            AttemptBudget(),
            backoff=Backoff(2.0, 60.0),  # serverShutdown waits at most base_s / 4
        )
        async with running_conn(conn):
            with caplog.at_level(logging.INFO):

                async def back() -> bool:
                    return conn.state.reconnects >= 2 and sim.stats.connections_open == 1

                await eventually(back, 15, "two reconnects after serverShutdown")
    assert sim.stats.server_shutdowns_sent >= 2
    assert sum("serverShutdown" in text for _, text in frames.got) >= 2
    messages = [r.getMessage() for r in caplog.records]
    assert sum("serverShutdown, reconnecting now" in m for m in messages) >= 2
    assert not any(" lost (" in m for m in messages)


async def test_the_servers_close_code_is_answered_then_it_reconnects(client: str) -> None:
    async def script(ws: ServerConnection, peer: Peer) -> None:
        await ws.send(f'{{"n": {peer.index}}}')
        if peer.index == 0:
            await ws.close(1008, "Too many requests")

    server = Server(script)
    frames = Frames()
    async with running(server, client, frames) as conn:

        async def second() -> bool:
            return len(frames.got) >= 2

        await eventually(second, 15, "a frame on the second connection")
    assert [text for _, text in frames.got][:2] == ['{"n": 0}', '{"n": 1}']
    assert server.peers[0].close_code == 1008  # the client answered with the server's code
    assert conn.state.reconnects >= 1


async def test_a_silent_connection_is_dropped_and_replaced(client: str) -> None:
    async def script(ws: ServerConnection, peer: Peer) -> None:
        await ws.send(f'{{"n": {peer.index}}}')  # then silence

    server = Server(script)
    frames = Frames()
    async with running(server, client, frames, silence_s=0.3) as conn:

        async def dropped() -> bool:
            return len(server.peers) >= 2 and server.peers[0].close_code is not None

        await eventually(dropped, 15, "the silent connection dropped and replaced")
    first = server.peers[0]
    assert first.close_code == 1000  # we closed it, cleanly
    assert first.closed_at is not None and first.closed_at - first.opened_at >= 0.3
    assert conn.state.reconnects >= 1


async def test_rollover_opens_the_new_connection_before_closing_the_old(client: str) -> None:
    """Past ``max_age_s`` the connection is replaced: the new one opens and delivers first,
    then the old one is closed with 1000; no reconnect, nothing lost in between."""

    async def script(ws: ServerConnection, peer: Peer) -> None:
        n = 0
        while True:
            await ws.send(f'{{"c": {peer.index}, "n": {n}}}')
            n += 1
            await asyncio.sleep(0.02)

    server = Server(script)
    frames = Frames()
    async with running(server, client, frames, max_age_s=0.5) as conn:

        async def rolled() -> bool:
            return conn.state.rollovers >= 1 and server.peers[0].closed_at is not None

        await eventually(rolled, 15, "a rollover")
    old, new = server.peers[0], server.peers[1]
    assert old.close_code == 1000
    assert old.closed_at is not None and new.opened_at < old.closed_at
    first_new = min(t for t, text in frames.got if text.startswith('{"c": 1,'))
    assert first_new < old.closed_at  # the new connection delivered before the old one closed
    assert conn.state.reconnects == 1 and conn.state.connected  # the rollover's connect only


def _reading(conn: FeedConnection) -> bool:
    """Whether the client reads its socket now (False: paused, the server is held back)."""
    link = conn.link
    transport = getattr(link.transport, "underlying_transport", link.transport)  # picows'
    return bool(transport.is_reading())


async def test_a_slow_sink_holds_the_server_back(client: str) -> None:
    """The sink blocks on the first frame: the client stops reading its socket once its
    bounded queue is full (TCP backpressure: the server can send no faster than the sink
    takes), and reads again as the sink goes on; every frame arrives, in order."""
    size, count = 62_000, 200  # 12 MB in frames under MAX_FRAME_BYTES
    release = asyncio.Event()
    got: list[int] = []

    async def sink(raw: str | bytes) -> bool:
        got.append(int(raw[:8]))
        await release.wait()
        return False

    async def script(ws: ServerConnection, peer: Peer) -> None:
        for i in range(count):
            await ws.send(b"%08d" % i + b"x" * (size - 8), text=True)

    server = Server(script)
    async with running(server, client, sink) as conn:

        async def paused() -> bool:
            return bool(got) and conn.link is not None and not _reading(conn)

        await eventually(paused, 15, "the client paused reading")
        assert got == [0]
        release.set()

        async def all_in() -> bool:
            return len(got) >= count

        await eventually(all_in, 30, "every frame once the sink goes on")
        assert _reading(conn)
    assert got == list(range(count))
    assert conn.state.reconnects == 0
