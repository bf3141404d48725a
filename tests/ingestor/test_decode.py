"""The decoder on real recorded Binance frames and on every kind of bad frame."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ingestor.decode import Decoder, FrameKind
from ingestor.errors import DecodeError
from ingestor.reasons import Reason
from ingestor.streams import StreamRegistry
from tests.conftest import shared_data


def _recorded(real_data: Path) -> list[str]:
    path = real_data / "binance" / "ws" / "recorded_kline_frames.jsonl"
    return [json.loads(line)["frame"] for line in path.read_text().splitlines() if line.strip()]


def _registry_for(frames: list[str]) -> StreamRegistry:
    pairs = {(orjson.loads(f)["data"]["s"], orjson.loads(f)["data"]["k"]["i"]) for f in frames}
    return StreamRegistry(sorted({s for s, _ in pairs}), sorted({t for _, t in pairs}))


def test_recorded_frames_decode_exactly(real_data: Path) -> None:
    frames = _recorded(real_data)
    assert len(frames) == 69
    dec = Decoder(_registry_for(frames))
    closed = 0
    for raw in frames:
        msg = orjson.loads(raw)
        k = msg["data"]["k"]
        frame = dec.decode(raw)
        assert frame.kind is FrameKind.KLINE
        assert frame.symbol == k["s"] and frame.price == k["c"]
        assert frame.event_time == msg["data"]["E"]
        if k["x"]:
            closed += 1
            assert frame.closed is not None
            assert frame.closed.row == (
                k["t"],
                k["o"],
                k["h"],
                k["l"],
                k["c"],
                k["v"],
                k["T"],
                k["q"],
                k["n"],
                k["V"],
                k["Q"],
            )
        else:
            assert frame.closed is None
    assert closed == sum(1 for raw in frames if orjson.loads(raw)["data"]["k"]["x"])
    assert closed > 0


def _raw_events(real_data: Path) -> list[str]:
    """Raw single-stream events (no ``stream``/``data`` wrapper): the 49 recorded on one
    stream in ``../shared/data`` when it is there, else the repository's recorded frames
    unwrapped (``data`` as sent)."""
    shared = shared_data()
    if shared is not None:
        path = shared / "binance" / "ws" / "btcusdt_kline_5m_2021-09-14.jsonl"
        return [line for line in path.read_text().splitlines() if line.strip()]
    return [orjson.dumps(orjson.loads(f)["data"]).decode() for f in _recorded(real_data)]


def test_raw_stream_frames_decode(real_data: Path) -> None:
    lines = _raw_events(real_data)
    pairs = {(orjson.loads(x)["s"], orjson.loads(x)["k"]["i"]) for x in lines}
    dec = Decoder(StreamRegistry(sorted({s for s, _ in pairs}), sorted({t for _, t in pairs})))
    frames = [dec.decode(line) for line in lines]
    assert all(f.kind is FrameKind.KLINE for f in frames)
    closed = [f for f in frames if f.closed]
    assert len(closed) == sum(1 for line in lines if orjson.loads(line)["k"]["x"])


def _kline(**over: object) -> dict[str, object]:
    k: dict[str, object] = {
        "t": 1_600_000_020_000 // 60_000 * 60_000,
        "T": 0,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 1,
        "L": 2,
        "o": "10.00",
        "c": "11.00",
        "h": "12.00",
        "l": "9.00",
        "v": "1.5",
        "n": 3,
        "x": True,
        "q": "15.0",
        "V": "0.5",
        "Q": "5.0",
        "B": "0",
    }
    k["T"] = int(k["t"]) + 59_999  # type: ignore[call-overload]
    k.update(over)
    return {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "BTCUSDT", "k": k}}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (orjson.dumps({"stream": "btcusdt@kline_1m", "data": {"e": "kline"}}), "missing_field"),
        (orjson.dumps(_kline(t="123")), "bad_type"),
        (orjson.dumps(_kline(x="true")), "bad_type"),
        (orjson.dumps(_kline(o=10.0)), "bad_decimal"),
        (orjson.dumps(_kline(c="1e5")), "bad_decimal"),
        (orjson.dumps(_kline(h="8.00")), "rule_violation"),
        (orjson.dumps(_kline(l="10.5")), "rule_violation"),
        (orjson.dumps(_kline(v="-1")), "rule_violation"),
        (orjson.dumps(_kline(s="ETHUSDT")), "unknown_stream"),
        (
            orjson.dumps({k: v for k, v in _kline().items() if k != "data"} | {"data": 5}),
            "bad_type",
        ),
    ],
)
def test_bad_frames_have_reasons(raw: bytes, reason: str) -> None:
    dec = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
    with pytest.raises(DecodeError) as info:
        dec.decode(raw)
    assert info.value.reason == reason


def test_control_and_shutdown_frames() -> None:
    dec = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
    assert dec.decode(b'{"result": null, "id": 1}').kind is FrameKind.CONTROL
    assert dec.decode(b'{"e": "serverShutdown", "E": 5}').kind is FrameKind.SHUTDOWN
    assert dec.decode(b'{"event": {"e": "serverShutdown", "E": 5}}').kind is FrameKind.SHUTDOWN
    good = dec.decode(orjson.dumps(_kline()))
    assert good.closed is not None and good.closed.row[4] == "11.00"


# Digits str.isdigit() accepts but a decimal string never holds: superscript two (float()
# raises ValueError), Arabic-Indic three and fullwidth "110" (float() accepts them, numpy's
# ASCII columns later raise UnicodeEncodeError in the gate).
NON_ASCII_DIGITS = ("\u00b2", "\u0663", "\uff11\uff11\uff10")


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
@pytest.mark.parametrize("key", ["o", "c", "v", "Q"])
def test_non_ascii_digits_are_a_bad_decimal(digits: str, key: str) -> None:
    dec = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
    with pytest.raises(DecodeError) as info:
        dec.decode(orjson.dumps(_kline(**{key: digits})))
    assert info.value.reason == "bad_decimal"


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{",  # not UTF-8
        '{"e": "kline", "k": "\ud800"}',  # a lone surrogate in a str frame
        b"[" * 10_000,  # deeper than any parser's recursion
        orjson.dumps(_kline(t=-(2**63))),
    ],
)
def test_any_input_is_a_frame_or_a_decode_error(raw: bytes | str) -> None:
    dec = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
    try:
        dec.decode(raw)
    except DecodeError as exc:
        assert exc.reason in Reason


def test_websocket_klines_get_the_time_rules() -> None:
    """Misaligned, a close time that is not open + interval - 1, or more than one interval
    ahead of the exchange's clock: rejected with the validator's reason, never gap-filled."""
    now = [10**12 + 30 * 60_000]
    dec = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]), lambda: now[0])
    t = int(_kline()["data"]["k"]["t"])  # type: ignore[index]
    now[0] = t + 30_000
    assert dec.decode(orjson.dumps(_kline())).closed is not None
    cases = {
        "misaligned": _kline(t=t + 7, T=t + 7 + 59_999),
        "bad_close_time": _kline(T=t + 60_000),
        "future_kline": _kline(t=t + 2 * 60_000, T=t + 3 * 60_000 - 1),
    }
    for reason, frame in cases.items():
        with pytest.raises(DecodeError) as info:
            dec.decode(orjson.dumps(frame))
        assert info.value.reason == reason
    # one interval ahead (the exchange's clock a little ahead of ours) is still accepted
    assert dec.decode(orjson.dumps(_kline(t=t + 60_000, T=t + 2 * 60_000 - 1))).closed
