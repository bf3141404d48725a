"""Logging setup: one JSON object per line on stdout (or plain text for humans).

A JSON line has ``ts`` (UTC, ms), ``level``, ``logger``, ``message`` and every field passed with
``extra=`` (``log.warning("gap", extra={"stream": "BTCUSDT:1m"})`` adds ``"stream"``); a record
with an exception adds ``error`` (``type``, ``message``, ``traceback``). Credentials in URIs are
redacted (``ingestor.redact``) in every string that reaches the output, message, fields and
tracebacks alike; values are redacted one by one before encoding, so a redaction can never break
the JSON. The text format escapes control characters in messages and fields (a sample of
exchange input cannot forge a log line); only a traceback spans lines.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from ingestor.redact import redact

__all__ = ["JsonFormatter", "TextFormatter", "redact", "setup_logging"]

#: Line breaks, escapes and other controls (C0, DEL, C1, Unicode line/paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


def _escape(text: str) -> str:
    """``text`` on one line: each control character as its Python escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


def _clean(value: Any) -> Any:
    """A JSON-safe, redacted copy of an ``extra=`` value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return redact(str(value))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: _clean(v) for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, no newlines inside (tracebacks are a string field)."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        out.update((k, v) for k, v in _fields(record).items() if k not in out)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = {
                "type": type(exc).__name__,
                "message": redact(str(exc)),
                "traceback": redact("".join(traceback.format_exception(exc))),
            }
        elif record.exc_text:
            out["error"] = {"traceback": redact(record.exc_text)}
        if record.stack_info:
            out["stack"] = redact(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [key=value ...]`` for a terminal, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        fields = _fields(record)
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return _escape(redact(text))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))  # the traceback too


def setup_logging(level: str, fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every logger to one handler on ``stream`` (stdout) at ``level``, ``json`` or ``text``.

    Replaces the root handlers, so calling it again (tests, a second ``main``) does not duplicate
    lines.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format must be json or text, got {fmt!r}")
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
