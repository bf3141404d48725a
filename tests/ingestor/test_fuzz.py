"""Fuzz: arbitrary bytes and arbitrary JSON into every parser of exchange input. Each gives a
value (a frame, a mark price, a page of rows) or its typed reject, never another exception."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.decode import Decoder, Frame, FrameKind
from ingestor.errors import DecodeError
from ingestor.feed.markprice import Control, MarkPrice, decode_mark_price
from ingestor.reasons import Reason
from ingestor.streams import StreamRegistry
from ingestor.validate import Window, check_body

DECODER = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["kline", "markPriceUpdate", "BTCUSDT", "1m", "1.5", "\u00b2", "-0", "."])
)
JSON = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=12)
        | st.dictionaries(
            st.sampled_from(list("eEskitTohlcvqVQnxpLfB")) | st.text(max_size=8), inner, max_size=14
        )
    ),
    max_leaves=60,
)


#: Strings that look like decimals to a careless check: non-ASCII digits, exponents, signs.
NASTY = st.sampled_from(
    ["\u00b2", "\u0663", "\uff11\uff11\uff10", "1e5", "inf", "nan", "-", ".", "1.", "-0", "9" * 40]
) | st.text(alphabet="0123456789.-+e\u00b2\u0663", max_size=34)
VALID_K = {
    "t": 1_600_000_020_000 // 60_000 * 60_000,
    "T": 1_600_000_079_999,
    "s": "BTCUSDT",
    "i": "1m",
    "o": "10.0",
    "h": "12.0",
    "l": "9.0",
    "c": "11.0",
    "v": "1.5",
    "q": "15.0",
    "V": "0.5",
    "Q": "5.0",
    "n": 3,
    "x": True,
}


def _kline_like(draw: Any) -> dict[str, Any]:
    """A real-looking kline event with some fields replaced or removed: deeper than noise."""
    k: dict[str, Any] = dict(VALID_K)
    for key in draw(st.sets(st.sampled_from(sorted(VALID_K)), max_size=4)):
        if draw(st.booleans()):
            k[key] = draw(NASTY | JSON)
        else:
            del k[key]
    return {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": draw(JSON), "k": k}}


kline_like = st.composite(_kline_like)()
frames = st.binary(max_size=300) | JSON.map(orjson.dumps) | kline_like.map(orjson.dumps)


@FUZZ
@given(frames)
def test_kline_decoder_gives_a_frame_or_a_reject(raw: bytes) -> None:
    for data in (raw, raw.decode("utf-8", "replace")):
        try:
            frame = DECODER.decode(data)
        except DecodeError as exc:
            assert exc.reason in Reason
            continue
        assert isinstance(frame, Frame)
        if frame.kind is FrameKind.KLINE:
            assert frame.price.isascii() and frame.symbol == "BTCUSDT"
            if frame.closed is not None:
                assert all(str(v).isascii() for v in frame.closed.row)


@FUZZ
@given(
    st.binary(max_size=300)
    | JSON.map(orjson.dumps)
    | st.dictionaries(st.sampled_from(["E", "s", "p", "stream"]), NASTY | JSON, max_size=2).map(
        lambda d: orjson.dumps({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "1.5", **d})
    )
)
def test_mark_price_decoder_gives_a_price_or_a_reject(raw: bytes) -> None:
    try:
        mark = decode_mark_price(raw)
    except DecodeError as exc:
        assert exc.reason in Reason
        return
    assert isinstance(mark, Control) or (
        isinstance(mark, MarkPrice) and mark.price.isascii() and mark.event_ms > 0
    )


rows = st.lists(
    st.lists(JSON, max_size=13)
    | st.tuples(
        st.integers(0, 2**62),
        *[st.sampled_from(["1.5", "0", "\u00b2", "-1", "1e5", ""]) for _ in range(5)],
        st.integers(0, 2**62),
        st.sampled_from(["2.5", "\u0663"]),
        st.integers(0, 10) | st.text(max_size=3),
        st.sampled_from(["3", "x"]),
        st.sampled_from(["4", "4.0"]),
        st.just("0"),
    ).map(list),
    max_size=5,
)


@FUZZ
@given(st.binary(max_size=300) | JSON.map(orjson.dumps) | rows.map(orjson.dumps))
def test_rest_page_check_gives_candles_or_rejects(body: bytes) -> None:
    """``validate.check_body``, the one check every REST page goes through."""
    window = Window.rest(60_000, closed_before_ms=2**61, now_ms=2**61)
    checked = check_body(body, 0, window, limit=1000)
    assert all(r.reason in Reason for r in checked.rejected)
    c = checked.candles
    assert len(c) + len(checked.rejected) + checked.still_open >= min(1, checked.rows)
    for f, col in c.decimals.items():
        assert all(v.isascii() for v in col.tolist()), f
