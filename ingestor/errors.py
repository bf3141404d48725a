"""Typed errors of the daemon, one small hierarchy::

IngestorError
 +-- ConfigError        bad config.toml / env override (exit code 2)
 +-- FeedError          websocket feed could not be kept up
 +-- ExchangeError      REST answer unusable (HTTP status, payload)
 |    +-- RateLimited   429 (retry after) / 418 (banned)
 +-- StoreError         database write or read failed
 +-- JournalError       the on-disk write-ahead journal failed or was misused
 +-- DecodeError        one frame could not become a candle (has a reason)
"""

__all__ = [
    "ConfigError",
    "DecodeError",
    "ExchangeError",
    "FeedError",
    "IngestorError",
    "JournalError",
    "RateLimited",
    "StoreError",
]


class IngestorError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(IngestorError):
    """The configuration is unusable; ``key`` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


class FeedError(IngestorError):
    """The websocket feed failed in a way reconnecting cannot fix."""


class ExchangeError(IngestorError):
    """A REST call to the exchange failed or returned something unusable; ``status``: the HTTP
    status when the exchange answered (``ingestor.retry`` classifies by it)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(ExchangeError):
    """HTTP 429/418 from the exchange; ``retry_after`` in seconds."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"rate limited: HTTP {status}, retry after {retry_after:.0f}s")
        self.status = status
        self.retry_after = retry_after


class StoreError(IngestorError):
    """The database refused or could not complete an operation."""


class JournalError(IngestorError):
    """The write-ahead journal failed (disk full, I/O error) or was asked to consume nothing."""


class DecodeError(IngestorError):
    """A frame could not be turned into a candle; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
