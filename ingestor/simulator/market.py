"""The simulated market: a clock and klines as a pure function of time (no I/O).

Every closed kline is a deterministic function of (seed, symbol, timeframe, open_time), so the
REST server, the websocket feed and a test computing the expectation agree in every process.
Prices and volumes are carried as integers in units of 1e-8 and formatted like Binance spot
(``"0.35270000"``), so no float ever reaches a decimal string it could blur.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ingestor.streams import TIMEFRAME_MS, StreamKey

__all__ = [
    "DEFAULT_SYMBOLS",
    "INTERVAL_MS",
    "MAX_KLINES_LIMIT",
    "Market",
    "Row",
    "SimClock",
    "SymbolProfile",
    "floor_to",
    "format_units",
    "parse_units",
    "profile_for",
]

#: A REST kline row: [t, "o", "h", "l", "c", "v", T, "q", n, "V", "Q", "ignore"].
Row = list[Any]

#: The eight symbols of the default deployment.
DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT",
    "ETHUSDT",
    "BNBUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "AVAXUSDT",
)

#: Every fixed-length Binance interval the simulator serves (1w/1M are calendar-aligned: left out).
INTERVAL_MS: dict[str, int] = {
    **TIMEFRAME_MS,
    "1s": 1_000,
    "3m": 180_000,
    "30m": 1_800_000,
    "2h": 7_200_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "3d": 259_200_000,
}

MAX_KLINES_LIMIT = 1000
_UNIT = 10**8  # 1e-8: Binance spot's decimal resolution
_OCTAVES = 16  # value-noise octaves: periods 1 min .. 2**15 min (~23 days)


def floor_to(ms: int, interval_ms: int) -> int:
    """Open time of the interval containing ``ms`` (Binance aligns klines to the epoch)."""
    return ms - ms % interval_ms


def format_units(units: int) -> str:
    """1e-8 units -> Binance spot decimal string with 8 decimals."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // _UNIT}.{units % _UNIT:08d}"


def parse_units(text: str) -> int:
    """Decimal string -> 1e-8 units (exact for up to 8 decimals, rounded beyond)."""
    return int(Decimal(text).scaleb(8).to_integral_value())


def _decimals(text: str) -> int:
    """Significant decimals of a decimal string ("7195.24000000" -> 2)."""
    if "." not in text:
        return 0
    return len(text.split(".", 1)[1].rstrip("0"))


