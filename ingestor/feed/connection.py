"""One combined-stream websocket connection, kept up forever.

* reconnects with jittered exponential backoff (``ingestor.retry``, under the shared attempt
  budget); a handshake refused for good (HTTP 4xx other than 429/418: a bad stream name, a
  forbidden region) is reported once as a permanent failure and re-tried only slowly;
* answers the server's pings (the websockets library pongs automatically) and pings too, so a
  half-open TCP connection is noticed; a connection silent for ``silence_s`` is treated as dead;
* reconnects at once on a ``serverShutdown`` event;
* replaces itself before Binance's 24-hour cut-off: the new connection is opened first and the
  old one closed only once the new one delivers, so nothing is lost (the sequencer drops the
  overlap's repeats).

TLS (``wss://``, as Binance's streams are): the server's certificate and host name are always
verified, with the system's default CA store (``ssl.create_default_context()``; OpenSSL's
``SSL_CERT_FILE`` is honoured) unless an ``ssl_context`` is injected (a private CA, the tests).
Every client takes the same context and uses it for ``wss://`` URLs only. A certificate that
does not verify is a permanent failure (``tls_certificate``): reported, re-checked slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from ingestor.errors import ExchangeError
from ingestor.failures import Failures
from ingestor.feed.limits import AttemptBudget
from ingestor.retry import RECHECK_S, Backoff, classify

__all__ = ["MAX_FRAME_BYTES", "MAX_QUEUE", "ConnectionState", "FeedConnection", "FrameSink"]

log = logging.getLogger(__name__)

#: Largest frame accepted: real kline and mark-price frames are under 1 KiB, a subscription
#: list a few KiB; anything larger ends the connection (close 1009) and it reconnects.
MAX_FRAME_BYTES = 64 * 1024
#: Frames buffered ahead of the reader: at most MAX_QUEUE x MAX_FRAME_BYTES per connection.
MAX_QUEUE = 16

#: Called with each raw frame; returns True when the frame was a serverShutdown event.
FrameSink = Callable[[str | bytes], Awaitable[bool]]


@dataclass(slots=True)
class ConnectionState:
    """What the health endpoint reads about one connection."""

    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    last_frame_at: float = 0.0
    rollovers: int = 0


class FeedConnection:
    def __init__(
        self,
        index: int,
        url: str,
        sink: FrameSink,
        budget: AttemptBudget,
        *,
        max_age_s: float = 23.5 * 3600,
        silence_s: float = 30.0,
        backoff: Backoff | None = None,
        failures: Failures | None = None,
        recheck_s: float = RECHECK_S,
        component: str = "",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.index = index
        self.url = url
        self._sink = sink
        self._budget = budget
        self.max_age_s = max_age_s
        self.silence_s = silence_s
        self._backoff = backoff or Backoff()
        self._failures = failures if failures is not None else Failures()
        self._recheck_s = recheck_s
        #: the name failures are reported under (default ``feed connection <index>``)
        self.component = component or f"feed connection {index}"
        self.state = ConnectionState()
        #: the TLS context of a ``wss://`` URL (None: the library's default, the system store)
        self.ssl_context = ssl_context
        #: The newest open connection of the client library (what ``_open`` returned).
        self.link: Any = None

    # -- the websocket client: these three are all a client library has to provide ---------------

    async def _open(self) -> Any:
        """One open connection (a link), or the client's error (``_connect`` classifies it)."""
        secure = self.ssl_context is not None and self.url.startswith("wss:")
        tls: dict[str, Any] = {"ssl": self.ssl_context} if secure else {}  # else the default
        return await connect(
            self.url,
            ping_interval=20,
            ping_timeout=60,
            open_timeout=10,
            close_timeout=2,
            max_size=MAX_FRAME_BYTES,
            max_queue=MAX_QUEUE,
            **tls,
        )

    async def _read(self, ws: Any, first_frame: asyncio.Event) -> str:
        """Hand every frame of ``ws`` to the sink until the connection ends; returns why."""
        try:
            while True:
                async with asyncio.timeout(self.silence_s):
                    raw = await ws.recv()
                self.state.last_frame_at = time.monotonic()
                first_frame.set()
                if await self._sink(raw):
                    return "serverShutdown"
        except TimeoutError:
            return f"silent for {self.silence_s:.0f}s"
        except WebSocketException as exc:
            return f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _close(self, ws: Any) -> None:
        """Close ``ws`` (1000), waiting a little for the server's answer."""
        await ws.close()

    # -- the connection's life: the same for every client ------------------------------------

    async def _connect(self) -> Any:
        while True:
            await self._budget.acquire()
            try:
                ws = await self._open()
            except (OSError, WebSocketException, TimeoutError, ExchangeError) as exc:
                verdict = classify(exc)
                if verdict.permanent:
                    self._failures.report(self.component, verdict, f"url {self.url[:200]}")
                    await asyncio.sleep(self._recheck_s)
                    continue
                delay = self._backoff.next_delay()
                log.warning(
                    "feed connection %d: connect failed (%s); retry in %.2fs",
                    self.index,
                    verdict,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._failures.clear(self.component)
            self.state.connects += 1
            if self.state.connects > 1:
                self.state.reconnects += 1
            self.state.connected = True
            return ws

    def _start(
        self, tg: asyncio.TaskGroup, ws: Any
    ) -> tuple[asyncio.Task[str], asyncio.Event, float]:
        first = asyncio.Event()
        self.link = ws
        return tg.create_task(self._read(ws, first)), first, time.monotonic()

    async def run(self) -> None:
        """Keep the connection up until cancelled."""
        async with asyncio.TaskGroup() as tg:
            ws = await self._connect()
            reader, first, born = self._start(tg, ws)
            while True:
                age_left = self.max_age_s - (time.monotonic() - born)
                done, _ = await asyncio.wait({reader}, timeout=max(age_left, 0.0))
                if not done:
                    # Roll over before the cut-off: the new connection first, then close the old
                    # one once the new one delivers (or after silence_s).
                    self.state.rollovers += 1
                    log.info("feed connection %d: replacing before the 24h cut-off", self.index)
                    new_ws = await self._connect()
                    new_reader, new_first, new_born = self._start(tg, new_ws)
                    waiter = tg.create_task(new_first.wait())
                    await asyncio.wait(
                        {waiter, new_reader},
                        timeout=self.silence_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    waiter.cancel()
                    await self._close(ws)
                    await reader
                    ws, reader, first, born = new_ws, new_reader, new_first, new_born
                    continue
                why = reader.result()
                self.state.connected = False
                if first.is_set():
                    self._backoff.reset()
                if why == "serverShutdown":
                    log.info("feed connection %d: serverShutdown, reconnecting now", self.index)
                    await asyncio.sleep(self._backoff.base_s * random.random() / 4)
                else:
                    delay = self._backoff.next_delay()
                    log.warning(
                        "feed connection %d lost (%s); reconnecting in %.2fs",
                        self.index,
                        why,
                        delay,
                    )
                    await asyncio.sleep(delay)
                ws = await self._connect()
                reader, first, born = self._start(tg, ws)
