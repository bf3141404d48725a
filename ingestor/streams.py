"""Streams: a (symbol, timeframe) pair, its stable integer id and its timing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TIMEFRAME_MS", "StreamKey", "StreamRegistry"]

#: Binance interval -> length in milliseconds (the ones the schema allows).
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


@dataclass(frozen=True, slots=True, order=True)
class StreamKey:
    """One kline stream, e.g. BTCUSDT 1m."""

    symbol: str
    timeframe: str

    @property
    def interval_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    @property
    def stream_name(self) -> str:
        """Binance's stream name, e.g. ``btcusdt@kline_1m``."""
        return f"{self.symbol.lower()}@kline_{self.timeframe}"

    def __str__(self) -> str:
        return f"{self.symbol}:{self.timeframe}"


class StreamRegistry:
    """The configured streams and their dense ids (0..n-1), used to index state arrays."""

    def __init__(self, symbols: list[str], timeframes: list[str]) -> None:
        self.keys: list[StreamKey] = [StreamKey(s, t) for s in symbols for t in timeframes]
        # keyed by a plain tuple: the decoder looks a stream up per frame
        self._streams = {
            (k.symbol, k.timeframe): (i, k.stream_name, k.interval_ms)
            for i, k in enumerate(self.keys)
        }

    def __len__(self) -> int:
        return len(self.keys)

    def stream_of(self, symbol: str, timeframe: str) -> tuple[int, str, int] | None:
        """(id, combined-stream name, interval in ms) of a configured stream, or None."""
        return self._streams.get((symbol, timeframe))
