"""Backfill throughput: 90 days x 8 symbols x 6 timeframes from the simulator, unpaced.

* ``null``: fetch (REST), decode the bodies to columns, indicators (batch, over the continuous
  series), no encode, no insert; then the same plus the live path's ``to_documents`` (on 10
  days: it is the known slow part, ~10k docs/s) and plus the vectorized ``BsonEncoder`` (what
  the writer sends; the target's figure), each encode's share timed apart. Each run reports
  wall time, this process's CPU seconds (klines per CPU-second) and the simulator's CPU over
  the same run: it shares the machine's cores with us.
* ``db``: a shorter range (1 day x 2 symbols x 6 timeframes) into a SecantusDB server: that
  Python server takes a few thousand inserts/s, so this measures it more than us.
* ``bound``: minimum minutes for the full backfill at the configured weight budget
  (Binance spot: 6000/min x ``max_weight_share``, klines weigh 2 per 1000).

The simulator runs as a child process (``ingestor simulate``) replaying real Binance CSVs for
every stream: its synthetic klines cost ~30 us each to generate, which would measure the
simulator, not the backfill.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestor.backfill.existing import Stored
from ingestor.backfill.run import Backfill
from ingestor.candles import Candles
from ingestor.config import Config
from ingestor.history import History
from ingestor.pacing import BINANCE_WEIGHT_LIMIT_1M, KLINES_WEIGHT, WeightPacer
from ingestor.rest import ExchangeClock, RestClient
from ingestor.store.documents import to_documents
from ingestor.store.retention import Retention
from ingestor.streams import StreamKey
from ingestor.validate import Rejected

__all__ = ["run"]

REPO = Path(__file__).resolve().parents[1]
SPOT = REPO.parent / "shared" / "data" / "binance" / "spot"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT")
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
FILES = {
    "1m": "BTCUSDT-1m-2020-01-01.csv",
    "5m": "BTCUSDT-5m-2020-07-01_2020-07-11.csv",
    "15m": "BTCUSDT-15m-2020-01-01_2020-04-30.csv",
    "1h": "BTCUSDT-1h-2024-08.csv",
    "4h": "BTCUSDT-1h-2024-08.csv",  # real rows, replayed on the 4h grid
    "1d": "BTCUSDT-1d-2017-08-17_2020-07-12.csv",
}
DAYS = 90
ENCODE_DAYS = 10


class _NullSink:
    """Encodes like the writer (``to_documents``) and drops the documents."""

    def __init__(self, keys: list[StreamKey]) -> None:
        self.keys = keys
        self.encode_s = 0.0
        self.docs = 0

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        t0 = time.perf_counter()
        docs = to_documents(candles, self.keys, datetime.now(UTC))
        self.encode_s += time.perf_counter() - t0
        self.docs += len(docs)
        return len(docs)


class _VectorSink:
    """Encodes with ``store.bson_encode.BsonEncoder`` (the vectorized encoder) and drops."""

    def __init__(self, keys: list[StreamKey]) -> None:
        from ingestor.store.bson_encode import BsonEncoder

        self.encoder = BsonEncoder(keys)
        self.encode_s = 0.0
        self.docs = 0

    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        t0 = time.perf_counter()
        docs = self.encoder.encode(candles, int(time.time() * 1000))
        self.encode_s += time.perf_counter() - t0
        self.docs += len(docs)
        return len(docs)


class _CountSink:
    async def insert(self, candles: Candles, *, suspect: bool = False) -> int:
        return len(candles)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_sim(port: int) -> subprocess.Popen[bytes]:
    specs = [f"--replay={s}:{tf}={SPOT / FILES[tf]}" for s in SYMBOLS for tf in TIMEFRAMES]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestor", "simulate", "--port", str(port),
         "--symbols", ",".join(SYMBOLS), "--weight-limit", str(10**9), *specs],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("simulator did not start")


async def _empty(key: StreamKey, a: int, b: int) -> Stored:
    import numpy as np

    return np.zeros(0, np.int64), np.zeros(0, np.float64)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Run:
    summary: Any
    wall_s: float
    cpu_s: float  # this process (all its threads)
    sim_cpu_s: float  # the simulator's process over the same run

    def figures(self) -> dict[str, Any]:
        k = self.summary.fetched
        return {
            "klines_per_s": round(k / self.wall_s),
            "seconds": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "klines_per_cpu_s": round(k / self.cpu_s),
            "simulator_cpu_s": round(self.sim_cpu_s, 2),
            "simulator_cpu_share_of_wall": round(self.sim_cpu_s / self.wall_s, 3),
        }


def _history(rest: RestClient, keys: list[StreamKey]) -> History:
    """The pipeline's REST side; the bench's bodies are all valid (a reject would fail it)."""

    def quarantine(r: Rejected, key: StreamKey) -> None:
        raise AssertionError(f"{key}: {r}")

    return History(rest, keys, quarantine, Retention(None))


async def _backfill(
    url: str, keys: list[StreamKey], days: float, sink: Any, config: Config, sim_pid: int
) -> _Run:
    clock = ExchangeClock()
    async with RestClient(url, 30.0, clock, WeightPacer(10**9)) as rest:
        await rest.sync_time()
        job = Backfill(
            _history(rest, keys), keys, read_stored=_empty, sink=sink,
            concurrency=config.backfill.concurrency,
            warmup_candles=config.backfill.warmup_candles,
        )  # fmt: skip
        since = clock.now_ms() - int(days * 86_400_000)
        sim0, cpu0, t0 = _cpu_s(sim_pid), time.process_time(), time.perf_counter()
        plans = await job.plan(since, None)
        summary = await job.run(plans)
        wall = time.perf_counter() - t0
        return _Run(summary, wall, time.process_time() - cpu0, _cpu_s(sim_pid) - sim0)


async def _db_subset(url: str, config: Config) -> dict[str, Any]:
    from pymongo import AsyncMongoClient

    from ingestor.backfill.existing import read_stored
    from ingestor.store.schema import MARKET_DATA, ensure_schema
    from ingestor.store.writer import CandleStore

    sys.path.insert(0, str(REPO))
    from tests.conftest import DBServer

    keys = [StreamKey(s, t) for s in SYMBOLS[:2] for t in TIMEFRAMES]
    with tempfile.TemporaryDirectory() as tmp:
        server = DBServer(Path(tmp))
        server.start()
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri, tz_aware=True)
            db = client["bench_backfill"]
            await ensure_schema(db)
            coll = db[MARKET_DATA]

            async def reader(key: StreamKey, a: int, b: int) -> Stored:
                return await read_stored(coll, key, a, b)

            clock = ExchangeClock()
            async with RestClient(url, 30.0, clock, WeightPacer(10**9)) as rest:
                await rest.sync_time()
                job = Backfill(
                    _history(rest, keys), keys, read_stored=reader, sink=CandleStore(db, keys),
                    concurrency=config.backfill.concurrency,
                    warmup_candles=config.backfill.warmup_candles,
                )  # fmt: skip
                t0 = time.perf_counter()
                s = await job.run(await job.plan(clock.now_ms() - 86_400_000, None))
                dt = time.perf_counter() - t0
            await client.close()
        finally:
            server.stop()
    return {
        "streams": len(keys),
        "klines": s.inserted,
        "seconds": round(dt, 2),
        "klines_per_s": round(s.inserted / dt),
    }


def run() -> dict[str, Any]:
    config = Config()
    keys = [StreamKey(s, t) for s in SYMBOLS for t in TIMEFRAMES]
    port = _free_port()
    sim = _start_sim(port)
    url = f"http://127.0.0.1:{port}"
    try:
        # a first, short run warms the simulator's caches and our imports
        asyncio.run(_backfill(url, keys, 1, _CountSink(), config, sim.pid))
        # fetch + decode + indicators only
        bare = asyncio.run(_backfill(url, keys, DAYS, _CountSink(), config, sim.pid))
        # the live encoder is ~10k docs/s: measured on a shorter range
        sink = _NullSink(keys)
        full = asyncio.run(_backfill(url, keys, ENCODE_DAYS, sink, config, sim.pid))
        vector: dict[str, Any] = {}
        try:
            vsink = _VectorSink(keys)
        except ImportError:
            vector = {"available": False}
        else:
            vrun = asyncio.run(_backfill(url, keys, DAYS, vsink, config, sim.pid))
            vector = {
                **vrun.figures(),
                "encode_share": round(vsink.encode_s / vrun.wall_s, 3),
                "encode_docs_per_s": round(vsink.docs / vsink.encode_s),
            }
        db = asyncio.run(_db_subset(url, config))
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    klines = bare.summary.fetched
    requests = bare.summary.requests
    budget = BINANCE_WEIGHT_LIMIT_1M * config.exchange.max_weight_share
    rate = vector.get("klines_per_s")
    return {
        "range": f"{DAYS} days x {len(SYMBOLS)} symbols x {len(TIMEFRAMES)} timeframes",
        "klines": klines,
        "warmup_klines": bare.summary.warmup_fetched,
        "requests": requests,
        "cores": os.cpu_count(),
        "null_no_encode": bare.figures(),
        "to_documents_range_days": ENCODE_DAYS,
        "to_documents_klines_per_s": round(full.summary.fetched / full.wall_s),
        "to_documents_encode_share": round(sink.encode_s / full.wall_s, 3),
        "to_documents_docs_per_s": round(sink.docs / sink.encode_s) if sink.encode_s else None,
        "bson_encode_vectorized": vector,
        "db_subset_secantusdb": db,
        "bound_min_minutes_at_budget": round(requests * KLINES_WEIGHT / budget, 2),
        "bound_weight_budget_per_min": budget,
        "target_klines_per_s": 200_000,
        "target_met": rate is not None and rate >= 200_000,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
