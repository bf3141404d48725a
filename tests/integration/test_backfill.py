"""`ingestor backfill` / `ingestor gaps` against the simulator's REST and a real wire-protocol
database: exact documents, TA-Lib indicators over the whole series, resumable, never
duplicated, polite (pacing, Retry-After, 418)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import talib
from bson import Decimal128
from pymongo import AsyncMongoClient

from indicators import SEED_KLINES
from ingestor.backfill.job import BackfillOptions, run_job
from ingestor.candles import INDICATOR_FIELDS, Candles
from ingestor.config import load_config
from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms, ms_to_datetime, to_documents
from ingestor.streams import StreamKey
from tests.conftest import REPO, TIMEOUT_FACTOR

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

WARMUP = 120  # config minimum is 100 (the run seeds at least indicators.SEED_KLINES anyway)
#: Klines before a range that TA-Lib's reference starts from: its values there equal TA-Lib
#: over the synthetic market's whole history far below the tolerance (test_indicators_outputs).
HISTORY = 3 * SEED_KLINES
STREAMS = (("BTCUSDT", "1m"), ("BTCUSDT", "1h"), ("ETHUSDT", "1m"), ("ETHUSDT", "1h"))


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_config(path: Path, sim: Simulator, uri: str, db: str, **backfill: Any) -> Path:
    backfill.setdefault("concurrency", 4)
    backfill.setdefault("warmup_candles", WARMUP)
    extra = "\n".join(f"{k} = {v}" for k, v in backfill.items())
    path.write_text(
        f"""
[exchange]
ws_url = "{sim.ws_url}"
rest_url = "{sim.rest_url}"
time_scale = {sim.config.speed}
[mongodb]
uri = "{uri}"
database = "{db}"
[ingest]
symbols = ["BTCUSDT", "ETHUSDT"]
timeframes = ["1m", "1h"]
[backfill]
{extra}
[service]
log_level = "INFO"
log_format = "text"
"""
    )
    return path


async def cli(*args: str, within: float = 60, signal_when: Any = None) -> tuple[int, str, str]:
    """`ingestor ...` (``python -m ingestor``) as a real process; ``signal_when`` (sig, check) sends
    ``sig`` once ``await check()`` is true."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", *args,
        cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(within * TIMEOUT_FACTOR):
            if signal_when is not None:
                sig, check = signal_when
                while not await check():
                    assert proc.returncode is None, "backfill ended before the signal"
                    await asyncio.sleep(0.05)
                proc.send_signal(sig)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def stored(uri: str, db: str) -> list[dict[str, Any]]:
    mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        return [d async for d in mc[db]["market_data"].find({}, {"_id": 0})]
    finally:
        await mc.close()


async def count(uri: str, db: str) -> int:
    mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        return await mc[db]["market_data"].count_documents({})
    finally:
        await mc.close()


def _talib(closes: np.ndarray) -> dict[str, np.ndarray]:
    macd, signal_, _ = talib.MACD(closes, 12, 26, 9)
    up, mid, low = talib.BBANDS(closes, 20, 2.0, 2.0)  # matype SMA, the default
    return {
        "rsi_14": talib.RSI(closes, 14),
        "macd": macd,
        "macd_signal": signal_,
        "bollinger_upper": up,
        "bollinger_middle": mid,
        "bollinger_lower": low,
        "ema_20": talib.EMA(closes, 20),
        "sma_50": talib.SMA(closes, 50),
    }


