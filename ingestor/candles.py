"""Candles as columns: the unit that flows from decode to store.

Prices and volumes stay the exchange's own decimal strings (ASCII bytes, numpy ``S`` arrays):
they become Decimal128 without ever passing through a float. ``close_f`` is the float view of
the close, used only by the indicator math.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from indicators import OUTPUT_FIELDS

__all__ = ["DECIMAL_FIELDS", "INDICATOR_FIELDS", "Candles", "DecimalColumn"]

DecimalColumn = npt.NDArray[np.bytes_]

#: Decimal fields of a kline, in the order of Binance's REST rows / kline payload keys.
DECIMAL_FIELDS: tuple[str, ...] = (
    "open_price",
    "high_price",
    "low_price",
    "close_price",
    "volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)

#: Indicator columns of ``Candles.indicators`` (float64, NaN before each lookback), in order:
#: the order ``indicators.Bank.update`` returns them in.
INDICATOR_FIELDS: tuple[str, ...] = OUTPUT_FIELDS

_S = "S32"


@dataclass(slots=True)
class Candles:
    """N closed klines of any streams, one numpy array per field."""

    stream_id: npt.NDArray[np.int32]
    open_time: npt.NDArray[np.int64]  # ms since epoch, UTC
    close_time: npt.NDArray[np.int64]  # ms since epoch, UTC
    decimals: dict[str, DecimalColumn]  # DECIMAL_FIELDS -> S32 arrays of decimal strings
    trades_count: npt.NDArray[np.int64]
    close_f: npt.NDArray[np.float64]
    indicators: npt.NDArray[np.float64] | None = None  # shape (N, 8) in INDICATOR_FIELDS order
    source: str = "binance"
    extra: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    @classmethod
    def empty(cls) -> Candles:
        return cls.from_rows([], [])

    @classmethod
    def from_rows(
        cls,
        stream_ids: list[int],
        rows: list[list[object]] | list[tuple[object, ...]],
        source: str = "binance",
    ) -> Candles:
        """Build from REST-style rows [t, o, h, l, c, v, T, q, n, V, Q, ...] (decimals as str)."""
        n = len(rows)
        if n == 0:
            return cls(
                stream_id=np.zeros(0, np.int32),
                open_time=np.zeros(0, np.int64),
                close_time=np.zeros(0, np.int64),
                decimals={f: np.zeros(0, _S) for f in DECIMAL_FIELDS},
                trades_count=np.zeros(0, np.int64),
                close_f=np.zeros(0, np.float64),
                source=source,
            )
        cols = list(zip(*rows, strict=False))
        dec_idx = (1, 2, 3, 4, 5, 7, 9, 10)
        decimals = {
            f: np.array(cols[i], dtype=_S) for f, i in zip(DECIMAL_FIELDS, dec_idx, strict=True)
        }
        return cls(
            stream_id=np.asarray(stream_ids, dtype=np.int32),
            open_time=np.array(cols[0], dtype=np.int64),
            close_time=np.array(cols[6], dtype=np.int64),
            decimals=decimals,
            trades_count=np.array(cols[8], dtype=np.int64),
            close_f=decimals["close_price"].astype(np.float64),
            source=source,
        )

    def take(self, idx: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Candles:
        """The subset at ``idx`` (indices or a boolean mask), in that order."""
        return Candles(
            stream_id=self.stream_id[idx],
            open_time=self.open_time[idx],
            close_time=self.close_time[idx],
            decimals={k: v[idx] for k, v in self.decimals.items()},
            trades_count=self.trades_count[idx],
            close_f=self.close_f[idx],
            indicators=None if self.indicators is None else self.indicators[idx],
            source=self.source,
        )

    @classmethod
    def concat(cls, parts: list[Candles]) -> Candles:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:
            return parts[0]
        ind = None
        if all(p.indicators is not None for p in parts):
            ind = np.concatenate([p.indicators for p in parts if p.indicators is not None])
        return cls(
            stream_id=np.concatenate([p.stream_id for p in parts]),
            open_time=np.concatenate([p.open_time for p in parts]),
            close_time=np.concatenate([p.close_time for p in parts]),
            decimals={
                f: np.concatenate([p.decimals[f] for p in parts]).astype(_S) for f in DECIMAL_FIELDS
            },
            trades_count=np.concatenate([p.trades_count for p in parts]),
            close_f=np.concatenate([p.close_f for p in parts]),
            indicators=ind,
            source=parts[0].source,
        )
