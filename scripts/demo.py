"""`make demo`: the simulator + the embedded database + the daemon for ~30 s, then what was stored.

Everything runs locally: the simulator on a free port (accelerated 60x so candles close every
second), `ingestor run` as a child process with `mongodb.uri` empty (it starts its embedded
SecantusDB). Before it is stopped, its /status is printed as `ingestor status` prints it
(readiness, connections, each stream's newest stored candle with its indicators, lag, rejects);
after, the candles stored per stream, read back from its database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from rich.console import Console

from ingestor import status
from ingestor.embedded import EmbeddedMongo
from ingestor.simulator import SimConfig, Simulator

SECONDS = float(os.environ.get("DEMO_SECONDS", "30"))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _print_status(url: str) -> None:
    """The running daemon's /status through `ingestor status`'s own rendering."""
    try:
        doc, _ = await asyncio.to_thread(status.fetch, url)
    except status.DaemonUnreachable as exc:
        print(f"status: {exc}")
        return
    print()
    Console(width=200).print(status.render(doc))


async def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="ingestor-demo-"))
    port = _free_port()
    async with Simulator(SimConfig(symbols=SYMBOLS, speed=60.0, update_interval_s=0.25)) as sim:
        config = work / "config.toml"
        config.write_text(
            f'[exchange]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\ntime_scale = 60.0\n'
            f"[ingest]\nsymbols = {list(SYMBOLS)!r}\n".replace("'", '"')
            + f"[health]\nport = {port}\n"
            + f'[service]\ndata_dir = "{work / "data"}"\nlog_format = "text"\n'
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
            await _print_status(f"http://127.0.0.1:{port}")
            proc.send_signal(signal.SIGTERM)
        rc = await proc.wait()
        print(f"daemon stopped with exit code {rc}")
    # Reopen the daemon's embedded database read-only to show what it stored.
    async with EmbeddedMongo(work / "data" / "db") as uri:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
        coll = client["bot_core_db"]["market_data"]
        pipeline: list[dict[str, Any]] = [
            {
                "$group": {
                    "_id": {"s": "$symbol", "t": "$timeframe"},
                    "n": {"$sum": 1},
                }
            },
            {"$sort": {"_id.s": 1, "_id.t": 1}},
        ]
        groups: list[dict[str, Any]] = [g async for g in await coll.aggregate(pipeline)]
        total = sum(int(g["n"]) for g in groups)
        print(f"\n{len(groups)} streams, {total} candles stored:")
        for g in groups:
            print(f"  {g['_id']['s'] + ' ' + g['_id']['t']:14} {g['n']:>7}")
        await client.close()
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
