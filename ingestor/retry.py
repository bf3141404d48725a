"""One retry policy for the database and the exchange: classify a failure, then back off.

Every failure the daemon meets talking to MongoDB or Binance is one of

* **transient** (network, timeout, election, 429/418, 5xx, write-concern timeout): retried with
  :class:`Backoff` (exponential, full jitter, capped), the only backoff in the daemon;
* **permanent** (auth 13/18, validation 121, bad value 2, an HTTP 4xx other than 429/418, a
  TLS certificate that does not verify: an untrusted CA, another host's, expired): no
  retry storm. The caller reports it once (:class:`ingestor.failures.Failures`: one log line,
  readiness red with the reason, a metric) and re-checks at the slow :data:`RECHECK_S` cadence,
  so an operator's fix (a granted role, a corrected symbol) is picked up without a restart.

At startup a permanent failure is fatal: exit 1 with the reason (``Verdict.reason``).
"""

from __future__ import annotations

import asyncio
import enum
import random
import ssl
from dataclasses import dataclass

import aiohttp
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    OperationFailure,
    PyMongoError,
)
from websockets.exceptions import InvalidStatus, WebSocketException

from ingestor.errors import ExchangeError, RateLimited

__all__ = [
    "PERMANENT_DB_CODES",
    "RECHECK_S",
    "Backoff",
    "Kind",
    "Verdict",
    "classify",
    "http_verdict",
]

#: Seconds between re-checks while a permanent failure stands: slow enough to be no load,
#: quick enough that a fixed grant or config is noticed.
RECHECK_S = 30.0

#: MongoDB error codes no retry can fix (docs: reference/error-codes).
PERMANENT_DB_CODES: dict[int, str] = {
    2: "bad_value",
    13: "unauthorized",
    18: "authentication_failed",
    121: "document_validation_failure",
}


class Kind(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do about one failure: ``reason`` is a short stable code, ``detail`` the text."""

    kind: Kind
    reason: str
    detail: str

    @property
    def permanent(self) -> bool:
        return self.kind is Kind.PERMANENT

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def http_verdict(status: int, detail: str) -> Verdict:
    """An HTTP status: 4xx other than 429 (rate limit) and 418 (temporary ban) is permanent."""
    if 400 <= status < 500 and status not in (418, 429):
        return Verdict(Kind.PERMANENT, f"http_{status}", detail)
    return Verdict(Kind.TRANSIENT, f"http_{status}", detail)


def _db_code_verdict(code: int | None, detail: str) -> Verdict | None:
    if code is not None and code in PERMANENT_DB_CODES:
        return Verdict(Kind.PERMANENT, f"{PERMANENT_DB_CODES[code]} ({code})", detail)
    return None


def classify(exc: BaseException) -> Verdict:
    """The verdict on a failure from the database or the exchange (anything unknown is
    transient: retried, with backoff, and logged by the caller)."""
    detail = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, BulkWriteError):
        # A write error with a permanent code fails every retry the same way; write-concern
        # errors (wtimeout, a stepped-down primary) are transient.
        for err in exc.details.get("writeErrors", []):
            verdict = _db_code_verdict(err.get("code"), f"{detail} {err.get('errmsg', '')}")
            if verdict is not None:
                return verdict
        return Verdict(Kind.TRANSIENT, "bulk_write_error", detail)
    if isinstance(exc, OperationFailure):
        if not exc.has_error_label("RetryableWriteError"):
            verdict = _db_code_verdict(exc.code, detail)
            if verdict is not None:
                return verdict
        return Verdict(Kind.TRANSIENT, f"operation_failure ({exc.code})", detail)
    if isinstance(exc, ConfigurationError):
        return Verdict(Kind.PERMANENT, "mongodb_configuration", detail)
    if isinstance(exc, PyMongoError):
        timeout = bool(getattr(exc, "timeout", False))
        return Verdict(Kind.TRANSIENT, "timeout" if timeout else "database_unavailable", detail)
    if isinstance(exc, RateLimited):
        return Verdict(Kind.TRANSIENT, f"http_{exc.status}", detail)
    if isinstance(exc, ExchangeError):
        status = getattr(exc, "status", None)
        if status is not None:
            return http_verdict(status, detail)
        return Verdict(Kind.TRANSIENT, "exchange_error", detail)
    if isinstance(exc, InvalidStatus):
        return http_verdict(exc.response.status_code, detail)
    if isinstance(exc, ssl.SSLCertVerificationError):  # before OSError: no retry fixes it
        return Verdict(Kind.PERMANENT, "tls_certificate", detail)
    if isinstance(exc, WebSocketException | aiohttp.ClientError | OSError | TimeoutError):
        return Verdict(Kind.TRANSIENT, "network", detail)
    return Verdict(Kind.TRANSIENT, "unknown", detail)


class Backoff:
    """Exponential backoff with full jitter and a cap; ``reset`` after a success.

    The n-th delay is uniform in ``[0, min(cap, base * 2**n)]``: many clients failing at once
    (twenty feed connections, a fleet of daemons after an election) come back spread out.
    """

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** min(self.failures, 30)))

    async def wait(self) -> float:
        """Sleep the next delay; returns it."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.failures = 0
