"""How long the exchange may make us wait: ``Retry-After`` parsed and bounded.

The header is either delay-seconds or an HTTP-date (RFC 9110 10.2.3). Whatever it says, the
wait is within ``[0, MAX_WAIT_S]``: a hostile or broken answer (``inf``, ``1e12``, a date in
the year 9999) must not stall the daemon forever while ``/healthz`` stays green, and an
unparsable one (garbage, ``nan``, a negative number) waits ``default_s``, as if the header
were missing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["DEFAULT_WAIT_S", "MAX_WAIT_S", "retry_after_s"]

#: The longest wait the exchange can impose on us; Binance's own bans are minutes long.
MAX_WAIT_S = 600.0
#: The wait when the exchange asks for one but its ``Retry-After`` is missing or unparsable.
DEFAULT_WAIT_S = 60.0


def retry_after_s(
    value: str | None,
    *,
    default_s: float = DEFAULT_WAIT_S,
    max_s: float = MAX_WAIT_S,
    now: datetime | None = None,
) -> float:
    """Seconds to wait for a ``Retry-After`` header ``value``, clamped to ``[0, max_s]``."""
    wait = _parse(value, now)
    if wait is None:
        wait = default_s
    return min(max(wait, 0.0), max_s)


def _parse(value: str | None, now: datetime | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if not text or not text.isascii():
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()
