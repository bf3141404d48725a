"""The insert path's client-side cost per batch: ``CandleStore.insert`` into SecantusDB.

At the live load batches are small (a 40 ms linger), so what a batch costs regardless of its
size dominates. Measured: CPU seconds of this process (the client; the server is its own
process) per ``CandleStore.insert`` call, for batches of 1, 24 and 512 candles of real klines
(48 streams, enriched, distinct open times), with the schema's validator and the durable write
concern, on uvloop as the daemon runs. Beside it, two references on the same documents
(already encoded, so neither counts the encoding): PyMongo's ``insert_many`` of a
RawBSONDocument list (what the store sends) and ``bulk_write`` of ``InsertOne`` per document.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

SIZES = (1, 24, 512)
CALLS = {1: 100, 24: 60, 512: 6}
REPEATS = 5


Call = Callable[[int], Awaitable[object]]


async def _variants(uri: str, size: int) -> tuple[dict[str, Call], Any]:
    """The three ways to store batch ``i`` of ``size`` candles, each into its own database."""
    from pymongo import AsyncMongoClient, InsertOne

    from bench.hotpath_bench import _real_batch
    from ingestor.store.bson_encode import BsonEncoder
    from ingestor.store.concerns import durable
    from ingestor.store.schema import MARKET_DATA, ensure_schema
    from ingestor.store.writer import CandleStore

    candles, keys = _real_batch(48, 130)  # 6,240 candles
    need = CALLS[size] * REPEATS
    slices = [candles.take(np.arange(j, j + size) % len(candles)) for j in range(need)]
    now = time.time_ns() // 1_000_000
    encoder = BsonEncoder(keys)
    encoded = [encoder.encode(c, now) for c in slices]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    dbs = {}
    for name in ("store", "many", "bulk"):
        dbs[name] = client[f"bench_insert_{size}_{name}"]
        await client.drop_database(dbs[name].name)
        await ensure_schema(dbs[name])
    store = CandleStore(dbs["store"], keys)
    many, bulk = durable(dbs["many"][MARKET_DATA]), durable(dbs["bulk"][MARKET_DATA])

    async def store_insert(i: int) -> None:
        await store.insert(slices[i])

    async def insert_many(i: int) -> None:
        await many.insert_many(encoded[i], ordered=False)

    async def bulk_write(i: int) -> None:
        await bulk.bulk_write([InsertOne(d) for d in encoded[i]], ordered=False)

    variants: dict[str, Call] = {
        "candle_store_insert": store_insert,
        "insert_many_raw": insert_many,
        "bulk_write_insert_one": bulk_write,
    }
    return variants, client


async def _bench(uri: str) -> dict[str, Any]:
    """Per size, the variants in interleaved rounds (drift on a shared machine hits each alike);
    the median of the rounds' CPU seconds per call."""
    out: dict[str, Any] = {}
    for size in SIZES:
        calls = CALLS[size]
        variants, client = await _variants(uri, size)
        per: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for r in range(REPEATS):
                for name, fn in variants.items():
                    await fn(r * calls)  # warm
                    cpu0 = time.process_time()
                    for i in range(r * calls + 1, (r + 1) * calls):
                        await fn(i)
                    per[name].append((time.process_time() - cpu0) / (calls - 1))
        finally:
            await client.close()
        row = {
            name: {
                "us_per_batch": round(statistics.median(v) * 1e6, 1),
                "us_per_kline": round(statistics.median(v) * 1e6 / size, 2),
            }
            for name, v in per.items()
        }
        out[f"batch_{size}"] = row
        print(f"batch {size}: {row}", flush=True)
    return out


def run() -> dict[str, Any]:
    import uvloop

    from ingestor.embedded import EmbeddedMongo

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-insert-") as tmp:
            async with EmbeddedMongo(Path(tmp) / "db") as uri:
                return await _bench(uri)

    figures: dict[str, Any] = {"cpu": os.cpu_count(), "repeats": REPEATS}
    figures.update(uvloop.run(main()))
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
