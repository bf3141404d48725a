"""Candles.from_rest_json: the numpy fast path gives exactly what orjson + from_rows give, and
any body it does not recognise takes that reference path (or raises as it does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.candles import DECIMAL_FIELDS, Candles, rest_columns

CSV = "binance/spot/BTCUSDT-1m-2020-01-01.csv"


def rest_rows(lines: list[str]) -> list[list[object]]:
    out: list[list[object]] = []
    for line in lines:
        f = line.split(",")
        out.append([int(f[0]), *f[1:6], int(f[6]), f[7], int(f[8]), f[9], f[10], f[11]])
    return out


def assert_same(got: Candles, want: Candles) -> None:
    assert len(got) == len(want)
    for name in ("stream_id", "open_time", "close_time", "trades_count", "close_f"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name
    assert list(got.decimals) == list(DECIMAL_FIELDS)
    for f in DECIMAL_FIELDS:
        assert got.decimals[f].dtype == want.decimals[f].dtype, f
        assert got.decimals[f].tolist() == want.decimals[f].tolist(), f
    assert got.indicators is None and got.source == want.source


def reference(body: bytes, sid: int) -> Candles:
    rows = orjson.loads(body)
    return Candles.from_rows([sid] * len(rows), rows)


def test_real_page_takes_the_fast_path(real_data: Path) -> None:
    lines = (real_data / CSV).read_text().split()[:1000]
    body = orjson.dumps(rest_rows(lines))
    assert rest_columns(body) is not None
    got = Candles.from_rest_json(body, 7)
    assert_same(got, reference(body, 7))
    assert got.open_time[0] == 1577836800000 and got.decimals["close_price"][0] == b"7186.68000000"
    assert got.trades_count[0] == 493


decimal = st.from_regex(r"\A-?[0-9]{1,16}(\.[0-9]{0,15})?\Z").filter(lambda s: len(s) <= 32)
row = st.tuples(
    st.integers(0, 10**18 - 1),
    *[decimal] * 5,
    st.integers(0, 10**18 - 1),
    decimal,
    st.integers(0, 10**18 - 1),
    decimal,
    decimal,
    st.sampled_from(["0", "", "123"]),
)


@pytest.mark.slow  # 150 hypothesis examples, ~10 s (more under coverage)
@settings(max_examples=150, deadline=None)
@given(rows=st.lists(row, min_size=1, max_size=30), sid=st.integers(0, 200))
def test_fast_path_equals_reference(rows: list[tuple[object, ...]], sid: int) -> None:
    body = orjson.dumps([list(r) for r in rows])
    assert rest_columns(body) is not None
    assert_same(Candles.from_rest_json(body, sid), reference(body, sid))


ROW = [1, "1.5", "2.5", "0.5", "1.0", "10", 59999, "15.0", 3, "5", "7.5", "0"]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        orjson.dumps([ROW], option=orjson.OPT_INDENT_2),  # whitespace
        orjson.dumps([[*ROW[:11]]]),  # 11 fields
        orjson.dumps([[*ROW, "0"]]),  # 13 fields
        orjson.dumps([[ROW[0], 1.5, *ROW[2:]]]),  # a number for a decimal
        orjson.dumps([[str(ROW[0]), *ROW[1:]]]),  # a string for an integer
        orjson.dumps([[-1, *ROW[1:]]]),  # a negative integer
        orjson.dumps([[10**18, *ROW[1:]]]),  # 19 digits
        orjson.dumps([[ROW[0], "1" * 33, *ROW[2:]]]),  # longer than S32
        orjson.dumps([[*ROW[:11], 0]]),  # an unquoted "ignore"
        orjson.dumps([ROW, ROW])[:-1] + b",5]",  # something after the rows
        b'[[1,"\\u0031",' + orjson.dumps(ROW[2:])[1:] + b"]",  # an escape
    ],
)
def test_other_json_takes_the_reference_path(body: bytes) -> None:
    assert rest_columns(body) is None
    try:
        want = reference(body, 3)
    except (ValueError, TypeError, IndexError) as exc:
        with pytest.raises(type(exc)):
            Candles.from_rest_json(body, 3)
        return
    assert_same(Candles.from_rest_json(body, 3), want)


@pytest.mark.parametrize("body", [b"", b"{}", b'{"code":-1121}', b"[[1,", b"nope", b"5"])
def test_not_a_list_raises_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        Candles.from_rest_json(body, 0)
