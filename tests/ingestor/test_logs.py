"""Logs: one JSON object per line, fields from ``extra=``, credentials redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ingestor.logs import redact, setup_logging
from tests.conftest import REPO, TIMEOUT_FACTOR

URI = "mongodb://ingest:s3cr3t-Pa55@db1:27017,db2:27017/bot?replicaSet=rs0"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_redact() -> None:
    assert redact(URI) == "mongodb://ingest:***@db1:27017,db2:27017/bot?replicaSet=rs0"
    assert redact("mongodb+srv://u:p@x.net/") == "mongodb+srv://u:***@x.net/"
    assert redact("http://host:8080/path and a@b") == "http://host:8080/path and a@b"


def test_json_lines_with_fields_errors_and_redaction(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    log = logging.getLogger("ingestor.test")
    log.debug("not shown at INFO")
    log.info("connecting to %s", URI, extra={"stream": "BTCUSDT:1m", "symbol": "BTCUSDT"})
    try:
        raise ConnectionError(f"cannot reach {URI}\nsecond line")
    except ConnectionError:
        log.exception("insert failed", extra={"batch": 12, "uris": [URI], "detail": {"u": URI}})
    log.warning('quotes " and \\ and\nnewlines stay inside one line')
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = _lines(buf)
    assert first["level"] == "INFO" and first["logger"] == "ingestor.test"
    assert first["message"] == f"connecting to {redact(URI)}"
    assert first["stream"] == "BTCUSDT:1m" and first["symbol"] == "BTCUSDT"
    assert isinstance(first["ts"], str) and first["ts"].endswith("Z") and "T" in first["ts"]
    assert second["level"] == "ERROR" and second["batch"] == 12
    error = second["error"]
    assert isinstance(error, dict) and error["type"] == "ConnectionError"
    assert "Traceback" in error["traceback"] and "raise ConnectionError" in error["traceback"]
    assert second["uris"] == [redact(URI)] and second["detail"] == {"u": redact(URI)}
    assert third["message"] == 'quotes " and \\ and\nnewlines stay inside one line'
    assert "s3cr3t" not in buf.getvalue()


def test_text_format_for_humans(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("DEBUG", "text", stream=buf)
    logging.getLogger("ingestor.x").debug("uri %s", URI, extra={"stream": "ETHUSDT:5m"})
    out = buf.getvalue()
    assert "DEBUG ingestor.x: uri mongodb://ingest:***@db1" in out
    assert "[stream=ETHUSDT:5m]" in out and "s3cr3t" not in out
    with pytest.raises(ValueError):
        setup_logging("INFO", "xml")


def test_setting_up_twice_does_not_duplicate_lines(restore_root: None) -> None:
    buf = io.StringIO()
    setup_logging("INFO", stream=buf)
    setup_logging("INFO", stream=buf)
    logging.getLogger("ingestor").info("once")
    assert len(buf.getvalue().splitlines()) == 1


def test_a_process_logs_json_lines_on_stdout() -> None:
    code = (
        "import logging; from ingestor.logs import setup_logging; setup_logging('INFO'); "
        f"logging.getLogger('ingestor').warning('db %s down', {URI!r}, extra={{'stream': 'X:1m'}})"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        check=True,
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert out.stderr == ""
    (line,) = out.stdout.splitlines()
    rec = json.loads(line)
    assert rec["level"] == "WARNING" and rec["stream"] == "X:1m"
    assert rec["message"] == f"db {redact(URI)} down"


SECRET_URIS = [
    "MONGODB://u:hunter2@db/x",
    "mongodb://:hunter2@db/x",
    "mongodb://u:hun/ter2@db/x",
    "mongodb://db/?tlsCertificateKeyFilePassword=hunter2",
    "mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:hunter2",
]


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("uri", SECRET_URIS)
def test_secrets_in_uris_never_reach_the_output(restore_root: None, fmt: str, uri: str) -> None:
    buf = io.StringIO()
    setup_logging("INFO", fmt, stream=buf)
    log = logging.getLogger("ingestor.x")
    log.info("db %s", uri, extra={"uri": uri})
    try:
        raise ConnectionError(f"cannot reach {uri}")
    except ConnectionError:
        log.exception("failed")
    assert "hunter2" not in buf.getvalue() and "ter2" not in buf.getvalue()


def test_text_logs_escape_control_characters(restore_root: None) -> None:
    """A frame's bytes in a log sample cannot forge a line of their own."""
    buf = io.StringIO()
    setup_logging("INFO", "text", stream=buf)
    forged = "x\n2026-01-01 00:00:00,000 ERROR ingestor.service: forged\r\x1b[2Jz\u2028w"
    logging.getLogger("ingestor.rejects").warning("sample: %s", forged, extra={"raw": forged})
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "\\n2026-01-01" in lines[0] and "\\r\\x1b[2Jz\\u2028w" in lines[0]
    assert "\x1b" not in buf.getvalue()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("ingestor.x").exception("with a traceback")
    assert "Traceback (most recent call last):\n" in buf.getvalue()  # tracebacks stay readable
