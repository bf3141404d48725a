"""Logging setup: one line per record on stderr; credentials in URIs never printed."""

from __future__ import annotations

import logging
import re

__all__ = ["redact", "setup_logging"]

_CRED = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")


def redact(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` in ``text``."""
    return _CRED.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
