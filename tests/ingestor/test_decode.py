"""The decoder on real recorded Binance frames and on every kind of bad frame."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from ingestor.decode import Decoder, FrameKind
from ingestor.errors import DecodeError
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
