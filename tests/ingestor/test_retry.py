"""One classification of database and exchange failures, one backoff (units: no peer needed)."""

from __future__ import annotations

import logging
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from ingestor.errors import ExchangeError, RateLimited
from ingestor.failures import Failures
from ingestor.retry import PERMANENT_DB_CODES, Backoff, Kind, classify


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (OperationFailure("not authorized", 13), Kind.PERMANENT, "unauthorized (13)"),
        (OperationFailure("auth failed", 18), Kind.PERMANENT, "authentication_failed (18)"),
        (OperationFailure("bad", 2), Kind.PERMANENT, "bad_value (2)"),
        (OperationFailure("invalid", 121), Kind.PERMANENT, "document_validation_failure (121)"),
        (OperationFailure("not primary", 10107), Kind.TRANSIENT, "operation_failure (10107)"),
        (
            OperationFailure("retry me", 2, {"errorLabels": ["RetryableWriteError"]}),
            Kind.TRANSIENT,
            "operation_failure (2)",
        ),
        (
            BulkWriteError({"writeErrors": [{"index": 0, "code": 121, "errmsg": "schema"}]}),
            Kind.PERMANENT,
            "document_validation_failure (121)",
        ),
        (
            BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}),
            Kind.TRANSIENT,
            "bulk_write_error",
        ),
        (WTimeoutError("wtimeout", 64), Kind.TRANSIENT, "operation_failure (64)"),
        (ExecutionTimeout("maxTimeMS", 50), Kind.TRANSIENT, "operation_failure (50)"),
        (NetworkTimeout("socket timed out"), Kind.TRANSIENT, "timeout"),
        (ServerSelectionTimeoutError("no primary"), Kind.TRANSIENT, "timeout"),
        (AutoReconnect("connection reset"), Kind.TRANSIENT, "database_unavailable"),
        (ConfigurationError("bad uri option"), Kind.PERMANENT, "mongodb_configuration"),
        (ExchangeError("HTTP 400", status=400), Kind.PERMANENT, "http_400"),
        (ExchangeError("HTTP 403", status=403), Kind.PERMANENT, "http_403"),
        (ExchangeError("HTTP 404", status=404), Kind.PERMANENT, "http_404"),
        (ExchangeError("HTTP 503", status=503), Kind.TRANSIENT, "http_503"),
        (ExchangeError("not a list"), Kind.TRANSIENT, "exchange_error"),
        (RateLimited(429, 1.0), Kind.TRANSIENT, "http_429"),
        (RateLimited(418, 60.0), Kind.TRANSIENT, "http_418"),
        (ConnectionRefusedError("refused"), Kind.TRANSIENT, "network"),
        (TimeoutError(), Kind.TRANSIENT, "network"),
        (
            ssl.SSLCertVerificationError("certificate verify failed"),
            Kind.PERMANENT,
            "tls_certificate",
        ),
        (ssl.SSLError("record layer failure"), Kind.TRANSIENT, "network"),
    ],
)
def test_classify(exc: BaseException, kind: Kind, reason: str) -> None:
    verdict = classify(exc)
    assert (verdict.kind, verdict.reason) == (kind, reason)
    assert type(exc).__name__ in verdict.detail


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, Kind.PERMANENT),
        (451, Kind.PERMANENT),
        (429, Kind.TRANSIENT),
        (418, Kind.TRANSIENT),
        (502, Kind.TRANSIENT),
    ],
)
def test_a_refused_websocket_handshake_is_classified_by_its_status(status: int, kind: Kind) -> None:
    exc = InvalidStatus(Response(status, "refused", Headers()))
    assert classify(exc).kind is kind and classify(exc).reason == f"http_{status}"


@given(code=st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_any_database_code_gets_a_verdict(code: int) -> None:
    verdict = classify(OperationFailure("x", code))
    assert verdict.permanent == (code in PERMANENT_DB_CODES)


@given(status=st.integers(min_value=100, max_value=599))
def test_any_http_status_gets_a_verdict(status: int) -> None:
    verdict = classify(ExchangeError("x", status=status))
    assert verdict.permanent == (400 <= status < 500 and status not in (418, 429))


def test_backoff_is_jittered_capped_and_resets() -> None:
    b = Backoff(base_s=0.1, cap_s=2.0)
    delays = [b.next_delay() for _ in range(200)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert max(delays[:1]) <= 0.2  # the first ceiling is base * 2
    assert len(set(delays)) > 100  # jittered, not a fixed sequence
    assert b.failures == 200
    b.reset()
    assert b.failures == 0 and b.next_delay() <= 0.2


def test_failures_log_once_per_reason_and_count_every_report(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = Failures()
    verdict = classify(OperationFailure("not authorized on db to execute insert", 13))
    with caplog.at_level(logging.INFO, logger="ingestor.failures"):
        assert f.report("database", verdict) is True
        assert f.report("database", verdict) is False
        assert f.report("database", verdict) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "unauthorized (13)" in errors[0].getMessage()
    assert f and f.reasons() == {"database": str(verdict)}
    assert f.counts[("database", "unauthorized (13)")] == 3
    with caplog.at_level(logging.INFO, logger="ingestor.failures"):
        f.clear("database")
    assert not f and f.reasons() == {}
    assert any("recovered" in r.getMessage() for r in caplog.records)
