"""Frames -> closed klines (sans-I/O: bytes in, values out).

One websocket frame is one of: a kline event (combined-stream wrapped or raw), a control answer
(``{"result": null, "id": 1}``), a ``serverShutdown`` event, or garbage. Only kline events with
``k.x == true`` become candles; every kline event, closed or not, updates the symbol's latest
price. Anything that cannot be trusted raises :class:`DecodeError` with a stable ``reason`` code,
and nothing else ever escapes :meth:`Decoder.decode` (an unforeseen failure is ``undecodable``):
the caller counts, logs and quarantines it, and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from ingestor.errors import DecodeError
from ingestor.streams import StreamRegistry

__all__ = ["REASONS", "ClosedKline", "Decoder", "Frame", "FrameKind", "check_rules"]

#: Stable reason codes of rejected frames (metrics labels, ``market_data_rejects.reason``).
REASONS: tuple[str, ...] = (
    "malformed_json",
    "not_an_object",
    "missing_field",
    "bad_type",
    "bad_decimal",
    "rule_violation",
    "unknown_stream",
    "stream_mismatch",
    "duplicate",
    "out_of_order",
    "undecodable",
)

_DEC_KEYS = ("o", "h", "l", "c", "v", "q", "V", "Q")
_INT_KEYS = ("t", "T", "n")


class FrameKind(Enum):
    KLINE = "kline"
    CONTROL = "control"  # SUBSCRIBE answers and the like
    SHUTDOWN = "server_shutdown"


@dataclass(frozen=True, slots=True)
class ClosedKline:
    """One closed kline exactly as the exchange sent it, as a REST-style row."""

    stream_id: int
    row: tuple[Any, ...]  # (t, o, h, l, c, v, T, q, n, V, Q)


@dataclass(frozen=True, slots=True)
class Frame:
    """What one frame said: its kind, the symbol's latest price, and a closed kline if any."""

    kind: FrameKind
    symbol: str = ""
    price: str = ""
    event_time: int = 0
    closed: ClosedKline | None = None
    stream_id: int = -1


def _is_decimal(s: object) -> bool:
    # ASCII only: str.isdigit() also accepts "²" (float() raises) and "٣" (float() accepts it,
    # the ASCII decimal columns downstream do not).
    if not isinstance(s, str) or not s or len(s) > 32 or not s.isascii():
        return False
    body = s[1:] if s[0] == "-" else s
    head, _, tail = body.partition(".")
    return (head.isdigit() or (head == "" and tail != "")) and (tail == "" or tail.isdigit())


def check_rules(o: float, h: float, low: float, c: float, volumes: tuple[float, ...]) -> str | None:
    """The schema's candle rules; returns what is broken, or None."""
    if h < low:
        return "high < low"
    if h < o or h < c:
        return "high < open/close"
    if low > o or low > c:
        return "low > open/close"
    if any(v < 0 for v in volumes):
        return "negative volume"
    return None


class Decoder:
    """Decodes frames of the configured streams; keeps nothing but the registry."""

    def __init__(self, registry: StreamRegistry) -> None:
        self._registry = registry

    def decode(self, raw: bytes | str) -> Frame:
        """The frame, or :class:`DecodeError`: whatever the bytes, never another exception."""
        try:
            return self._decode(raw)
        except DecodeError:
            raise
        except Exception as exc:  # a hostile frame must not end the feed: reject it
            raise DecodeError("undecodable", f"{type(exc).__name__}: {exc}") from None

    def _decode(self, raw: bytes | str) -> Frame:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("malformed_json", str(exc)) from None
        if not isinstance(msg, dict):
            raise DecodeError("not_an_object", type(msg).__name__)
        stream_name = msg.get("stream")
        data = msg.get("data", msg) if stream_name is not None else msg
        if not isinstance(data, dict):
            raise DecodeError("bad_type", "data is not an object")
        if "event" in data and isinstance(data["event"], dict):
            data = data["event"]
        etype = data.get("e")
        if etype == "serverShutdown":
            return Frame(FrameKind.SHUTDOWN, event_time=_int_or_zero(data.get("E")))
        if etype is None and ("result" in data or "id" in data or "error" in data):
            return Frame(FrameKind.CONTROL)
        if etype != "kline":
            raise DecodeError("bad_type", f"unexpected event type {etype!r}")
        return self._kline(data, stream_name)

    def _kline(self, data: dict[str, Any], stream_name: object) -> Frame:
        k = data.get("k")
        if not isinstance(k, dict):
            raise DecodeError("missing_field", "k")
        symbol, interval = k.get("s", data.get("s")), k.get("i")
        if not isinstance(symbol, str) or not isinstance(interval, str):
            raise DecodeError("missing_field", "k.s/k.i")
        sid = self._registry.id_of_pair(symbol, interval)
        if sid is None:
            raise DecodeError("unknown_stream", f"{symbol} {interval}")
        if stream_name is not None and stream_name != f"{symbol.lower()}@kline_{interval}":
            raise DecodeError("stream_mismatch", f"{stream_name} carries {symbol} {interval}")
        for key in (*_DEC_KEYS, *_INT_KEYS, "x"):
            if key not in k:
                raise DecodeError("missing_field", f"k.{key}")
        for key in _INT_KEYS:
            if type(k[key]) is not int:
                raise DecodeError("bad_type", f"k.{key} is {type(k[key]).__name__}")
        if type(k["x"]) is not bool:
            raise DecodeError("bad_type", "k.x is not a boolean")
        for key in _DEC_KEYS:
            if not _is_decimal(k[key]):
                raise DecodeError("bad_decimal", f"k.{key}={k[key]!r}")
        o, h, low, c = float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"])
        broken = check_rules(
            o, h, low, c, (float(k["v"]), float(k["q"]), float(k["V"]), float(k["Q"]))
        )
        if broken:
            raise DecodeError("rule_violation", broken)
        closed = None
        if k["x"]:
            row = (
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
            closed = ClosedKline(sid, row)
        return Frame(
            FrameKind.KLINE,
            symbol=symbol,
            price=k["c"],
            event_time=_int_or_zero(data.get("E")),
            closed=closed,
            stream_id=sid,
        )


def _int_or_zero(v: object) -> int:
    return v if type(v) is int else 0
