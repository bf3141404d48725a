"""The one validator: any REST body or row gives valid candles or rejects with a reason, never
an exception; each bad row kind has its reason; the column (numpy) and row (Python) paths, and
the compact-body and parsed-rows paths, judge alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.candles import DECIMAL_FIELDS
from ingestor.reasons import Reason
from ingestor.validate import (
    _DECIMAL,
    MAX_BODY_BYTES,
    MAX_DECIMAL_CHARS,
    Checked,
    Window,
    _decimal_ok,
    _row_type,
    _well_typed,
    check_body,
    check_row,
    check_rows,
)

M = 60_000
T0 = 1_700_000_040_000  # on the 1m grid
WINDOW = Window.rest(M, T0 + 100 * M, T0 + 100 * M)


def row(t: int = T0, **over: Any) -> list[Any]:
    r: list[Any] = [t, "10.0", "11.0", "9.0", "10.5", "1.0", t + M - 1, "10.0", 3, "0.5", "5.0"]
    r.append("0")
    for k, v in over.items():
        r[int(k[1:])] = v
    return r


def assert_sound(out: Checked, w: Window = WINDOW) -> None:
    """Every valid candle obeys every rule; every reject has a known reason."""
    c = out.candles
    t = c.open_time
    assert (t % w.interval_ms == 0).all() and (c.close_time == t + w.interval_ms - 1).all()
    assert (t >= w.first).all() and (t <= w.last).all() and (t <= w.closed_until).all()
    assert (np.diff(t) > 0).all()
    f = {k: c.decimals[k].astype(np.float64) for k in DECIMAL_FIELDS}
    assert np.isfinite(np.stack(list(f.values()))).all()
    assert (f["high_price"] >= f["low_price"]).all()
    assert (f["high_price"] >= np.maximum(f["open_price"], f["close_price"])).all()
    assert (f["low_price"] <= np.minimum(f["open_price"], f["close_price"])).all()
    for k in ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume"):
        assert (f[k] >= 0).all()
    assert np.array_equal(c.close_f, f["close_price"])
    for r in out.rejected:
        assert r.reason in Reason and isinstance(r.raw, str) and r.detail


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("abc", "bad_type"),
        ({"t": T0}, "bad_type"),
        ([T0, "1.0"], "bad_type"),  # short
        ([*row(), "extra"], "bad_type"),
        (row(c0=str(T0)), "bad_type"),
        (row(c0=True), "bad_type"),
        (row(c8=3.0), "bad_type"),
        (row(c0=-M), "bad_type"),
        (row(c0=1 << 63), "bad_type"),  # past int64
        (row(c4="NaN"), "bad_decimal"),
        (row(c4="Infinity"), "bad_decimal"),
        (row(c4="-Infinity"), "bad_decimal"),
        (row(c2="1e5"), "bad_decimal"),
        (row(c2="1E5"), "bad_decimal"),
        (row(c1="\uff11\uff10.0"), "bad_decimal"),  # fullwidth digits
        (row(c1="\u0661\u0660.0"), "bad_decimal"),  # Arabic-Indic digits
        (row(c2="1" + "0" * 34), "bad_decimal"),  # longer than stored: never cut
        (row(c5="+1"), "bad_decimal"),
        (row(c5=" 1"), "bad_decimal"),
        (row(c5="1.2.3"), "bad_decimal"),
        (row(c5="."), "bad_decimal"),
        (row(c5=""), "bad_decimal"),
        (row(c5=1.0), "bad_decimal"),
        (row(c11=0), "bad_type"),
        (row(T0 + 1, c6=T0 + M), "misaligned"),
        (row(c6=T0 + M), "bad_close_time"),
        (row(4_102_444_800_000), "future_kline"),  # year 2100
        (row(c2="8.0"), "rule_violation"),  # high < low
        (row(c1="12.0"), "rule_violation"),  # open > high
        (row(c3="10.6"), "rule_violation"),  # low > close
        (row(c9="-0.5"), "rule_violation"),
    ],
)
def test_each_bad_row_has_its_reason(bad: Any, reason: str) -> None:
    out = check_body(orjson.dumps([row(T0 - M), bad]), 0, WINDOW, limit=1000)
    assert [r.reason for r in out.rejected] == [reason]
    assert out.candles.open_time.tolist() == [T0 - M]
    if isinstance(bad, list) and len(bad) == 12 and isinstance(bad[11], str):
        single = check_row(bad[:11], WINDOW)  # the decoder's rows have no 12th column
        assert single is not None and single.reason == reason


def test_decimals_are_kept_exactly_as_sent_up_to_32_characters() -> None:
    long = "1" + "0" * 20 + "." + "0" * 10  # 32 characters
    out = check_body(orjson.dumps([row(c2=long)]), 0, WINDOW, limit=1000)
    assert not out.rejected and out.candles.decimals["high_price"][0] == long.encode()
    assert len(long) == MAX_DECIMAL_CHARS


def test_whole_body_rejects() -> None:
    assert check_body(b"{", 0, WINDOW, limit=10).rejected[0].reason == "malformed_json"
    assert check_body(b'{"a":1}', 0, WINDOW, limit=10).rejected[0].reason == "malformed_json"
    too_many = orjson.dumps([row(T0 + i * M) for i in range(3)])
    out = check_body(too_many, 0, WINDOW, limit=2)
    assert [r.reason for r in out.rejected] == ["too_many_rows"] and not len(out.candles)
    huge = b"[" + b" " * MAX_BODY_BYTES + b"]"
    assert check_body(huge, 0, WINDOW, limit=10).rejected[0].reason == "body_too_large"


def test_still_open_and_repeated_rows() -> None:
    w = Window.rest(M, T0 + 2 * M - 1, T0 + 2 * M)  # the kline at T0 + M is still open
    out = check_body(orjson.dumps([row(T0), row(T0), row(T0 + M)]), 0, w, limit=10)
    assert out.candles.open_time.tolist() == [T0] and out.still_open == 1
    assert [r.reason for r in out.rejected] == ["out_of_order"]
    ranged = Window.rest(M, T0 + 9 * M, T0 + 9 * M, first=T0 + M, last=T0 + 2 * M)
    out = check_body(orjson.dumps([row(T0), row(T0 + M)]), 0, ranged, limit=10)
    assert [r.reason for r in out.rejected] == ["out_of_range"]


_BODY_CHARS = "0123456789.-"
decimal_text = st.text(alphabet=_BODY_CHARS, min_size=1, max_size=MAX_DECIMAL_CHARS)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), decimal_text
)
any_row = st.one_of(
    st.lists(json_scalar, max_size=14),
    json_scalar,
    st.dictionaries(st.text(max_size=3), json_scalar, max_size=3),
    st.builds(
        lambda t, dec, n, close: [t, *dec[:5], close, dec[5], n, dec[6], dec[7], "0"],
        st.integers(0, 1 << 62).map(lambda x: x // M * M) | st.integers(0, 1 << 62),
        st.lists(decimal_text, min_size=8, max_size=8),
        st.integers(0, 10**6),
        st.integers(0, 1 << 62),
    ),
    st.builds(lambda t, h: row(T0 + t * M, c2=h), st.integers(-5, 120), decimal_text),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_row, max_size=12))
def test_any_page_gives_valid_candles_or_rejects(rows: list[Any]) -> None:
    try:
        body = orjson.dumps(rows)
    except (TypeError, orjson.JSONEncodeError):
        return  # not JSON (a float nan is): the bytes test covers what is not JSON
    out = check_body(body, 3, WINDOW, limit=1000)
    assert_sound(out)
    assert len(out.candles) + len(out.rejected) + out.still_open == len(rows)
    assert (out.candles.stream_id == 3).all()
    # the parsed-rows path judges exactly as the compact-body path
    again = check_rows(orjson.loads(body), 3, WINDOW)
    assert again.candles.open_time.tolist() == out.candles.open_time.tolist()
    assert [r.reason for r in again.rejected] == [r.reason for r in out.rejected]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_valid_candles_or_rejects(body: bytes) -> None:
    assert_sound(check_body(body, 0, WINDOW, limit=1000))


_column_text = st.text(alphabet=_BODY_CHARS + "\x00e+ ", max_size=MAX_DECIMAL_CHARS).filter(
    lambda s: not s.endswith("\x00")  # an S32 column cannot hold a trailing NUL (numpy pads)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_column_text, min_size=1))
def test_the_column_decimal_check_is_the_rows_grammar(texts: list[str]) -> None:
    col = np.array([s.encode() for s in texts], dtype=f"S{MAX_DECIMAL_CHARS}")
    assert _decimal_ok(col).tolist() == [bool(_DECIMAL.fullmatch(s)) for s in texts]


@settings(max_examples=300, deadline=None)
@given(any_row)
def test_one_row_is_judged_like_a_page_of_one(r: Any) -> None:
    single = check_row(r[:11] if isinstance(r, list) and len(r) == 12 else r, WINDOW)
    page = check_rows([r], 0, WINDOW) if not (isinstance(r, list) and len(r) == 12) else None
    if page is None:
        page = check_rows([r], 0, WINDOW)
    reasons = [x.reason for x in page.rejected]
    if single is None:
        assert reasons == [] and (len(page.candles) + page.still_open) == 1
    else:
        assert reasons == [single.reason] or (
            single.reason == "bad_type" and reasons == ["bad_type"]
        )


def test_rejects_come_in_input_order_on_both_paths() -> None:
    """Found by the page property under load: a row with a bad close time before one with a
    bad decimal gave the rejects in input order on the compact-body path but the decimal
    first on the parsed-rows path."""
    zeros = ["0"] * 8
    row = [0, *zeros[:5], 0, zeros[5], 0, zeros[6], zeros[7], "0"]
    bad = [0, *zeros[:5], 0, zeros[5], 0, zeros[6], ".", "0"]
    body = orjson.dumps([row, bad])
    for out in (check_body(body, 0, WINDOW, limit=1000), check_rows([row, bad], 0, WINDOW)):
        assert [r.reason for r in out.rejected] == ["bad_close_time", "bad_decimal"]


_DECIMAL_TEXT = st.one_of(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,16})?", fullmatch=True),
    st.text(alphabet="0123456789.-\x00 +e\u0661\u00e9", max_size=40),
    st.text(max_size=4),
    # around the 32-character bound
    st.builds(lambda a, b: "7" * a + "." + "5" * b, st.integers(0, 34), st.integers(0, 8)),
)
_CELL = st.one_of(
    _DECIMAL_TEXT, st.integers(-2, 2**64), st.floats(allow_nan=False), st.none(), st.booleans()
)
_GOOD = (60_000, "1.5", "2", "1", "1.25", "10", 119_999, "15.5", 3, "4", "6.1")


@given(
    st.one_of(
        # a good row with one to three cells replaced
        st.lists(st.tuples(st.integers(0, 10), _CELL), min_size=1, max_size=3).map(
            lambda cells: tuple(dict(cells).get(i, cell) for i, cell in enumerate(_GOOD))
        ),
        # a good row with one decimal of 28 to 40 characters (the bound is 32)
        st.tuples(st.sampled_from((1, 2, 3, 4, 5, 7, 9, 10)), st.integers(28, 40)).map(
            lambda c: tuple("9" * c[1] if i == c[0] else v for i, v in enumerate(_GOOD))
        ),
        st.lists(_CELL, min_size=10, max_size=12),
        st.lists(_DECIMAL_TEXT, min_size=11, max_size=11).map(
            lambda d: (60_000, *d[:5], 119_999, d[5], 3, *d[6:8])
        ),
    )
)
@settings(max_examples=600, deadline=None)
def test_the_quick_type_pass_agrees_with_the_column_by_column_one(row: Any) -> None:
    """check_row's one-regex pass accepts exactly the rows the per-column checks accept."""
    assert _well_typed(row) == (_row_type(row, 11) is None)
