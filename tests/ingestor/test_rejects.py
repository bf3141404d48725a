"""Rejects are bounded in bytes: a 3 MB field is neither logged nor stored in full (a few hundred
characters and the original length), and the queue of rejects holds a bounded number of bytes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ingestor.decode import Decoder
from ingestor.errors import DecodeError
from ingestor.rejects import MAX_DETAIL, MAX_RAW, RejectSink
from ingestor.state import PipelineState
from ingestor.store.schema import ensure_schema
from ingestor.streams import StreamRegistry
from tests.ingestor.test_decode import _kline

BIG = "9" * 3_000_000


@pytest.fixture
async def db(mongo_uri: str, db_name: str) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        await ensure_schema(mc[db_name])
        yield mc[db_name]
    finally:
        await mc.drop_database(db_name)
        await mc.close()


async def test_a_3mb_field_is_logged_and_stored_truncated(
    db: AsyncDatabase[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    raw = orjson.dumps(_kline(v=BIG + ".5"))  # 3 MB, past the decimal length check
    with pytest.raises(DecodeError) as info:
        Decoder(StreamRegistry(["BTCUSDT"], ["1m"])).decode(raw)
    sink = RejectSink(PipelineState(1), 100)
    with caplog.at_level(logging.WARNING, logger="ingestor.rejects"):
        sink.reject(raw, info.value.reason, info.value.detail, "BTCUSDT:1m")
    (record,) = caplog.records
    line = record.getMessage()
    assert len(line) < 1000 and str(len(raw)) in line, line[:2000]
    task = asyncio.create_task(sink.run(db))
    await sink.close()
    await task
    (doc,) = await db["market_data_rejects"].find().to_list()
    assert doc["reason"] == "bad_decimal"
    assert len(doc["detail"]) <= MAX_DETAIL + 40  # the validator's own detail is short already
    assert len(doc["raw"]) <= MAX_RAW + 40 and str(len(raw)) in doc["raw"]
    assert MAX_DETAIL <= 500 and MAX_RAW <= 4096


async def test_a_3mb_detail_is_logged_and_stored_truncated_with_its_length(
    db: AsyncDatabase[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    sink = RejectSink(PipelineState(1), 100)
    with caplog.at_level(logging.WARNING, logger="ingestor.rejects"):
        sink.reject("{}", "bad_decimal", BIG, "BTCUSDT:1m")
    (record,) = caplog.records
    assert len(record.getMessage()) < 1000 and str(len(BIG)) in record.getMessage()
    task = asyncio.create_task(sink.run(db))
    await sink.close()
    await task
    (doc,) = await db["market_data_rejects"].find().to_list()
    assert len(doc["detail"]) <= MAX_DETAIL + 40 and str(len(BIG)) in doc["detail"]


def test_the_queue_is_bounded_in_bytes() -> None:
    state = PipelineState(1)
    sink = RejectSink(state, 1_000_000, max_bytes=100_000)
    raw = "x" * 10_000_000
    for _ in range(1000):
        sink.reject(raw, "malformed_json", raw)
    assert sink.queued_bytes <= 100_000
    assert sink.dropped > 0 and state.rejects["malformed_json"] == 1000
    assert state.rejects_dropped == sink.dropped


async def test_a_3mb_mark_price_field_is_logged_truncated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ingestor.feed.markprice import MarkPriceSink
    from ingestor.state import PriceBook

    raw = orjson.dumps({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": BIG})
    with caplog.at_level(logging.WARNING, logger="ingestor.feed.markprice"):
        assert await MarkPriceSink(PriceBook())(raw) is False
    (record,) = caplog.records
    assert len(record.getMessage()) < 1000 and str(len(raw)) in record.getMessage()
