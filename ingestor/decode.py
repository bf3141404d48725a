"""Frames -> closed klines (sans-I/O: bytes in, values out).

One websocket frame is one of: a kline event (combined-stream wrapped or raw), a control answer
(``{"result": null, "id": 1}``), a ``serverShutdown`` event, or garbage. Only kline events with
``k.x == true`` become candles; every kline event, closed or not, updates the symbol's latest
price. The envelope (wrapping, control frames) is :mod:`ingestor.feed.envelope`'s, a kline's
rules :mod:`ingestor.validate`'s. Anything that cannot be trusted raises :class:`DecodeError`
with a :class:`ingestor.reasons.Reason`, and nothing else ever escapes :meth:`Decoder.decode`
(an unforeseen failure is ``undecodable``): the caller counts, logs and quarantines it, and
carries on.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

from ingestor import validate
from ingestor.errors import DecodeError
from ingestor.feed.envelope import Control, never_raises, open_frame
from ingestor.reasons import Reason
from ingestor.streams import StreamRegistry

__all__ = ["ClosedKline", "Decoder", "Frame", "FrameKind"]

_DEC_KEYS = ("o", "h", "l", "c", "v", "q", "V", "Q")
_INT_KEYS = ("t", "T", "n")
_REQUIRED_ORDER = (*_DEC_KEYS, *_INT_KEYS, "x")  # the first missing one is named
#: A kline payload's values as a REST-style row: (t, o, h, l, c, v, T, q, n, V, Q).
_ROW_OF = operator.itemgetter("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")


class FrameKind(Enum):
    KLINE = "kline"
    CONTROL = "control"  # SUBSCRIBE answers and the like
    SHUTDOWN = "server_shutdown"


@dataclass(frozen=True, slots=True)
class ClosedKline:
    """One closed kline exactly as the exchange sent it, as a REST-style row."""

    stream_id: int
    row: tuple[Any, ...]  # (t, o, h, l, c, v, T, q, n, V, Q)


class Frame(NamedTuple):
    """What one frame said: its kind, the symbol's latest price, and a closed kline if any (a
    tuple: made for every frame, at half a frozen dataclass's cost)."""

    kind: FrameKind
    symbol: str = ""
    price: str = ""
    event_time: int = 0
    closed: ClosedKline | None = None
    stream_id: int = -1


class Decoder:
    """Decodes frames of the configured streams; keeps nothing but the registry.

    ``clock`` (the exchange's now, ms) rejects klines opening more than one interval ahead of
    it; without one, open times are not compared with the time.
    """

    def __init__(self, registry: StreamRegistry, clock: Callable[[], int] | None = None) -> None:
        self._registry = registry
        self._clock = clock

    @never_raises
    def decode(self, raw: bytes | str) -> Frame:
        """The frame, or :class:`DecodeError`: whatever the bytes, never another exception."""
        control, stream_name, data = open_frame(raw, "kline")
        if control is Control.SHUTDOWN:
            return Frame(FrameKind.SHUTDOWN, event_time=_int_or_zero(data.get("E")))
        if control is Control.REPLY:
            return Frame(FrameKind.CONTROL)
        return self._kline(data, stream_name)

    def _kline(self, data: dict[str, Any], stream_name: object) -> Frame:
        k = data.get("k")
        if not isinstance(k, dict):
            raise DecodeError(Reason.MISSING_FIELD, "k")
        symbol, interval = k.get("s", data.get("s")), k.get("i")
        if not isinstance(symbol, str) or not isinstance(interval, str):
            raise DecodeError(Reason.MISSING_FIELD, "k.s/k.i")
        stream = self._registry.stream_of(symbol, interval)
        if stream is None:
            raise DecodeError(Reason.UNKNOWN_STREAM, f"{symbol} {interval}")
        sid, name, iv = stream
        if stream_name is not None and stream_name != name:
            raise DecodeError(Reason.STREAM_MISMATCH, f"{stream_name} carries {symbol} {interval}")
        try:
            row, closed = _ROW_OF(k), k["x"]
        except KeyError:
            missing = next(key for key in _REQUIRED_ORDER if key not in k)
            raise DecodeError(Reason.MISSING_FIELD, f"k.{missing}") from None
        if type(closed) is not bool:
            raise DecodeError(Reason.BAD_TYPE, "k.x is not a boolean")
        now = self._clock() if self._clock is not None else (1 << 62)
        bad = validate.check_row(row, validate.Window.live(iv, now))
        if bad is not None:
            raise DecodeError(bad.reason, bad.detail)
        return Frame(
            FrameKind.KLINE,
            symbol,
            row[4],
            _int_or_zero(data.get("E")),
            ClosedKline(sid, row) if closed else None,
            sid,
        )


def _int_or_zero(v: object) -> int:
    return v if type(v) is int else 0
