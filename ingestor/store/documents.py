"""Candle columns -> ``market_data`` documents, field for field as the schema spec says.

Prices and volumes become Decimal128 straight from the exchange's decimal strings (never through
a float). Indicators: ``rsi_14``, ``macd`` and ``macd_signal`` are doubles; the price-scale
indicators are Decimal128 carrying 15 significant digits (a double's precision: a fixed number of
decimal places would erase low-priced assets). NaN (lookback not yet filled) is stored as null.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Decimal128

from ingestor.candles import DECIMAL_FIELDS, INDICATOR_FIELDS, Candles
from ingestor.streams import StreamKey

__all__ = ["DOUBLE_INDICATORS", "datetime_to_ms", "decimal15", "ms_to_datetime", "to_documents"]

DOUBLE_INDICATORS = frozenset({"rsi_14", "macd", "macd_signal"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decimal15(x: float) -> Decimal128 | None:
    """A double as Decimal128 with 15 significant digits; None for NaN."""
    if math.isnan(x):
        return None
    return Decimal128(format(x, ".15g"))


def ms_to_datetime(ms: int) -> datetime:
    """Exact UTC datetime of an epoch-milliseconds timestamp (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    """Exact epoch milliseconds of a datetime read back from the database (naive = UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def to_documents(
    candles: Candles, keys: list[StreamKey], created_at: datetime
) -> list[dict[str, Any]]:
    """One document per candle; ``keys[stream_id]`` names each candle's stream."""
    if candles.indicators is None:
        raise ValueError("candles must be enriched before they are stored")
    dec = {
        f: [Decimal128(s.decode()) for s in candles.decimals[f].tolist()] for f in DECIMAL_FIELDS
    }
    ind = candles.indicators.tolist()
    docs: list[dict[str, Any]] = []
    for i, (sid, t, ct, n) in enumerate(
        zip(
            candles.stream_id.tolist(),
            candles.open_time.tolist(),
            candles.close_time.tolist(),
            candles.trades_count.tolist(),
            strict=True,
        )
    ):
        key = keys[sid]
        values = ind[i]
        indicators: dict[str, Any] = {}
        for name, v in zip(INDICATOR_FIELDS, values, strict=True):
            if name in DOUBLE_INDICATORS:
                indicators[name] = None if math.isnan(v) else v
            else:
                indicators[name] = decimal15(v)
        docs.append(
            {
                "symbol": key.symbol,
                "timeframe": key.timeframe,
                "open_time": ms_to_datetime(t),
                "close_time": ms_to_datetime(ct),
                "open_price": dec["open_price"][i],
                "high_price": dec["high_price"][i],
                "low_price": dec["low_price"][i],
                "close_price": dec["close_price"][i],
                "volume": dec["volume"][i],
                "quote_volume": dec["quote_volume"][i],
                "trades_count": n,
                "taker_buy_base_volume": dec["taker_buy_base_volume"][i],
                "taker_buy_quote_volume": dec["taker_buy_quote_volume"][i],
                "indicators": indicators,
                "created_at": created_at,
                "source": candles.source,
            }
        )
    return docs
