"""A small HTTP/1.1 server for a handful of GET routes, hardened for an exposed port.

The health port answers the kubelet and Prometheus; nothing else should be able to spend the
daemon's descriptors or loop time through it. Hence, unlike a general-purpose server:

* a request head must arrive whole within ``header_timeout_s`` of the connection (or of the
  previous response): idle and trickling ("slowloris") connections are closed;
* keep-alive is short (the same bound), and a head is at most ``max_header_bytes``;
* at most ``max_connections`` are open at once: the server accepts no more until one closes
  (the others wait in the kernel's listen backlog, holding no descriptor of ours), so the
  health port never holds more descriptors than that, whatever the number of clients;
* GET and HEAD only, no request body; a handler's failure is a 500, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["Handler", "HttpServer", "Response"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


Handler = Callable[[], Awaitable[Response]]


class HttpServer:
    """``await HttpServer(routes).start(host, port)`` -> bound port; ``await close()``."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        header_timeout_s: float = 5.0,
        max_connections: int = 64,
        max_header_bytes: int = 8192,
    ) -> None:
        self.routes = dict(routes)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self.timed_out = 0  # connections closed: no complete request head in time
        self._sock: socket.socket | None = None
        self._slots = asyncio.Semaphore(max_connections)
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def open_connections(self) -> int:
        return len(self._tasks)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port) and return the bound port."""
        loop = asyncio.get_running_loop()
        family, _, _, _, addr = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )[0]
        # A burst of probes or scrapes waits in the kernel (no descriptor of ours) rather than
        # being refused: the backlog is far beyond what max_connections serves at once.
        sock = socket.create_server(addr[:2], family=family, backlog=1024)
        sock.setblocking(False)
        self._sock = sock
        task = asyncio.create_task(self._accept(sock), name="health-accept")
        self._tasks.add(task)
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._sock is None:
            return
        sock, self._sock = self._sock, None
        for writer in list(self._open):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sock.close()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()  # at the cap: accept nothing until a connection ends
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # e.g. EMFILE: the process is out of descriptors
                self._slots.release()
                log.warning("health endpoint: accept failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._serve(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=self.max_header_bytes)
            self._open.add(writer)
            while await self._one(reader, writer):
                pass
        except TimeoutError:
            self.timed_out += 1
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            pass  # a torn, oversized or malformed request: just close
        finally:
            if writer is not None:
                self._open.discard(writer)
                writer.transport.abort()
            else:
                conn.close()
            self._slots.release()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True to keep the connection for another."""
        async with asyncio.timeout(self.header_timeout_s):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")  # ValueError: malformed -> closed
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip().lower()
        keep = (version == "HTTP/1.1" and headers.get("connection") != "close") or (
            version == "HTTP/1.0" and headers.get("connection") == "keep-alive"
        )
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            resp, keep = Response(400, b'{"error": "no request body expected"}'), False
        elif method not in ("GET", "HEAD"):
            resp = Response(405, b'{"error": "GET only"}')
        elif (handler := self.routes.get(target.partition("?")[0])) is None:
            resp = Response(404, b'{"error": "not found"}')
        else:
            try:
                resp = await handler()
            except Exception:
                log.exception("health handler for %s failed", target.partition("?")[0])
                resp = Response(500, b'{"error": "internal error"}')
        reason = HTTPStatus(resp.status).phrase
        out = (
            f"HTTP/1.1 {resp.status} {reason}\r\n"
            f"Content-Type: {resp.content_type}\r\n"
            f"Content-Length: {len(resp.body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n"
        )
        if keep:
            out += f"Keep-Alive: timeout={int(self.header_timeout_s)}\r\n"
        writer.write(out.encode("latin-1") + b"\r\n")
        if method != "HEAD":
            writer.write(resp.body)
        async with asyncio.timeout(self.header_timeout_s):  # a client that does not read
            await writer.drain()
        return keep
