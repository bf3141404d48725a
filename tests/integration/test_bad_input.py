"""Every kind of bad input ends in `market_data_rejects` with its reason, and nothing bad is
stored: a hand-written exchange feed (a real websocket server) sends each kind on purpose while
the simulator answers REST."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from ingestor.simulator import SimConfig, Simulator
from ingestor.store.documents import datetime_to_ms
from tests.integration.harness import (
    Daemon,
    assert_exact,
    client,
    eventually,
    stored_docs,
    write_config,
)

pytestmark = pytest.mark.slow  # real processes, tens of seconds each

SYMBOLS = ("BTCUSDT", "ETHUSDT")
M = 60_000
REASONS = {
    "malformed_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "bad_decimal",
    "rule_violation",
    "unknown_stream",
    "duplicate",
    "out_of_order",
}


def _final(sim: Simulator, symbol: str, open_ms: int) -> str:
    event = sim.market.event(symbol, "1m", open_ms, open_ms + M)  # at close: final values
    assert event["k"]["x"] is True
    return json.dumps({"stream": f"{symbol.lower()}@kline_1m", "data": event})


def _broken(sim: Simulator, open_ms: int, **change: Any) -> str:
    frame = json.loads(_final(sim, "BTCUSDT", open_ms))
    frame["data"]["k"].update(change)
    return json.dumps(frame)


async def _bad_feed(
    sim: Simulator, ws: ServerConnection, daemon: Daemon, chosen: list[int]
) -> None:
    """The kline this feed finalizes (``live``, kept in ``chosen``) is one still open once
    the daemon has caught up, so REST never delivered it: its repeat is a duplicate, not the
    REST/live seam. (It was the kline open at the simulator's start, which a daemon taking
    over one exchange minute, a second here, to start had already fetched from REST.)"""

    async def caught_up() -> bool:
        return "caught up:" in daemon.output()

    await eventually(caught_up, 60, "the daemon's catch-up from REST")
    if not chosen:  # the same kline on a reconnect
        chosen.append(sim.clock.now_ms() // M * M)
    live = chosen[0]

    async def closed() -> bool:
        return sim.clock.now_ms() > live + 2 * M

    await eventually(closed, 30, "the live kline to close")
    unknown = json.loads(_final(sim, "BTCUSDT", live))
    unknown["stream"] = "solusdt@kline_1m"
    unknown["data"]["s"] = unknown["data"]["k"]["s"] = "SOLUSDT"
    k = json.loads(_final(sim, "BTCUSDT", live))["data"]["k"]
    frames = [
        "this is not json",
        "[1, 2, 3]",
        json.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "s": "BTCUSDT"}}),
        _broken(sim, live, t=str(live)),  # mistyped open time
        _broken(sim, live, c=float(k["c"])),  # a float where Binance sends a decimal string
        _broken(sim, live, h=k["l"], l=k["h"]) if k["h"] != k["l"] else _broken(sim, live, v="-1"),
        json.dumps(unknown),
        _final(sim, "BTCUSDT", live),  # the real final ...
        _final(sim, "BTCUSDT", live),  # ... repeated
        _final(sim, "BTCUSDT", live - 10 * M),  # long gone
        _final(sim, "ETHUSDT", live),  # the other stream's final: both end at `live`
    ]
    for raw in frames:
        await ws.send(raw)
    await ws.wait_closed()


async def test_every_bad_input_kind_is_quarantined_with_its_reason(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    async with Simulator(SimConfig(symbols=(*SYMBOLS, "SOLUSDT"), speed=60.0)) as sim:
        live: list[int] = []

        async def handler(ws: ServerConnection) -> None:
            await _bad_feed(sim, ws, daemon, live)

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            conf = write_config(
                tmp_path / "config.toml",
                sim,
                mongo_uri,
                db_name,
                tmp_path / "data",
                exchange={"ws_url": f"ws://127.0.0.1:{port}"},
                symbols=list(SYMBOLS),
                timeframes=["1m"],
                warmup_candles=100,
                final_grace_ms=600_000,  # no REST probes: the feed's finals decide
            )
            daemon = spawn(conf, tmp_path / "d.log")
            started_ms = sim.clock.now_ms()  # the catch-up stores every kline closed by then
            await daemon.start()
            mc = client(mongo_uri)
            try:
                rejects = mc[db_name]["market_data_rejects"]

                async def all_reasons() -> bool:
                    return set(await rejects.distinct("reason")) >= REASONS

                await eventually(all_reasons, 60, f"rejects with every reason {sorted(REASONS)}")
                stop_ms = sim.clock.now_ms()
                await daemon.signal()
                assert await daemon.wait(10) == 0, daemon.output()[-3000:]
                counts = {r: await rejects.count_documents({"reason": r}) for r in REASONS}
                sample = await rejects.find_one({"reason": "unknown_stream"})
            finally:
                await mc.close()
    assert all(n >= 1 for n in counts.values()), counts
    assert sample is not None and "SOLUSDT" in sample["raw"] and sample["received_at"]
    log = daemon.output()
    for reason in REASONS:  # logged once per reason, with a sample
        assert log.count(f"rejected input ({reason}") == 1, reason
    # Nothing bad was stored: every stored kline is the exchange's, once; the feed finalized
    # nothing after `live`, and REST probes were off, so the check ends there.
    assert stop_ms > live[0] + M
    docs = await stored_docs(mongo_uri, db_name)
    assert_exact(sim, docs, started_ms, live[0] + M, {(s, "1m") for s in SYMBOLS})


#: Digits ``str.isdigit`` accepts: superscript two made ``float()`` raise in the decoder;
#: Arabic-Indic three and fullwidth 110 passed it and raised UnicodeEncodeError in the gate's
#: batcher. Either ended the daemon, and the same frame after the restart made a crash loop.
NON_ASCII = {"o": "\u00b2", "v": "\u0663", "q": "\uff11\uff11\uff10"}


async def test_non_ascii_digits_are_rejected_and_the_daemon_keeps_storing(
    tmp_path: Path, mongo_uri: str, db_name: str, spawn: Any
) -> None:
    async with Simulator(SimConfig(symbols=SYMBOLS, speed=60.0)) as sim:
        # The kline open now: its time is plausible, only the digits are wrong.
        open_ms = sim.clock.now_ms() // M * M
        frames = [_broken(sim, open_ms, **{f: d}) for f, d in NON_ASCII.items()]

        async def handler(ws: ServerConnection) -> None:
            for raw in frames:
                await ws.send(raw)
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            conf = write_config(
                tmp_path / "config.toml",
                sim,
                mongo_uri,
                db_name,
                tmp_path / "data",
                exchange={"ws_url": f"ws://127.0.0.1:{port}"},
                symbols=list(SYMBOLS),
                timeframes=["1m"],
                warmup_candles=100,
                final_grace_ms=500,  # the finals come from REST probes
            )
            daemon = spawn(conf, tmp_path / "d.log")
            await daemon.start()
            mc = client(mongo_uri)
            try:
                db = mc[db_name]

                async def rejected() -> bool:
                    assert daemon.proc is not None and daemon.proc.returncode is None, (
                        daemon.output()[-3000:]
                    )
                    found = await db["market_data_rejects"].count_documents(
                        {"reason": "bad_decimal", "raw": {"$in": frames}}
                    )
                    return bool(found >= len(frames))

                await eventually(rejected, 60, "the non-ASCII frames rejected as bad_decimal")
                after = sim.clock.now_ms()

                async def storing() -> bool:  # still alive, and storing what closes later
                    assert daemon.proc is not None and daemon.proc.returncode is None, (
                        daemon.output()[-3000:]
                    )
                    newest = await db["market_data"].find_one(sort=[("open_time", -1)])
                    return newest is not None and datetime_to_ms(newest["open_time"]) > after

                await eventually(storing, 60, "klines closed after the rejects stored")
                await daemon.signal()
                assert await daemon.wait(10) == 0, daemon.output()[-3000:]
                stop_ms = sim.clock.now_ms()  # nothing closed after this can be stored
            finally:
                await mc.close()
    assert "Traceback" not in daemon.output()
    docs = await stored_docs(mongo_uri, db_name)
    assert_exact(sim, docs, after, stop_ms, {(s, "1m") for s in SYMBOLS})
