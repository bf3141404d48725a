"""A websocket frame's envelope, shared by the kline and the mark-price decoders (sans-I/O).

Binance sends an event raw (``{"e": ...}``) or, on a combined stream, wrapped as ``{"stream":
name, "data": event}``; a websocket API event may be wrapped once more as ``{"event": ...}``.
Besides events, a frame is the answer to a request (``{"result": null, "id": 1}``, or an
``error``) or a ``serverShutdown`` event (the server is going away: reconnect now).
:func:`open_frame` peels that off and hands the event of the expected type to its decoder;
:func:`never_raises` makes a decoder's only exception :class:`DecodeError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any

import orjson

from ingestor.errors import DecodeError
from ingestor.reasons import Reason

__all__ = ["Control", "never_raises", "open_frame"]


class Control(Enum):
    """A frame that carries no event."""

    REPLY = "reply"  # answer to a SUBSCRIBE/LIST request
    SHUTDOWN = "serverShutdown"  # the server is going away: reconnect now


def open_frame(raw: bytes | str, event_type: str) -> tuple[Control | None, object, dict[str, Any]]:
    """``(control, stream, event)``: ``control`` None and ``event`` of ``event_type`` (with the
    envelope's ``stream`` name, None when sent raw), or a control frame (``event``: its body).
    Anything else raises :class:`DecodeError`."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(Reason.MALFORMED_JSON, str(exc)) from None
    if not isinstance(msg, dict):
        raise DecodeError(Reason.NOT_AN_OBJECT, type(msg).__name__)
    stream = msg.get("stream")
    data = msg.get("data", msg) if stream is not None else msg
    if not isinstance(data, dict):
        raise DecodeError(Reason.BAD_TYPE, "data is not an object")
    if "event" in data and isinstance(data["event"], dict):
        data = data["event"]
    etype = data.get("e")
    if etype == event_type:
        return None, stream, data
    if etype == "serverShutdown":
        return Control.SHUTDOWN, stream, data
    if etype is None and ("result" in data or "id" in data or "error" in data):
        return Control.REPLY, stream, data
    raise DecodeError(Reason.BAD_TYPE, f"unexpected event type {etype!r}")


def never_raises[**P, R](decode: Callable[P, R]) -> Callable[P, R]:
    """``decode`` whose only exception is :class:`DecodeError`: an unforeseen failure on a
    hostile frame is rejected as ``undecodable`` instead of ending the connection."""

    @functools.wraps(decode)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return decode(*args, **kwargs)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}") from None

    return guarded
