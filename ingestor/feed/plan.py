"""Which websocket connections the daemon opens, and the one function that opens one.

Kline streams go ``streams_per_connection`` to a combined-stream URL under ``exchange.ws_url``;
futures mark prices go up to Binance's 200 streams a connection under
``positions.futures_ws_url`` (``feed.markprice``). Each connection is made by a
:data:`ConnectionFactory`: the service never names a websocket client, so another one (or a
test's) is a different factory.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from ingestor.feed.connection import ConnectionState, FrameSink
from ingestor.feed.markprice import mark_price_url

__all__ = [
    "MARK_PRICE_STREAMS_PER_CONNECTION",
    "Connection",
    "ConnectionFactory",
    "FrameSink",
    "kline_urls",
    "mark_price_urls",
]

#: Binance's limit of mark-price streams per futures connection.
MARK_PRICE_STREAMS_PER_CONNECTION = 200


class Connection(Protocol):
    """One websocket connection kept up until cancelled, and what health reads of it."""

    index: int
    state: ConnectionState

    def run(self) -> Coroutine[Any, Any, None]: ...


#: ``(index, url, sink) -> Connection``: connection ``index`` of its kind, carrying ``url``'s
#: streams, each frame handed to ``sink``.
ConnectionFactory = Callable[[int, str, FrameSink], Connection]


def kline_urls(ws_url: str, stream_names: Sequence[str], per_connection: int) -> list[str]:
    """Combined-stream URLs carrying ``stream_names`` in order, ``per_connection`` each
    (stream ``i`` is on connection ``i // per_connection``)."""
    base = ws_url.rstrip("/")
    return [
        f"{base}/stream?streams={'/'.join(stream_names[i : i + per_connection])}"
        for i in range(0, len(stream_names), per_connection)
    ]


def mark_price_urls(futures_ws_url: str, symbols: Sequence[str]) -> list[str]:
    """Mark-price URLs carrying ``symbols``, 200 a connection."""
    per = MARK_PRICE_STREAMS_PER_CONNECTION
    return [
        mark_price_url(futures_ws_url, symbols[i : i + per]) for i in range(0, len(symbols), per)
    ]
