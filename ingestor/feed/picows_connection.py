"""The feed connection on ``picows`` (a Cython websocket client): the same life as
:class:`ingestor.feed.connection.FeedConnection` (backoff under the shared attempt budget,
permanent failures for a refused handshake, ``serverShutdown``, the silence rule, the rollover
before 24 h), with frames parsed in C and delivered by callback instead of one ``recv()`` and
one ``asyncio.timeout`` per frame.

What the library leaves to us, and how it is done here:

* frames arrive in a synchronous callback; they wait in a deque of at most ``MAX_QUEUE`` frames
  (plus the rest of the read they came in) for the reader task, which awaits the sink for each.
  At ``MAX_QUEUE`` the socket stops being read until the reader has drained it to a quarter:
  a slow sink slows the server (TCP backpressure), as ``websockets``' ``max_queue`` does;
* the silence rule is one timer per connection, re-armed lazily: dead when the reader has waited
  ``silence_s`` for a frame (a blocked sink is not silence);
* the server's close is answered with its own code; ours is 1000, and we wait up to
  ``CLOSE_TIMEOUT_S`` for the answer; a frame over ``MAX_FRAME_BYTES`` closes with 1009 (picows'
  parser), as does a fragmented message that grows past it (reassembled here);
* pings are answered by picows; it pings a server idle for 20 s and drops it without a pong
  within 20 s (picows wants that <= the idle time; the 30 s silence rule comes first anyway);
* a handshake answered with an HTTP status is an :class:`ExchangeError` with that status, so
  ``ingestor.retry.classify`` treats 4xx as permanent like ``websockets``' ``InvalidStatus``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from ingestor.errors import ExchangeError
from ingestor.feed.connection import MAX_FRAME_BYTES, MAX_QUEUE, FeedConnection

__all__ = ["CLOSE_TIMEOUT_S", "PicowsFeedConnection"]

#: Seconds to wait for the server's answer to our close frame (``websockets``' close_timeout).
CLOSE_TIMEOUT_S = 2.0
#: Seconds to open the TCP connection and finish the handshake (``websockets``' open_timeout).
OPEN_TIMEOUT_S = 10.0

# picows logs every disconnect (INFO) and its own view of errors we report with their reason
# once, in our words ("feed connection N lost (...)"): only its critical lines pass.
log = logging.getLogger(__name__)
_picows_log = logging.getLogger(__name__ + ".picows")
_picows_log.setLevel(logging.CRITICAL)

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_RESUME_AT = MAX_QUEUE // 4


class _Link(WSListener):
    """One picows connection: frames in (callback), frames out to the reader task."""

    def __init__(self) -> None:
        super().__init__()
        self.transport: WSTransport | None = None
        self.frames: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.waiting_since = 0.0  # loop time the reader began waiting for a frame
        self.paused = False
        self.closed_by: str = ""  # why the connection ended, once it has
        self._parts: list[bytes] | None = None  # a fragmented message being reassembled
        self._size = 0

    # -- picows callbacks (synchronous, in the event loop) ---------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if transport.is_close_frame_sent:
                # Closing: the rest is not read. picows' parser, having sent 1009 for a frame
                # over max_frame_size, still reads and hands over that frame (for the 10 ms
                # before it disconnects): it must not reach the sink.
                return
            if frame.fin:
                self._deliver(frame.get_payload_as_bytes())
            else:
                self._parts = [frame.get_payload_as_bytes()]
                self._size = frame.payload_size
        elif kind is _CONTINUATION:
            if self._parts is None:
                self._end(transport, WSCloseCode.PROTOCOL_ERROR, "continuation without a start")
                return
            self._size += frame.payload_size
            if self._size > MAX_FRAME_BYTES:
                self._parts = None
                self._end(transport, WSCloseCode.MESSAGE_TOO_BIG, f"message over {MAX_FRAME_BYTES}")
                return
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                raw, self._parts = b"".join(self._parts), None
                self._deliver(raw)
        elif kind is _CLOSE:
            code = frame.get_close_code()
            sent = transport.close_handshake.sent if transport.close_handshake else None
            if sent is None:
                transport.send_close(code)  # answer with the server's code, as websockets does
                if not self.closed_by:
                    reason = frame.get_close_reason()
                    self.closed_by = f"closed by the server ({int(code.value)} {reason})"
            elif not self.closed_by:  # the answer to picows' own close (1009, 1002)
                self.closed_by = f"closed ({int(sent.code.value)} {sent.reason})"
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed_by:
            sent = None if transport.close_handshake is None else transport.close_handshake.sent
            # picows closed it itself (a frame over max_frame_size: 1009; a protocol error)
            self.closed_by = (
                "connection lost" if sent is None else f"closed ({sent.code.value} {sent.reason})"
            )
        self._wake()

    # -- the reader's side -------------------------------------------------------------------

    def _deliver(self, raw: bytes) -> None:
        frames = self.frames
        frames.append(raw)
        if self.waiter is not None:
            self._wake()
        if len(frames) >= MAX_QUEUE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.underlying_transport.pause_reading()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    def _end(self, transport: WSTransport, code: WSCloseCode, why: str) -> None:
        self.closed_by = f"{why} (close {int(code.value)})"
        transport.send_close(code)
        transport.disconnect()

    def end(self, why: str) -> None:
        """Our side ends the connection (silence, rollover, shutdown): close 1000."""
        if not self.closed_by:
            self.closed_by = why
        transport = self.transport
        if (
            transport is not None
            and not transport.is_disconnected
            and not transport.is_close_frame_sent
        ):
            transport.send_close(WSCloseCode.OK)
        self._wake()


class PicowsFeedConnection(FeedConnection):
    """:class:`FeedConnection` on picows: same constructor, state, logs and behaviour."""

    async def _open(self) -> _Link:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                transport, link = await ws_connect(
                    _Link,
                    self.url,
                    ssl_context=self.ssl_context,  # wss:// only; None: the system store
                    websocket_handshake_timeout=OPEN_TIMEOUT_S,
                    logger_name=_picows_log,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=20,
                    auto_ping_reply_timeout=20,
                    enable_auto_pong=True,
                    max_frame_size=MAX_FRAME_BYTES,
                )
        except WSHandshakeError as exc:
            status = None if exc.response is None else int(exc.response.status)
            raise ExchangeError(f"websocket handshake failed: {exc}", status) from exc
        except WSError as exc:
            raise ExchangeError(f"websocket handshake failed: {exc}") from exc
        assert isinstance(link, _Link)
        link.transport = transport
        return link

    async def _read(self, ws: Any, first_frame: asyncio.Event) -> str:
        link: _Link = ws
        frames = link.frames
        sink = self._sink
        state = self.state
        loop = asyncio.get_running_loop()
        silence_s = self.silence_s
        timer: asyncio.TimerHandle | None = None

        def check_silence() -> None:
            nonlocal timer
            now = loop.time()
            if link.waiter is not None and now - link.waiting_since >= silence_s:
                link.end(f"silent for {silence_s:.0f}s")
                timer = None
                return
            due = link.waiting_since + silence_s if link.waiter is not None else now + silence_s
            timer = loop.call_at(due, check_silence)

        try:
            timer = loop.call_later(silence_s, check_silence)
            while True:
                if frames:
                    state.last_frame_at = time.monotonic()
                    first_frame.set()
                    while frames:
                        raw = frames.popleft()
                        if link.paused and len(frames) <= _RESUME_AT:
                            link.resume()
                        if await sink(raw):
                            return "serverShutdown"
                    continue
                if link.closed_by:
                    return link.closed_by
                link.waiter = loop.create_future()
                link.waiting_since = loop.time()
                await link.waiter
        finally:
            if timer is not None:
                timer.cancel()
            await self._close(link)

    async def _close(self, ws: Any) -> None:
        link: _Link = ws
        transport = link.transport
        if transport is None or transport.is_disconnected:
            return
        link.end("closed by us")
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(transport.wait_disconnected())
        except TimeoutError:
            transport.disconnect(graceful=False)
        except Exception as exc:  # picows' own close (1009, 1002): its reason is in closed_by
            log.debug("feed connection %d: %s", self.index, exc)
        finally:
            transport.disconnect()
