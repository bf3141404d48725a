"""`make demo`: the simulator + the embedded database + the daemon for ~30 s, then what was stored.

Everything runs locally: the simulator on a free port (accelerated 60x so candles close every
second), `ingestor run` as a child process with `mongodb.uri` empty (it starts its embedded
SecantusDB), then the stored streams and the latest candle of each are printed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from ingestor.embedded import EmbeddedMongo
from ingestor.simulator import SimConfig, Simulator

SECONDS = float(os.environ.get("DEMO_SECONDS", "30"))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")


async def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ingestor-demo-"))
    async with Simulator(SimConfig(symbols=SYMBOLS, speed=60.0, update_interval_s=0.25)) as sim:
        config = work / "config.toml"
        config.write_text(
            f'[exchange]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\ntime_scale = 60.0\n'
            f"[ingest]\nsymbols = {list(SYMBOLS)!r}\n".replace("'", '"')
            + f'[health]\nport = 0\n[service]\ndata_dir = "{work / "data"}"\nlog_format = "text"\n'
        )
        print(f"simulator on {sim.rest_url}; daemon config {config}; running {SECONDS:.0f}s ...")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingestor", "run", "--config", str(config)
        )
        try:
            await asyncio.wait_for(proc.wait(), SECONDS)
            print(f"daemon exited early with {proc.returncode}")
            return 1
        except TimeoutError:
            proc.send_signal(signal.SIGTERM)
        rc = await proc.wait()
        print(f"daemon stopped with exit code {rc}")
    # Reopen the daemon's embedded database read-only to show what it stored.
    async with EmbeddedMongo(work / "data" / "db") as uri:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        coll = client["bot_core_db"]["market_data"]
        pipeline: list[dict[str, Any]] = [
            {"$sort": {"open_time": 1}},
            {
                "$group": {
                    "_id": {"s": "$symbol", "t": "$timeframe"},
                    "n": {"$sum": 1},
                    "last": {"$last": "$$ROOT"},
                }
            },
            {"$sort": {"_id.s": 1, "_id.t": 1}},
        ]
        groups = [g async for g in await coll.aggregate(pipeline)]
        total = sum(int(g["n"]) for g in groups)
        print(f"\n{len(groups)} streams, {total} candles stored\n")
        print(
            f"{'stream':14} {'candles':>7}  {'latest open (UTC)':19} {'close':>14} "
            f"{'rsi14':>7} {'macd':>10} {'ema20':>14} {'sma50':>14}"
        )

        def fmt(v: object) -> str:
            return "null" if v is None else f"{float(str(v)):.6g}"

        for g in groups:
            d = g["last"]
            ind = d["indicators"]
            print(
                f"{d['symbol'] + ' ' + d['timeframe']:14} {g['n']:>7}  "
                f"{d['open_time']:%Y-%m-%d %H:%M:%S} {d['close_price']!s:>14} "
                f"{fmt(ind['rsi_14']):>7} {fmt(ind['macd']):>10} {fmt(ind['ema_20']):>14} "
                f"{fmt(ind['sma_50']):>14}"
            )
        await client.close()
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
