"""The hot path at the limit: BSON encoding, frame decoding, and end to end over real websockets.

1. encode: documents/s of ``BsonEncoder`` vs the reference dicts of ``Decimal128(str)`` +
   PyMongo's ``bson.encode`` (what ``insert_many`` does to a dict), same batches, one core.
2. decode: kline frames/s from raw websocket text to closed-candle columns (``Decoder`` +
   ``Batcher``), beside plain ``json.loads`` + a dict per kline.
3. end to end: the simulator (its own process) floods closed klines of 2,400 streams over real
   websockets; a child process runs the daemon's pipeline pieces in-process (``FeedConnection``
   -> ``Decoder`` -> ``Sequencer`` -> ``Batcher`` -> ``Enricher`` -> fsync'd ``Journal`` ->
   writer task: ``BsonEncoder`` null sink, or ``CandleStore.insert`` into SecantusDB) on uvloop.
   Not the ``Service`` itself: no REST catch-up, rejects sink or health. Reported: klines/s
   stored, CPU seconds used (klines per CPU-second = capacity of one core when the simulator,
   not the consumer, is the limit), peak RSS; at 48 streams the close -> commit latency (the
   kline's close on the simulator's clock to the null sink's return).
4. ``bench/naive_consumer.py`` on the same flood in its own child process: ratio ours/theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "binance" / "spot"
PY = sys.executable
FLOOD_STREAMS, LATENCY_STREAMS = 2_400, 48
FLOOD_SPEED = 600.0  # sim seconds per real second: 2,400 1m streams -> 24,000 klines/s offered
FLOOD_SECONDS, DB_SECONDS, LATENCY_SECONDS = 20.0, 12.0, 20.0
LATENCY_LINGER_MS = 20


def _median_rate(fn: Callable[[], object], items: int, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return items / statistics.median(times)


# -- 1. encode ------------------------------------------------------------------------------


def _real_batch(n_streams: int, per_stream: int) -> tuple[Any, list[Any]]:
    from ingestor.candles import Candles
    from ingestor.enrich import Enricher
    from ingestor.streams import StreamKey

    with (DATA / "BTCUSDT-1m-2020-01-01.csv").open() as f:
        src = [r for r in csv.reader(f)][:per_stream]
    rows, sids = [], []
    for r in src:  # interleaved as a live batch: one kline per stream per minute
        for sid in range(n_streams):
            rows.append([int(r[0]), *r[1:6], int(r[6]), r[7], int(r[8]), r[9], r[10]])
            sids.append(sid)
    keys = [StreamKey(f"S{i:04d}USDT", "1m") for i in range(n_streams)]
    c = Candles.from_rows(sids, rows)
    Enricher(n_streams).enrich(c)
    return c, keys


def _bench_encode() -> dict[str, Any]:
    import bson

    from ingestor.store.bson_encode import BsonEncoder
    from ingestor.store.documents import ms_to_datetime, to_documents

    full, keys = _real_batch(48, 120)  # 5,760 candles, nulls before the lookbacks then values
    batch = full.take(np.arange(len(full) - 2048, len(full)))  # a max_batch of steady state
    enc = BsonEncoder(keys)
    now = 1_767_225_600_123
    ours = _median_rate(lambda: enc.encode(batch, now), len(batch))
    ours_raw = _median_rate(lambda: enc.encode_raw(batch, now), len(batch))
    ours_warmup = _median_rate(lambda: enc.encode(full, now), len(full))
    small = batch.take(np.arange(256))

    def naive() -> None:
        for d in to_documents(small, keys, ms_to_datetime(now)):
            bson.encode(d)

    ref = _median_rate(naive, len(small), repeats=5)
    return {
        "docs_per_s": round(ours),
        "docs_per_s_raw_buffer": round(ours_raw),
        "docs_per_s_with_null_patterns": round(ours_warmup),
        "naive_docs_per_s": round(ref),
        "speedup": round(ours / ref, 1),
        "batch": len(batch),
    }


# -- 2. decode ------------------------------------------------------------------------------


def _frames(n_streams: int, per_stream: int) -> tuple[list[str], list[str]]:
    import orjson

    from ingestor.simulator import Market

    symbols = [f"S{i:04d}USDT" for i in range(n_streams)]
    market = Market(0, symbols)
    t0 = 1_700_000_040_000 // 60_000 * 60_000
    frames = []
    for i in range(per_stream):
        t = t0 + i * 60_000
        for s in symbols:
            ev = market.event(s, "1m", t, t + 60_000)
            frames.append(orjson.dumps({"stream": f"{s.lower()}@kline_1m", "data": ev}).decode())
    return frames, symbols


def _bench_decode() -> dict[str, Any]:
    from bench.naive_consumer import _document
    from ingestor.batch import Batcher
    from ingestor.decode import Decoder
    from ingestor.streams import StreamRegistry

    frames, symbols = _frames(48, 400)
    decoder = Decoder(StreamRegistry(symbols, ["1m"]))

    def ours() -> None:
        batcher = Batcher(2048, 1.0)
        for raw in frames:
            f = decoder.decode(raw)
            if f.closed is not None and batcher.add(f.closed, 0.0) is not None:
                pass
        batcher.flush()

    def naive() -> None:
        for raw in frames:
            data = json.loads(raw)["data"]
            if data["k"]["x"]:
                _document(data["s"], data["k"])

    import orjson

    return {
        "frames_per_s": round(_median_rate(ours, len(frames), 5)),
        "orjson_loads_only_per_s": round(
            _median_rate(lambda: [orjson.loads(r) for r in frames], len(frames), 5)
        ),
        "naive_json_dict_per_s": round(_median_rate(naive, len(frames), 3)),
        "frames": len(frames),
    }


# -- 3./4. end to end (child processes) -----------------------------------------------------


class _Pipeline:
    """The daemon's hot path in one process: feed -> decode -> sequence -> batch -> enrich ->
    journal -> writer (null sink or CandleStore)."""

    def __init__(
        self, symbols: list[str], journal_dir: Path, linger_s: float, store: Any | None
    ) -> None:
        from ingestor.batch import Batcher
        from ingestor.decode import Decoder
        from ingestor.enrich import Enricher
        from ingestor.sequence import Sequencer
        from ingestor.store.bson_encode import BsonEncoder
        from ingestor.store.journal import Journal
        from ingestor.streams import StreamRegistry

        self.registry = StreamRegistry(symbols, ["1m"])
        self.decoder = Decoder(self.registry)
        self.sequencer = Sequencer([k.interval_ms for k in self.registry.keys])
        self.batcher = Batcher(2048, linger_s)
        self.enricher = Enricher(len(self.registry))
        self.journal = Journal(journal_dir, [str(k) for k in self.registry.keys])
        self.encoder = BsonEncoder(self.registry.keys)
        self.store = store
        self.queue: asyncio.Queue[Any] = asyncio.Queue(8)
        self.added = asyncio.Event()
        self.frames = self.stored = self.rejects = 0
        self.commits: list[tuple[float, Any, Any]] = []  # (commit, close_times, receipts)
        self._received: list[float] = []  # wall time each kline of the open batch arrived
        self._batches: list[Any] = []  # receipts of the batches in the queue, in order

    async def on_frame(self, raw: str | bytes) -> bool:
        from ingestor.decode import FrameKind
        from ingestor.errors import DecodeError
        from ingestor.sequence import VerdictKind

        self.frames += 1
        try:
            frame = self.decoder.decode(raw)
        except DecodeError:
            self.rejects += 1
            return False
        if frame.kind is FrameKind.SHUTDOWN:
            return True
        k = frame.closed
        if k is not None:
            open_ms = int(k.row[0])
            verdict = self.sequencer.check(k.stream_id, open_ms)
            if verdict.kind in (VerdictKind.ACCEPT, VerdictKind.GAP):
                self.sequencer.advance(k.stream_id, open_ms)
                self._received.append(time.time())
                full = self.batcher.add(k, asyncio.get_running_loop().time())
                self.added.set()
                if full is not None:
                    await self._emit(full)
        return False

    async def _emit(self, batch: Any) -> None:
        self.enricher.enrich(batch)
        self.journal.append(batch)
        self.journal.flush()
        received, self._received = np.array(self._received), []
        await self.queue.put((batch, received))

    async def linger(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.batcher.deadline()
            if deadline is None:
                self.added.clear()
                await self.added.wait()
                continue
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            if self.batcher.due(loop.time()):
                batch = self.batcher.flush()
                if batch is not None:
                    await self._emit(batch)

    async def writer(self) -> None:
        while True:
            batch, received = await self.queue.get()
            if self.store is None:
                self.encoder.encode(batch, time.time_ns() // 1_000_000)  # the null sink
            else:
                await self.store.insert(batch)
            self.journal.consume()
            self.stored += len(batch)
            self.commits.append((time.time(), batch.close_time, received))


def _sim_clock(rest_url: str) -> tuple[float, float]:
    """(a, speed) with sim_ms ~= a + wall_ms * speed, from the simulator's clock endpoint."""
    fits = []
    for _ in range(5):
        t0 = time.time() * 1000
        with urllib.request.urlopen(f"{rest_url}/_sim/clock", timeout=5) as r:
            clock = json.loads(r.read())
        t1 = time.time() * 1000
        fits.append((t1 - t0, clock["now_ms"] - (t0 + t1) / 2 * clock["speed"], clock["speed"]))
    _, a, speed = min(fits)  # the fastest round trip
    return a, speed


