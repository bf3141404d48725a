"""The price book: one far-future event time cannot freeze a symbol's price, and symbols this
shard does not own never get an entry."""

from __future__ import annotations

import orjson

from ingestor.feed.markprice import MarkPriceSink
from ingestor.state import PriceBook

NOW = 1_800_000_000_000


def test_a_far_future_event_time_is_ignored() -> None:
    book = PriceBook(frozenset({"BTCUSDT"}), now_ms=lambda: NOW)
    book.update("BTCUSDT", "100.0", NOW - 1000)
    book.update("BTCUSDT", "999.0", NOW + 10**12)  # one hostile frame ...
    book.update("BTCUSDT", "101.0", NOW)  # ... must not pin the price
    assert book.prices == {"BTCUSDT": "101.0"} and book.event_ms == {"BTCUSDT": NOW}
    book.update("BTCUSDT", "102.0", NOW + 59_000)  # clock skew within a minute: taken
    assert book.prices["BTCUSDT"] == "102.0"
    assert book.ignored == {"future_event_time": 1}


def test_symbols_not_owned_get_no_entry() -> None:
    book = PriceBook(frozenset({"BTCUSDT"}), now_ms=lambda: NOW)
    book.update("ETHUSDT", "1.0", NOW)
    assert book.prices == {} and book.event_ms == {} and book.received_at == {}
    assert book.ignored == {"unowned_symbol": 1}


async def test_the_mark_price_sink_stores_only_owned_symbols() -> None:
    book = PriceBook(frozenset({"BTCUSDT"}), now_ms=lambda: NOW)
    sink = MarkPriceSink(book)
    for i in range(50_000):
        frame = {"e": "markPriceUpdate", "E": NOW, "s": f"X{i}USDT", "p": "1.5"}
        await sink(orjson.dumps(frame))
    await sink(orjson.dumps({"e": "markPriceUpdate", "E": NOW, "s": "BTCUSDT", "p": "2.5"}))
    assert book.prices == {"BTCUSDT": "2.5"}
    assert len(book.event_ms) == len(book.received_at) == 1
    assert book.ignored["unowned_symbol"] == 50_000


def test_the_service_books_hold_only_its_shard_and_a_minute_ahead(tmp_path: object) -> None:
    from ingestor.assemble import build_service
    from ingestor.config import Config, ExchangeConfig, IngestConfig, ServiceConfig

    svc = build_service(
        Config(
            exchange=ExchangeConfig(time_scale=1.0),
            ingest=IngestConfig(symbols=("BTCUSDT", "ETHUSDT"), timeframes=("1m",)),
            service=ServiceConfig(data_dir=str(tmp_path)),
        )
    )
    now = svc.clock.now_ms()
    svc.prices.update("SOLUSDT", "1.0", now)
    svc.prices.update("BTCUSDT", "2.0", now + 3_600_000)
    svc.prices.update("ETHUSDT", "3.0", now)
    assert svc.prices.prices == {"ETHUSDT": "3.0"}
    assert svc.state.prices_ignored == {"unowned_symbol": 1, "future_event_time": 1}
    text = svc.metrics.render()
    assert b'ingestor_prices_ignored_total{reason="unowned_symbol"} 1.0' in text
    assert b'ingestor_prices_ignored_total{reason="future_event_time"} 1.0' in text