class SimClock:
    """Simulated time: ``start_ms + real_elapsed * speed``.

    ``speed`` > 1 compresses days into seconds so tests can watch candles close and the 24 h
    connection lifetime expire; ``monotonic`` is injectable so unit tests need no real waiting.
    """

    def __init__(
        self,
        start_ms: int | None = None,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if start_ms is None:
            start_ms = floor_to(int(time.time() * 1000), 60_000)
        self.start_ms = int(start_ms)
        self.speed = float(speed)
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_ms(self) -> int:
        return self.start_ms + int((self._monotonic() - self._t0) * 1000.0 * self.speed)

    def real_seconds_until(self, sim_ms: int) -> float:
        """Real seconds until the sim clock reaches ``sim_ms`` (0 if already past)."""
        return max(0.0, (sim_ms - self.now_ms()) / 1000.0 / self.speed)


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """Realistic level and granularity of one symbol's synthetic prices."""

    price: float  # typical price level
    tick: str  # price tick, Binance PRICE_FILTER tickSize
    step: str  # quantity step, Binance LOT_SIZE stepSize
    volume_per_min: float  # typical base volume per minute
    trades_per_min: int  # typical trade count per minute
    sigma_per_min: float = 0.0008  # log-price stdev per minute


_PROFILES: Mapping[str, SymbolProfile] = {
    "BTCUSDT": SymbolProfile(60000.0, "0.01", "0.00001", 15.0, 1200, 0.0007),
    "ETHUSDT": SymbolProfile(3000.0, "0.01", "0.0001", 300.0, 900, 0.0009),
    "BNBUSDT": SymbolProfile(550.0, "0.01", "0.001", 60.0, 150, 0.0008),
    "SOLUSDT": SymbolProfile(150.0, "0.01", "0.001", 1500.0, 500, 0.0012),
    "XRPUSDT": SymbolProfile(0.55, "0.0001", "1", 200000.0, 300, 0.0010),
    "ADAUSDT": SymbolProfile(0.45, "0.0001", "0.1", 150000.0, 150, 0.0011),
    "DOGEUSDT": SymbolProfile(0.15, "0.00001", "1", 1000000.0, 250, 0.0012),
    "AVAXUSDT": SymbolProfile(35.0, "0.01", "0.01", 3000.0, 150, 0.0012),
}


def _unit_hash(*parts: object) -> float:
    """Deterministic uniform in [0, 1) from the parts (stable across processes, unlike hash())."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def profile_for(symbol: str) -> SymbolProfile:
    """The symbol's profile; unknown symbols get a stable made-up level."""
    known = _PROFILES.get(symbol)
    if known is not None:
        return known
    price = 10.0 ** (-2.0 + 5.0 * _unit_hash("level", symbol))
    tick_exp = max(-8, math.floor(math.log10(price)) - 4)
    tick = format(Decimal(1).scaleb(tick_exp), "f")
    return SymbolProfile(price, tick, "0.01", 20000.0 / price, 100)


class Market:
    """Klines of every (symbol, interval): synthetic, or replayed from recorded rows.

    Synthetic prices follow a multi-octave value noise in log space, a function of absolute time
    (Brownian-like: amplitude grows with the square root of the period) so any candle is computed
    directly, without walking from some origin. A candle's open is the previous candle's close.

    History starts at ``history_start_ms`` (the first kline of a stream opens at or after it;
    default: the epoch), as a listing's does on Binance.

    Replayed streams map the recorded rows onto consecutive candles ending just before
    ``anchor_ms`` (the sim start), cycling in both directions, with the rows' exact strings.
    """

    def __init__(
        self,
        seed: int = 0,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        replays: Mapping[StreamKey, Sequence[Sequence[Any]]] | None = None,
        anchor_ms: int = 0,
        history_start_ms: int = 0,
    ) -> None:
        self.seed = seed
        self.history_start_ms = history_start_ms
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.anchor_ms = anchor_ms
        self._replays: dict[StreamKey, list[Row]] = {}
        for key, rows in (replays or {}).items():
            if key.timeframe not in INTERVAL_MS:
                raise ValueError(f"unsupported interval for replay: {key}")
            if not rows:
                raise ValueError(f"empty replay for {key}")
            self._replays[key] = [list(r) for r in rows]
        self._node = lru_cache(maxsize=1 << 16)(self._node_uncached)

    # -- queries ---------------------------------------------------------------------------

    def has_symbol(self, symbol: str) -> bool:
        return symbol in self.symbols

    def kline(self, symbol: str, timeframe: str, open_time: int) -> Row:
        """The final (closed) values of the kline opening at ``open_time``."""
        iv = INTERVAL_MS[timeframe]
        if open_time % iv:
            raise ValueError(f"{open_time} is not a {timeframe} open time")
        rows = self._replays.get(StreamKey(symbol, timeframe))
        if rows is not None:
            idx = ((open_time - floor_to(self.anchor_ms, iv)) // iv) % len(rows)
            src = rows[idx]
            return [
                open_time, str(src[1]), str(src[2]), str(src[3]), str(src[4]), str(src[5]),
                open_time + iv - 1, str(src[7]), int(src[8]), str(src[9]), str(src[10]),
                str(src[11]),
            ]  # fmt: skip
        return self._synthetic(symbol, timeframe, open_time, iv)

    def closed_klines(
        self,
        symbol: str,
        timeframe: str,
        start_ms: int,
        end_ms: int,
        now_ms: int | None = None,
    ) -> list[Row]:
        """Final rows of the klines whose open_time is in [start_ms, end_ms], ascending.

        With ``now_ms``, klines not yet closed at that sim time (close_time >= now_ms) are left out.
        """
        iv = INTERVAL_MS[timeframe]
        first = max(floor_to(start_ms + iv - 1, iv), self.first_open(timeframe))
        if now_ms is not None:
            end_ms = min(end_ms, floor_to(now_ms, iv) - iv)
        return [self.kline(symbol, timeframe, t) for t in range(first, end_ms + 1, iv)]

    def first_open(self, timeframe: str) -> int:
        """Open time of the stream's first kline: the exchange's history starts there."""
        iv = INTERVAL_MS[timeframe]
        return floor_to(max(0, self.history_start_ms) + iv - 1, iv)

    def row_at(self, symbol: str, timeframe: str, open_time: int, now_ms: int) -> Row:
        """The kline as seen at sim time ``now_ms``: final once closed, else the partial."""
        final = self.kline(symbol, timeframe, open_time)
        iv = INTERVAL_MS[timeframe]
        if now_ms >= open_time + iv:
            return final
        return self._partial(symbol, timeframe, final, max(0, now_ms - open_time), iv)

    def event(self, symbol: str, timeframe: str, open_time: int, now_ms: int) -> dict[str, Any]:
        """Binance kline event payload (``{"e":"kline",...}``) for this kline at ``now_ms``."""
        iv = INTERVAL_MS[timeframe]
        row = self.row_at(symbol, timeframe, open_time, now_ms)
        closed = now_ms >= open_time + iv
        first_id = open_time // 10  # trade ids grow with time; <= 100 trades/s never overlap
        n = int(row[8])
        return {
            "e": "kline",
            "E": now_ms,
            "s": symbol,
            "k": {
                "t": open_time,
                "T": open_time + iv - 1,
                "s": symbol,
                "i": timeframe,
                "f": first_id if n else -1,
                "L": first_id + n - 1 if n else -1,
                "o": row[1],
                "c": row[4],
                "h": row[2],
                "l": row[3],
                "v": row[5],
                "n": n,
                "x": closed,
                "q": row[7],
                "V": row[9],
                "Q": row[10],
                "B": row[11],
            },
        }

    # -- synthetic ---------------------------------------------------------------------------

    def _node_uncached(self, symbol: str, octave: int, j: int) -> float:
        return 2.0 * _unit_hash(self.seed, symbol, octave, j) - 1.0

    def _price(self, symbol: str, t_ms: int, prof: SymbolProfile) -> float:
        minutes = t_ms / 60_000.0
        log_dev = 0.0
        for k in range(_OCTAVES):
            period = float(1 << k)
            x = minutes / period
            j = math.floor(x)
            frac = x - j
            a = self._node(symbol, k, j)
            b = self._node(symbol, k, j + 1)
            log_dev += (a + (b - a) * frac) * prof.sigma_per_min * math.sqrt(period) * 1.2
        return prof.price * math.exp(log_dev)

    def _synthetic(self, symbol: str, timeframe: str, t: int, iv: int) -> Row:
        prof = profile_for(symbol)
        tick = parse_units(prof.tick)
        step = parse_units(prof.step)

        def to_ticks(p: float) -> int:
            return max(tick, round(p * _UNIT / tick) * tick)

        o = to_ticks(self._price(symbol, t, prof))
        c = to_ticks(self._price(symbol, t + iv, prof))
        iv_min = iv / 60_000.0
        u = [_unit_hash(self.seed, symbol, timeframe, t, i) for i in range(5)]
        spread = prof.sigma_per_min * math.sqrt(iv_min) * max(o, c)
        h = max(o, c) + round(u[0] * 0.8 * spread / tick) * tick
        low = max(tick, min(o, c) - round(u[1] * 0.8 * spread / tick) * tick)
        vol = max(
            step, round(prof.volume_per_min * iv_min * (0.4 + 1.2 * u[2]) * _UNIT / step) * step
        )
        vwap = min(h, max(low, (o + h + low + c) // 4))
        quote = vol * vwap // _UNIT
        taker = (vol * (35 + int(30 * u[3])) // 100) // step * step
        taker_quote = taker * vwap // _UNIT
        trades = max(1, int(prof.trades_per_min * iv_min * (0.5 + u[4])))
        trades = min(trades, iv // 10)
        return [
            t, format_units(o), format_units(h), format_units(low), format_units(c),
            format_units(vol), t + iv - 1, format_units(quote), trades,
            format_units(taker), format_units(taker_quote), "0",
        ]  # fmt: skip

    # -- the forming kline -------------------------------------------------------------------

    def _partial(self, symbol: str, timeframe: str, final: Row, elapsed: int, iv: int) -> Row:
        """Deterministic partial of ``final`` after ``elapsed`` ms: o fixed, c wanders towards the
        final close, h/l widen towards (never beyond) the final ones, volumes grow."""
        t = int(final[0])
        o, h, low, c = (parse_units(str(final[i])) for i in (1, 2, 3, 4))
        tick = 10 ** (8 - min(8, max(_decimals(str(final[i])) for i in (1, 2, 3, 4))))
        num, den = elapsed, iv
        w = 2.0 * _unit_hash(self.seed, symbol, timeframe, t, "w", elapsed // 1000) - 1.0
        wiggle = int((h - low) * w * 4.0 * num * (den - num) / (den * den))
        cp = o + (c - o) * num // den + wiggle
        cp = min(h, max(low, cp // tick * tick))
        hp = min(h, (max(o, cp) + (h - max(o, c)) * num // den) // tick * tick)
        lp = max(low, -(-(min(o, cp) - (min(o, c) - low) * num // den) // tick) * tick)

        def grow(i: int) -> str:
            return format_units(parse_units(str(final[i])) * num // den)

        n = -(-int(final[8]) * num // den)
        return [
            t, format_units(o), format_units(hp), format_units(lp), format_units(cp), grow(5),
            final[6], grow(7), n, grow(9), grow(10), final[11],
        ]  # fmt: skip