def assert_exact(
    sim: Simulator,
    docs: list[dict[str, Any]],
    since: int,
    until: int,
    streams: tuple[tuple[str, str], ...] = STREAMS,
    history: int = HISTORY,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every closed kline of every stream in [since, until) stored once, field for field what
    the live path's encoder makes of the exchange's row, indicators = TA-Lib over the series
    over the stream's whole history (the series from ``history`` klines before ``since``)."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for d in docs:
        by.setdefault((d["symbol"], d["timeframe"]), []).append(d)
    assert set(by) == set(streams)
    keys = [StreamKey(s, t) for s, t in streams]
    for sid, (sym, tf) in enumerate(streams):
        rows = sorted(by[(sym, tf)], key=lambda d: d["open_time"])
        times = [datetime_to_ms(d["open_time"]) for d in rows]
        assert not [t for t, n in Counter(times).items() if n > 1], f"{sym} {tf}: duplicates"
        iv = keys[sid].interval_ms
        first = -(-since // iv) * iv
        expected = sim.market.closed_klines(sym, tf, first, until - 1, sim.clock.now_ms())
        assert times == [r[0] for r in expected], f"{sym} {tf}: not exactly the closed klines"
        series = sim.market.closed_klines(sym, tf, first - history * iv, until - 1)
        closes = np.array([float(r[4]) for r in series])
        ref = _talib(closes)
        # the live encoder on the same rows and TA-Lib's indicators
        cand = Candles.from_rows([sid] * len(expected), expected)
        cand.indicators = np.stack([ref[f][history:] for f in INDICATOR_FIELDS], axis=1)
        want = to_documents(cand, keys, datetime.now(UTC))
        for d, w in zip(rows, want, strict=True):
            assert d["created_at"].tzinfo is not None and d["source"] == "binance"
            for f, v in w.items():
                if f in ("created_at", "indicators"):
                    continue
                assert d[f] == v, f"{sym} {tf} {_iso(datetime_to_ms(d['open_time']))}: {f}"
            assert list(d["indicators"]) == list(INDICATOR_FIELDS)
            for f, v in w["indicators"].items():
                got = d["indicators"][f]
                if v is None:
                    assert got is None, f
                    continue
                x = float(got.to_decimal()) if isinstance(got, Decimal128) else got
                y = float(v.to_decimal()) if isinstance(v, Decimal128) else v
                assert type(got) is type(v), f
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), (f, x, y)
        by[(sym, tf)] = rows
    return by


@pytest.fixture
async def sim() -> Any:
    async with Simulator(SimConfig(symbols=("BTCUSDT", "ETHUSDT"), speed=1.0, seed=5)) as s:
        yield s


def _window(sim: Simulator, minutes: int) -> tuple[int, int]:
    # A fixed end (later runs see the same range) that closed well before now: the backfill
    # treats the last second as possibly still open (clock skew), so a test started in the
    # first seconds of an hour must not end its range at that hour.
    now = sim.clock.now_ms() - 10_000
    until = (now // 3_600_000) * 3_600_000
    return until - minutes * 60_000, until


async def test_backfill_exact_rerun_inserts_nothing_gaps_and_dry_run(
    sim: Simulator, mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    since, until = _window(sim, 1500)
    conf = str(write_config(tmp_path / "c.toml", sim, mongo_uri, db_name))
    args = ("--config", conf, "--since", _iso(since), "--until", _iso(until))

    code, out, err = await cli("backfill", *args, "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    expected = sum((until - -(-since // iv) * iv) // iv for iv in (60_000, 3_600_000)) * 2
    assert dry["dry_run"] and dry["missing"] == dry["expected"] == expected
    assert await count(mongo_uri, db_name) == 0

    code, out, err = await cli("backfill", *args, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first["inserted"] == first["fetched"] == first["expected"] == dry["expected"]
    assert first["skipped_present"] == 0 and first["warmup_fetched"] == 4 * SEED_KLINES
    assert first["weight_used"] == 2 * first["requests"] + 21 - 2  # startup call weighs 21
    docs = assert_exact(sim, await stored(mongo_uri, db_name), since, until)

    code, out, err = await cli("backfill", *args, "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["inserted"] == 0 and again["requests"] == 1  # time + exchangeInfo only
    assert again["skipped_present"] == first["expected"]

    # holes: delete klines in the middle and at the start of a stream, list them, fill them
    coll = sync_db["market_data"]
    btc = docs[("BTCUSDT", "1m")]
    holes = [btc[0], btc[1], *btc[700:705], btc[1400]]
    for d in holes:
        coll.delete_one({"symbol": "BTCUSDT", "timeframe": "1m", "open_time": d["open_time"]})
    code, out, err = await cli(
        "gaps", "--config", conf, "--since", _iso(since), "--until", _iso(until),
        "--symbols", "BTCUSDT", "--timeframes", "1m", "--json",
    )  # fmt: skip
    assert code == 0, err
    (gap,) = json.loads(out)["streams"]
    assert [r[2] for r in gap["ranges"]] == [2, 5, 1] and gap["missing"] == 8
    assert gap["ranges"][1][0] == _iso(datetime_to_ms(btc[700]["open_time"]))

    code, out, err = await cli("backfill", *args, "--json")
    assert code == 0, err
    fill = json.loads(out)
    assert fill["inserted"] == fill["missing"] == 8
    after = assert_exact(sim, await stored(mongo_uri, db_name), since, until)
    for old, new in zip(btc, after[("BTCUSDT", "1m")], strict=True):
        skip = ("created_at", "indicators")
        assert {k: v for k, v in old.items() if k not in skip} == {
            k: v for k, v in new.items() if k not in skip
        }
        # Same series, computed in other chunks: equal within rounding, on the price scale (MACD
        # is a difference of EMAs: its own relative error is not the measure).
        scale = max(1.0, float(str(old["close_price"])))
        for f, v in old["indicators"].items():
            w = new["indicators"][f]
            assert (v is None) == (w is None), f
            if v is not None:
                x, y = (float(str(z)) for z in (v, w))
                assert abs(x - y) <= 1e-12 * scale, (f, x, y)


async def test_interrupted_runs_resume_exactly(
    sim: Simulator, mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    since, until = _window(sim, 4000)
    # one request at a time, each slowed: the run lasts long enough to be interrupted mid-way
    conf = str(write_config(tmp_path / "c.toml", sim, mongo_uri, db_name, concurrency=1))
    args = ("backfill", "--config", conf, "--since", _iso(since), "--until", _iso(until),
            "--symbols", "BTCUSDT", "--timeframes", "1m")  # fmt: skip
    sim.set_faults(rest_delay_s=1.0)  # with a 2 s linger: a flush every ~2 pages

    async def some_stored() -> bool:
        return await count(mongo_uri, db_name) > 0

    code, _, err = await cli(*args, signal_when=(signal.SIGINT, some_stored))
    assert code == 130, err
    assert "run again to resume" in err
    n_int = await count(mongo_uri, db_name)
    assert 0 < n_int < 4000

    async def more_stored() -> bool:
        return await count(mongo_uri, db_name) > n_int

    code, _, err = await cli(*args, signal_when=(signal.SIGKILL, more_stored))
    assert code == -signal.SIGKILL
    sim.set_faults(rest_delay_s=0.0)
    code, out, err = await cli(*args, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert 0 < summary["skipped_present"] < summary["expected"]
    # an insert of the killed run may land after this run's plan: the writer re-checks
    assert 0 < summary["inserted"] <= summary["missing"]
    assert_exact(sim, await stored(mongo_uri, db_name), since, until, (("BTCUSDT", "1m"),))


async def test_retry_after_is_honoured(
    mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    # a single request sent inside a Retry-After window earns a 418: finishing proves waiting
    cfg = SimConfig(symbols=("BTCUSDT", "ETHUSDT"), seed=5, ban_after_violations=1)
    async with Simulator(cfg) as sim:
        since, until = _window(sim, 2500)
        conf = write_config(tmp_path / "c.toml", sim, mongo_uri, db_name, concurrency=1)
        sim.set_faults(rest_429_p=0.5, rest_429_retry_after_s=1)  # ~10 requests: P(no 429) < 0.1%
        code, _, err = await cli(
            "backfill", "--config", str(conf), "--since", _iso(since), "--until", _iso(until),
            "--symbols", "BTCUSDT", "--json",
        )  # fmt: skip
        assert code == 0, err
        assert sim.stats.rest_429s > 0 and sim.stats.rest_418s == 0
        assert "Retry-After" in err
        streams = (("BTCUSDT", "1m"), ("BTCUSDT", "1h"))
        assert_exact(sim, await stored(mongo_uri, db_name), since, until, streams)


async def test_ban_418_stops_with_a_clear_error(
    sim: Simulator, mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    # someone else on this IP ignored a 429: the exchange bans the IP
    sim.set_faults(rest_429_p=1.0, rest_429_retry_after_s=30)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(f"{sim.rest_url}/api/v3/ping") as resp:
                await resp.read()
    sim.set_faults(rest_429_p=0.0)
    assert sim.stats.rest_418s >= 1
    since, until = _window(sim, 600)
    conf = write_config(tmp_path / "c.toml", sim, mongo_uri, db_name)
    code, _, err = await cli(
        "backfill", "--config", str(conf), "--since", _iso(since), "--until", _iso(until)
    )
    assert code == 1
    assert "418" in err and "banned" in err
    assert await count(mongo_uri, db_name) == 0


async def test_weight_budget_is_never_exceeded(
    mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    # The simulator's clock (and so its 60 s weight window) runs 20x: a 3 s window, so the
    # pacer has to wait for it a few times within the test.
    scale = 20.0
    t0 = time.monotonic()
    cfg = SimConfig(
        symbols=("BTCUSDT", "ETHUSDT"), seed=5, weight_limit_1m=50,
        time_source=lambda: t0 + (time.monotonic() - t0) * scale,
    )  # fmt: skip
    async with Simulator(cfg) as sim:
        # 2000 h: three requests with the warm-up, inside the 90-day retention
        since, until = _window(sim, 2000 * 60)
        path = write_config(tmp_path / "c.toml", sim, mongo_uri, db_name, concurrency=8)
        path.write_text(path.read_text().replace("time_scale = 1.0", f"time_scale = {scale}"))
        config = load_config(path)
        seen: list[int] = []
        done = asyncio.Event()

        async def watch() -> None:  # the exchange's own count, sampled as the run goes
            async with aiohttp.ClientSession() as http:
                while not done.is_set():
                    async with http.get(f"{sim.rest_url}/_sim/stats") as resp:
                        seen.append((await resp.json())["weight_used_1m"])
                    await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            opts = BackfillOptions(
                since, until, ("BTCUSDT",), ("1h",), weight_limit=50, window_s=60 / scale
            )
            _, summary = await run_job(config, opts)
        finally:
            done.set()
            await watcher
        budget = 25  # 50 x max_weight_share 0.5
        assert summary.weight_budget == budget
        assert sim.stats.rest_429s == 0
        assert max(seen) <= budget and summary.max_used_weight_1m <= budget
        assert summary.weight_used > budget  # it did have to wait for the window
        assert summary.paced_s > 0
        assert_exact(sim, await stored(mongo_uri, db_name), since, until, (("BTCUSDT", "1h"),))


async def test_bad_arguments_and_config_exit_2(tmp_path: Path, sim: Simulator) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[backfill]\nconcurrency = 0\n")
    code, _, err = await cli("backfill", "--config", str(bad), "--since", "2025-08-01")
    assert code == 2 and "backfill.concurrency" in err
    code, _, err = await cli("backfill", "--since", "yesterday")
    assert code == 2 and "--since" in err
    conf = write_config(tmp_path / "c.toml", sim, "mongodb://127.0.0.1:1", "x")
    code, _, err = await cli(
        "backfill", "--config", str(conf), "--since", "2025-08-01", "--timeframes", "2m"
    )
    assert code == 2 and "--timeframes" in err
    code, _, err = await cli(
        "backfill", "--config", str(conf), "--since", "2025-08-02", "--until", "2025-08-01"
    )
    assert code == 2 and "--until" in err
