"""Which connections carry which streams: stream ``i`` on kline connection ``i // per``, mark
prices 200 symbols a connection."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from ingestor.feed.plan import MARK_PRICE_STREAMS_PER_CONNECTION, kline_urls, mark_price_urls


def _streams(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query)["streams"][0].split("/")


def test_kline_streams_are_chunked_in_order_per_connection() -> None:
    names = [f"s{i:03d}usdt@kline_1m" for i in range(450)]
    urls = kline_urls("wss://stream.binance.com:9443/", names, 200)
    assert [len(_streams(u)) for u in urls] == [200, 200, 50]
    assert all(u.startswith("wss://stream.binance.com:9443/stream?streams=") for u in urls)
    for i, name in enumerate(names):
        assert name in _streams(urls[i // 200])


@pytest.mark.parametrize("n", [1, 200, 201, 450])
def test_mark_prices_take_at_most_200_symbols_a_connection(n: int) -> None:
    symbols = [f"S{i:03d}USDT" for i in range(n)]
    urls = mark_price_urls("wss://fstream.binance.com/market", symbols)
    per = MARK_PRICE_STREAMS_PER_CONNECTION
    assert len(urls) == -(-n // per)
    carried = [s for u in urls for s in _streams(u)]
    assert carried == [f"{s.lower()}@markPrice@1s" for s in symbols]
    assert all(u.startswith("wss://fstream.binance.com/market/stream?streams=") for u in urls)