async def _consume_ours(args: dict[str, Any]) -> dict[str, Any]:
    from ingestor.feed.connection import FeedConnection
    from ingestor.feed.limits import AttemptBudget

    symbols = [f"S{i:04d}USDT" for i in range(args["streams"])]
    store: Any = None
    client: Any = None
    if args["mongo_uri"]:
        from pymongo import AsyncMongoClient

        from ingestor.store.schema import ensure_schema
        from ingestor.store.writer import CandleStore
        from ingestor.streams import StreamRegistry

        client = AsyncMongoClient(args["mongo_uri"], tz_aware=True)
        db = client["bench_hotpath"]
        await client.drop_database("bench_hotpath")
        await ensure_schema(db)
        store = CandleStore(db, StreamRegistry(symbols, ["1m"]).keys)
    with tempfile.TemporaryDirectory() as tmp:
        p = _Pipeline(symbols, Path(tmp), args["linger_ms"] / 1000, store)
        names = [k.stream_name for k in p.registry.keys]
        budget = AttemptBudget()
        conns = [
            FeedConnection(i, f"{args['ws_url']}/stream?streams={'/'.join(names[j : j + 200])}",
                           p.on_frame, budget)
            for i, j in enumerate(range(0, len(names), 200))
        ]  # fmt: skip
        tasks = [asyncio.create_task(c.run()) for c in conns]
        tasks += [asyncio.create_task(p.linger()), asyncio.create_task(p.writer())]
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(args["seconds"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        stored, frames = p.stored, p.frames
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    if client is not None:
        await client.drop_database("bench_hotpath")
        await client.close()
    out: dict[str, Any] = {
        "klines": stored,
        "frames": frames,
        "seconds": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "reconnects": sum(c.state.reconnects for c in conns),
    }
    if args["latency"]:
        a, speed = _sim_clock(args["rest_url"])

        def sim_ms(wall_s: Any) -> Any:
            return a + wall_s * 1000 * speed

        close_to_commit = np.concatenate(
            [(sim_ms(w) - (closes + 1)) / speed for w, closes, _ in p.commits]
        )
        close_to_receipt = np.concatenate(
            [(sim_ms(r) - (closes + 1)) / speed for _, closes, r in p.commits]
        )
        receipt_to_commit = np.concatenate([(w - r) * 1000 for w, _, r in p.commits])
        out["latency_ms"] = {
            name: {
                "p50": round(float(np.percentile(x, 50)), 1),
                "p99": round(float(np.percentile(x, 99)), 1),
                "max": round(float(x.max()), 1),
            }
            for name, x in (
                ("close_to_commit", close_to_commit),
                ("close_to_receipt", close_to_receipt),
                ("receipt_to_commit", receipt_to_commit),
            )
        }
        out["latency_ms"]["n"] = int(close_to_commit.size)
    return out


async def _consume_naive(args: dict[str, Any]) -> dict[str, Any]:
    from bench.naive_consumer import NaiveConsumer

    symbols = [f"S{i:04d}USDT" for i in range(args["streams"])]
    names = [f"{s.lower()}@kline_1m" for s in symbols]
    consumer = NaiveConsumer(args["ws_url"], names, mongo_uri=args["mongo_uri"])
    return await consumer.run(args["seconds"])


def _peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM; ru_maxrss would include the parent's before exec)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _child(argv: list[str]) -> None:
    args = json.loads(argv[0])
    if args["kind"] == "ours":
        import uvloop

        result = uvloop.run(_consume_ours(args))
    else:
        result = asyncio.run(_consume_naive(args))  # the plain asyncio loop a user starts with
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)


def _consume(**args: Any) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", "bench.hotpath_bench", json.dumps(args)],
        cwd=ROOT, capture_output=True, text=True, timeout=args["seconds"] + 120, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"consumer {args['kind']} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["klines_per_s"] = round(result["klines"] / result["seconds"])
    result["klines_per_cpu_s"] = round(result["klines"] / max(result["cpu_s"], 1e-3))
    return result


class _Sim:
    """The simulator in its own process (``ingestor simulate``)."""

    def __init__(self, streams: int, speed: float) -> None:
        from ingestor.embedded import free_port

        self.port = free_port()
        symbols = ",".join(f"S{i:04d}USDT" for i in range(streams))
        self.proc = subprocess.Popen(
            [PY, "-m", "ingestor", "simulate", "--port", str(self.port), "--symbols", symbols,
             "--speed", str(speed), "--update-interval", "2", "--weight-limit", "1000000"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.rest_url}/api/v3/ping", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("simulator did not start") from None
                time.sleep(0.1)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.rest_url}/_sim/stats", timeout=5) as r:
            out: dict[str, Any] = json.loads(r.read())
            return out

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _bench_end_to_end() -> dict[str, Any]:
    from ingestor.embedded import EmbeddedMongo

    out: dict[str, Any] = {}
    sim = _Sim(FLOOD_STREAMS, FLOOD_SPEED)
    try:
        common = {"ws_url": sim.ws_url, "rest_url": sim.rest_url, "streams": FLOOD_STREAMS,
                  "linger_ms": 200, "latency": False}  # fmt: skip
        before = sim.stats()["finals_sent"]
        t0 = time.perf_counter()
        ours = _consume(kind="ours", seconds=FLOOD_SECONDS, mongo_uri="", **common)
        offered = (sim.stats()["finals_sent"] - before) / (time.perf_counter() - t0)
        naive = _consume(kind="naive", seconds=FLOOD_SECONDS, mongo_uri="", **common)
        out["flood_null_sink"] = {
            "streams": FLOOD_STREAMS,
            "offered_klines_per_s": round(offered),
            "ours": ours,
            "naive": naive,
            "ratio_klines_per_s": round(ours["klines_per_s"] / max(naive["klines_per_s"], 1), 2),
            "ratio_klines_per_cpu_s": round(
                ours["klines_per_cpu_s"] / max(naive["klines_per_cpu_s"], 1), 2
            ),
        }
        with tempfile.TemporaryDirectory() as tmp:

            async def with_db() -> dict[str, Any]:
                async with EmbeddedMongo(Path(tmp) / "db") as uri:
                    loop = asyncio.get_running_loop()
                    o = await loop.run_in_executor(
                        None,
                        lambda: _consume(kind="ours", seconds=DB_SECONDS, mongo_uri=uri, **common),
                    )
                    n = await loop.run_in_executor(
                        None,
                        lambda: _consume(kind="naive", seconds=DB_SECONDS, mongo_uri=uri, **common),
                    )
                    return {"ours": o, "naive": n}

            out["flood_secantusdb"] = asyncio.run(with_db())
    finally:
        sim.close()
    sim = _Sim(LATENCY_STREAMS, 60.0)
    try:
        out["latency_48_streams_null_sink"] = _consume(
            kind="ours", seconds=LATENCY_SECONDS, mongo_uri="", ws_url=sim.ws_url,
            rest_url=sim.rest_url, streams=LATENCY_STREAMS, linger_ms=LATENCY_LINGER_MS,
            latency=True,
        )  # fmt: skip
        out["latency_48_streams_null_sink"]["linger_ms"] = LATENCY_LINGER_MS
        out["latency_48_streams_null_sink"]["sim_speed"] = 60.0
    finally:
        sim.close()
    return out


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"cpu": os.cpu_count()}
    figures["encode"] = _bench_encode()
    print("encode", figures["encode"], flush=True)
    figures["decode"] = _bench_decode()
    print("decode", figures["decode"], flush=True)
    figures["end_to_end"] = _bench_end_to_end()
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _child(sys.argv[1:])
    else:
        print(json.dumps(run(), indent=2))
