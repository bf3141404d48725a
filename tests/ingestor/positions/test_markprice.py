"""Futures mark prices: recorded Binance frames decode; a real websocket server's frames reach a
PriceBook through FeedConnection and then positions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from bson import Decimal128
from websockets.asyncio.server import ServerConnection, serve

from ingestor.config import PositionsConfig
from ingestor.errors import DecodeError
from ingestor.feed.connection import FeedConnection
from ingestor.feed.limits import AttemptBudget
from ingestor.feed.markprice import (
    Control,
    MarkPrice,
    MarkPriceSink,
    decode_mark_price,
    mark_price_url,
)
from ingestor.positions import PositionsLoop
from ingestor.state import PriceBook
from tests.ingestor.positions.helpers import Env, spec_position
from tests.integration.harness import eventually


def test_url_uses_the_market_route() -> None:
    assert mark_price_url("wss://fstream.binance.com/market/", ["BTCUSDT", "ETHUSDT"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    )
    with pytest.raises(ValueError):
        mark_price_url("wss://x/market", [])


def test_recorded_frames_decode(real_data: Path) -> None:
    fixtures = real_data / "binance" / "fixtures"
    raw = (fixtures / "mark_price_stream.json").read_bytes()
    assert decode_mark_price(raw) == MarkPrice("BTCUSDT", "11794.15000000", 1562305380000)
    # The recorded combined frame names the plain (3 s) stream: re-labelled as the 1 s one.
    msg = json.loads((fixtures / "fapi_markPrice_stream_2022-01-04.json").read_text())
    msg["stream"] = "btcusdt@markPrice@1s"
    assert decode_mark_price(orjson.dumps(msg)) == MarkPrice(
        "BTCUSDT", "46353.99600757", 1641288864000
    )
    assert decode_mark_price('{"result": null, "id": 1}') is Control.REPLY
    assert decode_mark_price('{"event": {"e": "serverShutdown", "E": 1}}') is Control.SHUTDOWN


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{", "malformed_json"),
        ("[1]", "not_an_object"),
        ('{"e": "kline", "s": "BTCUSDT"}', "bad_type"),
        ('{"e": "markPriceUpdate", "E": 1, "p": "1.0"}', "missing_field"),
        ('{"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "-1"}', "bad_field"),
        ('{"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "0.000"}', "bad_field"),
        ('{"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": 1.5}', "bad_field"),
        ('{"e": "markPriceUpdate", "E": "1", "s": "BTCUSDT", "p": "1.5"}', "bad_field"),
        (
            '{"stream": "ethusdt@markPrice@1s", "data": {"e": "markPriceUpdate", "E": 1, '
            '"s": "BTCUSDT", "p": "1.5"}}',
            "stream_mismatch",
        ),
    ],
)
def test_bad_frames_have_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_mark_price(frame)
    assert info.value.reason == reason


async def test_sink_updates_the_book_and_counts_rejects() -> None:
    book = PriceBook()
    sink = MarkPriceSink(book)
    frame = {"e": "markPriceUpdate", "E": 2, "s": "BTCUSDT", "p": "50000.5"}
    assert await sink(orjson.dumps(frame)) is False
    assert await sink(orjson.dumps(dict(frame, E=1, p="1.0"))) is False  # older: ignored
    assert await sink("garbage") is False
    assert await sink('{"e": "serverShutdown", "E": 3}') is True
    assert book.prices == {"BTCUSDT": "50000.5"} and book.event_ms == {"BTCUSDT": 2}
    assert sink.frames == 4 and sink.updates == 2 and sink.rejects == {"malformed_json": 1}


async def test_mark_prices_from_a_real_socket_reach_positions(env: Env) -> None:
    """A websocket server playing Binance's /market route -> FeedConnection + MarkPriceSink ->
    PriceBook -> PositionsLoop -> the position's current_price is the mark price."""
    paths: list[str] = []
    prices = iter(["51500.00000000", "51600.12345678"])

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        for event_ms, price in enumerate(prices, start=1):
            data = {
                "e": "markPriceUpdate",
                "E": event_ms,
                "s": "BTCUSDT",
                "p": price,
                "i": price,
                "P": price,
                "r": "0.0001",
                "T": 0,
            }
            await ws.send(orjson.dumps({"stream": "btcusdt@markPrice@1s", "data": data}))
        await ws.wait_closed()

    pos = spec_position()
    await env.db.positions.insert_one(pos)
    book = PriceBook()
    loop = PositionsLoop(env.db, book, PositionsConfig(refresh_ms=10))
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        url = mark_price_url(f"ws://127.0.0.1:{port}/market", ["BTCUSDT"])
        conn = FeedConnection(0, url, MarkPriceSink(book), AttemptBudget())
        tasks = [asyncio.create_task(conn.run()), asyncio.create_task(loop.run())]
        try:

            async def priced() -> bool:
                doc: dict[str, Any] = await env.get(pos["_id"])
                return bool(doc["current_price"] == Decimal128("51600.12345678"))

            await eventually(priced, 15, "the last mark price applied")
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    assert paths == ["/market/stream?streams=btcusdt@markPrice@1s"]


@pytest.mark.parametrize("price", ["\u00b2", "\u0663", "\uff11\uff11\uff10", "1.\u0663"])
def test_non_ascii_digits_are_a_bad_field(price: str) -> None:
    frame = {"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": price}
    with pytest.raises(DecodeError) as info:
        decode_mark_price(orjson.dumps(frame))
    assert info.value.reason == "bad_field"


@pytest.mark.parametrize("raw", [b"\xff{", '{"e": "\ud800"}', b"[" * 10_000])
def test_any_input_is_a_mark_price_a_control_or_a_decode_error(raw: bytes | str) -> None:
    try:
        decode_mark_price(raw)
    except DecodeError as exc:
        assert exc.reason
