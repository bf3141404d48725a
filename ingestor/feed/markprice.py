"""USD-M futures mark prices (``<symbol>@markPrice@1s``) into a ``PriceBook``, for positions.

Futures positions are margined (and liquidated) on the mark price, not on the last trade, so
with ``positions.mark_prices`` the positions loop reads a book filled from this stream instead
of the spot klines. Since 2026-04-23 Binance routes USD-M market streams by path: mark prices
live under ``wss://fstream.binance.com/market`` (a connection without the ``/market`` path
receives nothing for them, silently); ``positions.futures_ws_url`` is that base. The connection
itself is a :class:`ingestor.feed.connection.FeedConnection` (reconnects, silence, rollover);
this module is the URL, the sans-I/O decoder and the sink::

    FeedConnection(i, mark_price_url(cfg.futures_ws_url, symbols), MarkPriceSink(book), budget)

Payload (combined stream): ``{"stream": "btcusdt@markPrice@1s", "data": {"e":
"markPriceUpdate", "E": 1641288864000, "s": "BTCUSDT", "p": "46353.99600757", "i": ..., "P":
..., "r": ..., "T": ...}}``; ``p`` is the mark price, ``E`` the event time.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from ingestor.errors import DecodeError
from ingestor.feed.envelope import Control, never_raises, open_frame
from ingestor.reasons import Reason
from ingestor.redact import clip
from ingestor.state import PriceBook

__all__ = [
    "STREAM_SUFFIX",
    "Control",
    "MarkPrice",
    "MarkPriceSink",
    "decode_mark_price",
    "mark_price_url",
]

log = logging.getLogger(__name__)

STREAM_SUFFIX = "@markPrice@1s"
_MAX_STREAMS = 200  # Binance's limit per connection


def mark_price_url(base: str, symbols: Collection[str]) -> str:
    """The combined-stream URL of ``symbols``' 1-second mark prices under ``base``."""
    if not symbols or len(symbols) > _MAX_STREAMS:
        raise ValueError(f"1 to {_MAX_STREAMS} symbols per connection, got {len(symbols)}")
    names = "/".join(f"{s.lower()}{STREAM_SUFFIX}" for s in symbols)
    return f"{base.rstrip('/')}/stream?streams={names}"


@dataclass(frozen=True, slots=True)
class MarkPrice:
    symbol: str
    price: str  # the exchange's decimal string, as sent
    event_ms: int


def _positive_decimal(s: object) -> bool:
    if not isinstance(s, str) or not 0 < len(s) <= 32 or not s.isascii():
        return False
    head, _, tail = s.partition(".")
    return head.isdigit() and (tail == "" or tail.isdigit()) and any(c not in "0." for c in s)


@never_raises
def decode_mark_price(raw: str | bytes) -> MarkPrice | Control:
    """A mark price or a control frame; anything else raises DecodeError with a
    :class:`ingestor.reasons.Reason` (an unforeseen failure: ``undecodable``), never another
    exception."""
    control, stream, data = open_frame(raw, "markPriceUpdate")
    if control is not None:
        return control
    symbol, price, event_ms = data.get("s"), data.get("p"), data.get("E")
    if not isinstance(symbol, str) or not symbol:
        raise DecodeError(Reason.MISSING_FIELD, "s")
    if not isinstance(event_ms, int) or isinstance(event_ms, bool) or event_ms <= 0:
        raise DecodeError(Reason.BAD_FIELD, f"E={event_ms!r}")
    if not _positive_decimal(price):
        raise DecodeError(Reason.BAD_FIELD, f"p={price!r}")
    if stream is not None and stream != f"{symbol.lower()}{STREAM_SUFFIX}":
        raise DecodeError(Reason.STREAM_MISMATCH, f"{stream} carries {symbol}")
    return MarkPrice(symbol, str(price), event_ms)


@dataclass(slots=True)
class MarkPriceSink:
    """FeedConnection's frame sink: mark prices into ``prices``; bad frames counted per reason
    (and logged once per reason). Returns True for ``serverShutdown`` (reconnect now)."""

    prices: PriceBook
    frames: int = 0
    updates: int = 0
    rejects: Counter[str] = field(default_factory=Counter)

    async def __call__(self, raw: str | bytes) -> bool:
        self.frames += 1
        try:
            mark = decode_mark_price(raw)
        except DecodeError as exc:
            if not self.rejects[exc.reason]:
                log.warning(
                    "mark price frame rejected (%s); sample: %s",
                    clip(str(exc), 300),
                    clip(raw, 300),
                )
            self.rejects[exc.reason] += 1
            return False
        if isinstance(mark, Control):
            return mark is Control.SHUTDOWN
        self.prices.update(mark.symbol, mark.price, mark.event_ms)
        self.updates += 1
        return False
