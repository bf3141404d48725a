"""The envelope has one reading: the kline and the mark-price decoders agree on every frame
that is not their own event (control frames, wrapping, garbage)."""

from __future__ import annotations

import pytest

from ingestor.decode import Decoder, FrameKind
from ingestor.errors import DecodeError
from ingestor.feed.envelope import Control, open_frame
from ingestor.feed.markprice import decode_mark_price
from ingestor.reasons import Reason
from ingestor.streams import StreamRegistry

KLINES = Decoder(StreamRegistry(["BTCUSDT"], ["1m"]))
_KINDS = {FrameKind.CONTROL: Control.REPLY, FrameKind.SHUTDOWN: Control.SHUTDOWN}


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b'{"result": null, "id": 1}', Control.REPLY),
        (b'{"id": 2, "error": {"code": 2, "msg": "Invalid request"}}', Control.REPLY),
        (b'{"e": "serverShutdown", "E": 5}', Control.SHUTDOWN),
        (b'{"event": {"e": "serverShutdown", "E": 5}}', Control.SHUTDOWN),
        (b'{"stream": "x", "data": {"e": "serverShutdown", "E": 5}}', Control.SHUTDOWN),
        (b'{"stream": null, "data": {"result": null, "id": 1}}', Reason.BAD_TYPE),
        (b'{"stream": "x", "data": [1]}', Reason.BAD_TYPE),
        (b'{"e": "trade"}', Reason.BAD_TYPE),
        (b"[1]", Reason.NOT_AN_OBJECT),
        (b"{", Reason.MALFORMED_JSON),
        (b"\xff", Reason.MALFORMED_JSON),
    ],
)
def test_both_decoders_read_the_envelope_alike(raw: bytes, want: Control | Reason) -> None:
    got: list[Control | str] = []
    try:
        got.append(_KINDS[KLINES.decode(raw).kind])
    except DecodeError as exc:
        got.append(exc.reason)
    try:
        mark = decode_mark_price(raw)
        assert isinstance(mark, Control)
        got.append(mark)
    except DecodeError as exc:
        got.append(exc.reason)
    assert got == [want, want]


def test_an_event_of_the_asked_type_comes_with_its_stream() -> None:
    control, stream, event = open_frame(b'{"stream": "s", "data": {"e": "kline", "k": 1}}', "kline")
    assert control is None and stream == "s" and event == {"e": "kline", "k": 1}
    control, stream, event = open_frame(b'{"e": "kline"}', "kline")
    assert control is None and stream is None and event == {"e": "kline"}
