"""A tiny MongoDB wire-protocol server for failures a real server will not produce on demand.

It answers the handshake and monitoring (``hello``/``isMaster``) like a writable primary, then
treats every other command per ``mode``:

* ``"hang"``: reads it and never answers (a hung server: the socket stays open, silent);
* ``"unauthorized"``: answers ``{ok: 0, code: 13, codeName: "Unauthorized"}``.

``commands`` records the name of every non-handshake command received.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any, Literal

import bson

__all__ = ["FakeWire"]

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
_HANDSHAKE = {"hello", "ismaster", "isMaster", "endSessions"}


def _hello() -> dict[str, Any]:
    return {
        "isWritablePrimary": True,
        "ismaster": True,
        "helloOk": True,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000,
        "logicalSessionTimeoutMinutes": 30,
        "minWireVersion": 0,
        "maxWireVersion": 21,
        "ok": 1.0,
    }


class FakeWire:
    def __init__(self, mode: Literal["hang", "unauthorized"]) -> None:
        self.mode = mode
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    async def __aenter__(self) -> FakeWire:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                if opcode == OP_QUERY:  # the driver's first handshake: always a hello
                    reply = bson.encode(_hello())
                    msg = struct.pack("<iqii", 0, 0, 0, 1) + reply
                    writer.write(struct.pack("<iiii", 16 + len(msg), 0, request_id, OP_REPLY) + msg)
                    await writer.drain()
                    continue
                if opcode != OP_MSG:
                    return
                # flagBits, then section kind 0 with the command document first
                size = struct.unpack("<i", body[5:9])[0]
                doc = bson.decode(body[5 : 5 + size])
                name = next(iter(doc))
                if name in _HANDSHAKE:
                    answer: dict[str, Any] | None = _hello() if name != "endSessions" else {"ok": 1}
                else:
                    self.commands.append(name)
                    answer = (
                        None
                        if self.mode == "hang"
                        else {
                            "ok": 0.0,
                            "code": 13,
                            "codeName": "Unauthorized",
                            "errmsg": f"not authorized on {doc.get('$db')} to execute command "
                            f"{{ {name}: ... }}",
                        }
                    )
                if answer is None:
                    continue  # hung: never answer
                payload = struct.pack("<I", 0) + b"\0" + bson.encode(answer)
                writer.write(
                    struct.pack("<iiii", 16 + len(payload), 0, request_id, OP_MSG) + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
