"""The floor: the least any consumer of a kline flood can spend per kline on the daemon's stack.

It does only what every consumer that stores the klines must do, each step in the cheapest way
this stack has: the daemon's websocket client (``picows``, frames parsed in C and handed over by
callback, on uvloop), ``orjson.loads`` per frame, and one PyMongo ``insert_many`` per close time
(the group is sent as soon as every stream closing then is in, as the daemon's batch is; a
40 ms linger covers a missing one) with the daemon's write concern. What it stores is a
document of the real size and shape, encoded once per stream at its first kline and sent again
as it is: no validation, no Decimal128 conversion, no indicators, no journal, no watermark, no
bookkeeping. It stores wrong data on purpose, so it is a yardstick and nothing else: the
naive consumer's CPU per kline divided by the floor's is the highest ratio any implementation
on this stack can reach on that flood, and the daemon's figure minus the floor's is what all of
its own work costs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import bson
import orjson
from bson.raw_bson import RawBSONDocument
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from pymongo import AsyncMongoClient

from bench.naive_consumer import kline_document
from indicators import OUTPUT_FIELDS
from ingestor.store.concerns import durable
from ingestor.streams import TIMEFRAME_MS

__all__ = ["LINGER_S", "FloorConsumer"]

#: Seconds a close time's group waits for a late stream (the daemon's default linger).
LINGER_S = 0.040
_TEXT = WSMsgType.TEXT


class FloorConsumer:
    """``await FloorConsumer(ws_url, names, mongo_uri=...).run(seconds)`` -> counters."""

    def __init__(
        self,
        ws_url: str,
        stream_names: list[str],
        *,
        mongo_uri: str,
        per_connection: int = 200,
        database: str = "bench_floor",
    ) -> None:
        self.urls = [
            f"{ws_url}/stream?streams={'/'.join(stream_names[i : i + per_connection])}"
            for i in range(0, len(stream_names), per_connection)
        ]
        self.intervals = [TIMEFRAME_MS[name.rsplit("_", 1)[1]] for name in stream_names]
        self.mongo_uri = mongo_uri
        self.database = database
        self.frames = 0
        self.stored = 0
        self.batches = 0
        self._templates: dict[str, RawBSONDocument] = {}
        #: close time -> (streams closing then, their documents so far)
        self._groups: dict[int, tuple[int, list[RawBSONDocument]]] = {}
        self._inserts: set[asyncio.Task[None]] = set()
        self._coll: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_frame(self, payload: bytes) -> None:
        self.frames += 1
        data = orjson.loads(payload)["data"]
        k = data["k"]
        if not k["x"]:
            return
        stream = data["s"] + k["i"]
        doc = self._templates.get(stream)
        if doc is None:
            doc = self._templates[stream] = _template(data["s"], k)
        close = k["T"]
        group = self._groups.get(close)
        if group is None:
            expected = sum(1 for iv in self.intervals if (close + 1) % iv == 0)
            group = self._groups[close] = (expected, [])
            assert self._loop is not None
            self._loop.call_later(LINGER_S, self._flush, close)
        expected, docs = group
        docs.append(doc)
        if len(docs) == expected:
            self._flush(close)

    def _flush(self, close: int) -> None:
        _, docs = self._groups.pop(close, (0, []))
        if docs:
            assert self._loop is not None
            task = self._loop.create_task(self._insert(docs))
            self._inserts.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._inserts.discard)

    async def _insert(self, docs: list[RawBSONDocument]) -> None:
        await self._coll.insert_many(docs, ordered=False)
        self.stored += len(docs)
        self.batches += 1

    async def run(self, seconds: float, *, warmup: float = 0.0) -> dict[str, Any]:
        """Consume for ``warmup`` + ``seconds``; the figures cover the last ``seconds``."""
        from ingestor.store.schema import ensure_schema

        self._loop = asyncio.get_running_loop()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.mongo_uri)
        await client.drop_database(self.database)
        await ensure_schema(client[self.database])
        self._coll = durable(client[self.database]["market_data"])
        links: list[WSTransport] = []
        for url in self.urls:
            transport, _ = await ws_connect(lambda: _Listener(self), url)
            links.append(transport)
        await asyncio.sleep(warmup)
        stored0, batches0 = self.stored, self.batches
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stored, batches = self.stored - stored0, self.batches - batches0
        for transport in links:
            transport.disconnect()
        await asyncio.gather(*self._inserts)
        await client.drop_database(self.database)
        await client.close()
        return {
            "klines": stored,
            "batches": batches,
            "frames": self.frames,
            "seconds": round(wall, 2),
            "cpu_s": round(cpu, 4),  # ~0.5 s: two decimals would be +-1%
        }


class _Listener(WSListener):
    def __init__(self, consumer: FloorConsumer) -> None:
        super().__init__()
        self.consumer = consumer

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is _TEXT:
            self.consumer.on_frame(frame.get_payload_as_bytes())


def _template(symbol: str, k: dict[str, Any]) -> RawBSONDocument:
    """The naive consumer's document for this kline, indicators filled, encoded once."""
    doc = kline_document(symbol, k)
    doc["indicators"] = dict.fromkeys(OUTPUT_FIELDS, 1.0)
    return RawBSONDocument(bson.encode(doc))
