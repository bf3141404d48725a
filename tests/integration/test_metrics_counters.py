"""Every counter the daemon keeps is on /metrics: a real `ingestor run` (simulator klines,
futures mark prices from a websocket server playing Binance's ``/market`` route, SecantusDB) is
scraped, and each counter is found with a value that follows what happened."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ingestor.positions import PositionsStats
from ingestor.simulator import SimConfig, Simulator
from tests.integration.harness import eventually, write_config
from tests.integration.test_ops import TIMEFRAMES, _http, _metrics, _until

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SYMBOLS = ("BTCUSDT", "ETHUSDT")

#: The positions loop's counters (every int field of PositionsStats), as published.
POSITIONS = {
    f"ingestor_positions_{f.name.removeprefix('positions_')}_total"
    for f in fields(PositionsStats)
    if f.type in (int, "int")
}
#: RejectSink.dropped, PipelineState.healed, ConnectionState.rollovers (kline and mark-price
#: connections), RestClient.requests and its pacer's, MarkPriceSink.frames/updates/rejects.
COUNTERS = POSITIONS | {
    "ingestor_rest_weight_sent_total",
    "ingestor_rest_paced_seconds_total",
    "ingestor_rejects_dropped_total",
    "ingestor_healed_total",
    "ingestor_feed_rollovers_total",
    "ingestor_rest_requests_total",
    "ingestor_markprice_frames_total",
    "ingestor_markprice_updates_total",
    "ingestor_markprice_rejects_total",
    "ingestor_markprice_reconnects_total",
    "ingestor_markprice_rollovers_total",
}


async def _mark_prices(ws: ServerConnection) -> None:
    """One garbage frame, then a mark price per subscribed symbol every 100 ms."""
    assert ws.request is not None
    names = ws.request.path.partition("streams=")[2].split("/")
    with contextlib.suppress(ConnectionClosed):  # the daemon stops
        await ws.send("{not json")
        event_ms = 1
        while True:
            for name in names:
                data = {
                    "e": "markPriceUpdate",
                    "E": event_ms,
                    "s": name.split("@")[0].upper(),
                    "p": "50000.25",
                    "i": "50000.1",
                    "P": "50001",
                    "r": "0.0001",
                    "T": 0,
                }
                await ws.send(orjson.dumps({"stream": name, "data": data}))
            event_ms += 1
            await asyncio.sleep(0.1)


async def test_every_counter_is_on_metrics(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    assert len(POSITIONS) >= 10  # the table above found the stats' counters
    cfg = SimConfig(symbols=SYMBOLS, speed=120.0, update_interval_s=0.1, seed=18)
    async with (
        Simulator(cfg) as sim,
        serve(_mark_prices, "127.0.0.1", 0) as futures,
    ):
        futures_port = futures.sockets[0].getsockname()[1]
        conf = write_config(
            tmp_path / "config.toml",
            sim,
            mongo_uri,
            db_name,
            tmp_path / "data",
            symbols=list(SYMBOLS),
            timeframes=list(TIMEFRAMES),
            warmup_candles=100,
            health={"port": 0},
            positions={
                "enabled": True,
                "refresh_ms": 100,
                "mark_prices": True,
                "futures_ws_url": f"ws://127.0.0.1:{futures_port}/market",
            },
        )
        daemon = spawn(conf, tmp_path / "d.log")
        await daemon.start()
        base = await daemon.health_base()
        await _until(daemon, f"{base}/readyz", 200, 90, "ready once caught up")
        seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def counted() -> bool:
            status, text = await _http(f"{base}/metrics")
            assert status == 200, text
            seen.clear()
            seen.update(_metrics(text))
            names = {name for name, _ in seen}
            return (
                names >= COUNTERS
                and seen["ingestor_markprice_updates_total", ()] > 0
                and seen["ingestor_positions_ticks_total", ()] > 1
            )

        await eventually(counted, 60, "every counter on /metrics, mark prices applied")
        await daemon.signal()
        assert await daemon.wait(30) == 0, daemon.output()[-2000:]
    missing = COUNTERS - {name for name, _ in seen}
    assert not missing, missing
    # What happened: REST warm-up, mark prices applied, the garbage frame rejected by reason,
    # positions ticks with database commands; nothing dropped, nothing to heal on a first start.
    assert seen["ingestor_rest_requests_total", ()] > 0
    assert seen["ingestor_markprice_rejects_total", (("reason", "malformed_json"),)] >= 1
    frames = seen["ingestor_markprice_frames_total", ()]
    assert frames > seen["ingestor_markprice_updates_total", ()]
    assert seen["ingestor_positions_commands_total", ()] > 0
    assert seen["ingestor_positions_tick_errors_total", ()] == 0
    assert seen["ingestor_rejects_dropped_total", ()] == 0
    assert seen["ingestor_healed_total", ()] == 0
    # one kline connection, one mark-price connection; none lived 24 h
    assert seen["ingestor_feed_rollovers_total", (("connection", "0"),)] == 0
    assert seen["ingestor_markprice_rollovers_total", (("connection", "0"),)] == 0
