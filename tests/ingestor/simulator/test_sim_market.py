"""The pure market model: clock, determinism, OHLC sanity, the forming kline, CSV replay."""

from __future__ import annotations

import re

import pytest

from ingestor.simulator.market import DEFAULT_SYMBOLS, INTERVAL_MS, Market, SimClock, parse_units
from ingestor.simulator.replay import load_csv_rows, parse_replay_specs
from ingestor.streams import StreamKey
from tests.conftest import data_dir

DATA = data_dir() / "binance"
SPOT_1M = DATA / "spot" / "BTCUSDT-1m-2020-01-01.csv"
DEC8 = re.compile(r"^\d+\.\d{8}$")
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_runs_at_speed_from_start() -> None:
    mono = FakeMonotonic()
    clock = SimClock(T0, speed=60.0, monotonic=mono)
    assert clock.now_ms() == T0
    mono.t += 1.5
    assert clock.now_ms() == T0 + 90_000
    assert clock.real_seconds_until(T0 + 150_000) == pytest.approx(1.0)
    assert clock.real_seconds_until(T0) == 0.0


def test_clock_default_start_is_now_floored_to_the_minute() -> None:
    import time

    clock = SimClock()
    assert clock.start_ms % 60_000 == 0
    assert abs(clock.start_ms - time.time() * 1000) < 61_000


def test_same_seed_same_klines_other_seed_other_klines() -> None:
    a, b, c = Market(seed=7), Market(seed=7), Market(seed=8)
    ra = a.closed_klines("ETHUSDT", "5m", T0 - 86_400_000, T0)
    assert ra == b.closed_klines("ETHUSDT", "5m", T0 - 86_400_000, T0)
    assert len(ra) == 289
    assert ra != c.closed_klines("ETHUSDT", "5m", T0 - 86_400_000, T0)


@pytest.mark.parametrize("symbol", DEFAULT_SYMBOLS)
def test_synthetic_klines_are_consistent_binance_rows(symbol: str) -> None:
    m = Market(seed=1)
    rows = m.closed_klines(symbol, "1h", T0 - 90 * 86_400_000, T0)
    assert len(rows) == 90 * 24 + 1
    prev_close = None
    for r in rows:
        assert len(r) == 12
        t, o, h, low, c, v, close_t, q, n, bv, bq, ignore = r
        assert close_t == t + 3_600_000 - 1
        assert all(DEC8.match(x) for x in (o, h, low, c, v, q, bv, bq)), r
        assert isinstance(n, int) and n >= 1 and ignore == "0"
        o_, h_, l_, c_ = (parse_units(x) for x in (o, h, low, c))
        assert h_ >= max(o_, c_) and 0 < l_ <= min(o_, c_)
        assert parse_units(v) >= parse_units(bv) >= 0 and parse_units(q) >= parse_units(bq) >= 0
        if prev_close is not None:
            assert o == prev_close  # a candle opens where the last one closed
        prev_close = c


def test_prices_stay_near_realistic_levels() -> None:
    m = Market(seed=3)
    closes = [float(r[4]) for r in m.closed_klines("BTCUSDT", "1d", T0 - 365 * 86_400_000, T0)]
    assert min(closes) > 20_000 and max(closes) < 180_000
    doge = [float(r[4]) for r in m.closed_klines("DOGEUSDT", "1d", T0 - 90 * 86_400_000, T0)]
    assert min(doge) > 0.03 and max(doge) < 0.6


def test_forming_kline_grows_towards_the_final_one() -> None:
    m = Market(seed=2)
    iv = INTERVAL_MS["15m"]
    final = m.kline("SOLUSDT", "15m", T0)
    fo, fh, fl, _ = (parse_units(final[i]) for i in (1, 2, 3, 4))
    last_v = -1
    for elapsed in range(0, iv, 30_000):
        p = m.row_at("SOLUSDT", "15m", T0, T0 + elapsed)
        o, h, low, c = (parse_units(p[i]) for i in (1, 2, 3, 4))
        assert o == fo and fl <= low <= min(o, c) and max(o, c) <= h <= fh
        v = parse_units(p[5])
        assert v >= last_v and p[8] <= final[8]
        last_v = v
        ev = m.event("SOLUSDT", "15m", T0, T0 + elapsed)
        assert ev["k"]["x"] is False and ev["k"]["c"] == p[4]
    assert m.row_at("SOLUSDT", "15m", T0, T0 + iv) == final
    assert m.event("SOLUSDT", "15m", T0, T0 + iv)["k"]["x"] is True


def test_closed_klines_with_now_leaves_out_the_open_one() -> None:
    m = Market()
    rows = m.closed_klines("BTCUSDT", "1m", T0 - 120_000, T0 + 60_000, now_ms=T0 + 30_000)
    assert [r[0] for r in rows] == [T0 - 120_000, T0 - 60_000]


def test_replay_retimes_csv_rows_onto_the_timeline_with_exact_strings() -> None:
    rows = load_csv_rows([SPOT_1M])
    assert len(rows) == 1440
    key = StreamKey("BTCUSDT", "1m")
    anchor = T0 + 25_000  # sim start inside the T0 minute
    m = Market(replays={key: rows}, anchor_ms=anchor)
    got = m.closed_klines("BTCUSDT", "1m", T0 - 1440 * 60_000, T0 - 60_000)
    assert len(got) == 1440
    for g, src in zip(got, rows, strict=True):  # the file ends right before the start
        assert g[1:6] == src[1:6] and g[7:] == src[7:]
        assert g[6] == g[0] + 59_999
    assert m.kline("BTCUSDT", "1m", T0)[1:6] == rows[0][1:6]  # then it cycles
    first = SPOT_1M.read_text().splitlines()[0].split(",")
    assert got[0][1] == first[1] == "7195.24000000"


def test_replay_specs_from_names_pairs_and_directories() -> None:
    specs = parse_replay_specs(
        [str(SPOT_1M), f"SOLUSDT:1h={DATA / 'spot' / 'BTCUSDT-1h-2024-08.csv'}", str(DATA / "spot")]
    )
    assert StreamKey("SOLUSDT", "1h") in specs
    assert SPOT_1M in specs[StreamKey("BTCUSDT", "1m")]
    assert StreamKey("ETHUSDT", "1m") in specs and StreamKey("BTCUSDT", "1h") in specs
    with pytest.raises(ValueError):
        parse_replay_specs(["BTCUSDT:7m=/nowhere.csv"])
