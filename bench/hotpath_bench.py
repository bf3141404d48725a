"""The hot path at the limit: BSON encoding, frame decoding, and end to end over real websockets.

1. encode: documents/s of ``BsonEncoder`` vs the reference dicts of ``Decimal128(str)`` +
   PyMongo's ``bson.encode`` (what ``insert_many`` does to a dict), same batches, one core.
2. decode: kline frames/s from raw websocket text to closed-candle columns (``Decoder`` +
   ``Batcher``), beside plain ``json.loads`` + a dict per kline.
3. end to end: the daemon's own ``Service`` (``bench.service_inproc.run_inproc``: built by
   ``ingestor.assemble.build_service``, in a child process on uvloop) flooded by the simulator
   (its own process) with the closed klines of 2,400 streams, into the null store
   (``store.sink.NullStore``: BSON-encoded, acknowledged, dropped) and into the embedded
   SecantusDB. Reported: klines/s stored, CPU seconds used (klines per CPU-second = capacity of
   one core when the simulator, not the consumer, is the limit), peak RSS; at 12 symbols x 2
   timeframes the close -> commit latency (the kline's close on the exchange's clock to the
   store's acknowledgement).
4. ``bench/naive_consumer.py`` on the same flood in its own child process: ratio ours/theirs.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.proc import peak_rss_mb
from bench.simproc import SimProcess

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "binance" / "spot"
PY = sys.executable
FLOOD_STREAMS, LATENCY_STREAMS = 2_400, "12x2"
FLOOD_SPEED = 600.0  # sim seconds per real second: 2,400 1m streams -> 24,000 klines/s offered
FLOOD_SECONDS, DB_SECONDS, LATENCY_SECONDS = 20.0, 12.0, 20.0


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
    from bench.naive_consumer import kline_document
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
                kline_document(data["s"], data["k"])

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


async def _consume_naive(args: dict[str, Any]) -> dict[str, Any]:
    from bench.naive_consumer import NaiveConsumer

    symbols = [f"S{i:04d}USDT" for i in range(args["streams"])]
    names = [f"{s.lower()}@kline_1m" for s in symbols]
    consumer = NaiveConsumer(args["ws_url"], names, mongo_uri=args["mongo_uri"])
    return await consumer.run(args["seconds"])


def _child(argv: list[str]) -> None:
    args = json.loads(argv[0])
    result = asyncio.run(_consume_naive(args))  # the plain asyncio loop a user starts with
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


def _consume(**args: Any) -> dict[str, Any]:
    """The naive consumer in its own child process."""
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


def _ours(streams: str, seconds: float, sink: str) -> dict[str, Any]:
    from bench.service_inproc import run_inproc

    result = run_inproc(streams, seconds, sink)
    result["klines"] = result["klines_acked"]
    result["klines_per_cpu_s"] = round(result["klines"] / max(result["cpu_s"], 1e-3))
    return result


def _naive(streams: int, seconds: float, mongo_uri: str) -> dict[str, Any]:
    sim = SimProcess([f"S{i:04d}USDT" for i in range(streams)], FLOOD_SPEED, start_timeout_s=30)
    try:
        return _consume(
            kind="naive", seconds=seconds, mongo_uri=mongo_uri, ws_url=sim.ws_url,
            rest_url=sim.rest_url, streams=streams,
        )  # fmt: skip
    finally:
        sim.close()


def _bench_end_to_end() -> dict[str, Any]:
    from ingestor.embedded import EmbeddedMongo

    out: dict[str, Any] = {}
    ours = _ours(str(FLOOD_STREAMS), FLOOD_SECONDS, "null")
    naive = _naive(FLOOD_STREAMS, FLOOD_SECONDS, "")
    out["flood_null_sink"] = {
        "streams": FLOOD_STREAMS,
        "ours": ours,
        "naive": naive,
        "ratio_klines_per_s": round(ours["klines_per_s"] / max(naive["klines_per_s"], 1), 2),
        "ratio_klines_per_cpu_s": round(
            ours["klines_per_cpu_s"] / max(naive["klines_per_cpu_s"], 1), 2
        ),
    }
    ours_db = _ours(str(FLOOD_STREAMS), DB_SECONDS, "embedded")
    with tempfile.TemporaryDirectory() as tmp:

        async def naive_db() -> dict[str, Any]:
            async with EmbeddedMongo(Path(tmp) / "db") as uri:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    None, lambda: _naive(FLOOD_STREAMS, DB_SECONDS, uri)
                )

        out["flood_secantusdb"] = {"ours": ours_db, "naive": asyncio.run(naive_db())}
    out["latency_12x2_null_sink"] = _ours(LATENCY_STREAMS, LATENCY_SECONDS, "null")
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
