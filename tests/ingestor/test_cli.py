"""The command line's one exit-code mapping and its runner (real event loop, real signals)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from ingestor.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    execute,
    exit_code,
    loop_factory,
)
from ingestor.errors import ConfigError, FeedError, RateLimited
from tests.conftest import REPO, TIMEOUT_FACTOR


@pytest.mark.parametrize(
    ("exc", "code", "reason"),
    [
        (ConfigError("ingest.symbols", "FOO is not listed"), EXIT_USAGE, "bad configuration"),
        (RateLimited(418, 120), EXIT_FAILED, "banned this IP (HTTP 418) for 120s"),
        (RateLimited(429, 1), EXIT_FAILED, "failed: RateLimited"),
        (FeedError("gone"), EXIT_FAILED, "failed: FeedError: gone"),
        (ServerSelectionTimeoutError("no server"), EXIT_FAILED, "failed: database:"),
        (ConnectionRefusedError(111, "refused"), EXIT_FAILED, "failed: ConnectionRefusedError"),
        (ZeroDivisionError("boom"), EXIT_FAILED, "crashed: ZeroDivisionError: boom"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
        (asyncio.CancelledError(), EXIT_INTERRUPTED, "interrupted"),
    ],
)
def test_every_ending_has_one_exit_code(exc: BaseException, code: int, reason: str) -> None:
    got, reasons = exit_code(exc)
    assert got == code
    assert len(reasons) == 1 and reason in reasons[0]


def test_a_group_maps_to_its_gravest_member() -> None:
    crash, bad = ZeroDivisionError("x"), ConfigError("k", "v")
    code, reasons = exit_code(ExceptionGroup("g", [crash, ExceptionGroup("h", [bad])]))
    assert code == EXIT_USAGE and len(reasons) == 2
    assert exit_code(BaseExceptionGroup("g", [KeyboardInterrupt(), crash]))[0] == EXIT_FAILED
    assert exit_code(BaseExceptionGroup("g", [KeyboardInterrupt()]))[0] == EXIT_INTERRUPTED


def test_one_event_loop_choice() -> None:
    import uvloop

    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("graceful", [True, False])
def test_a_signal_stops_or_interrupts(graceful: bool, root_logging: None) -> None:
    async def main(stop: asyncio.Event) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the loop's handler
        await stop.wait()  # a graceful command winds down; otherwise it is cancelled here
        return EXIT_OK

    code = execute(Command("test", main, "asyncio", graceful=graceful))
    assert code == (EXIT_OK if graceful else EXIT_INTERRUPTED)


def test_errors_are_logged_once_with_the_command(
    caplog: pytest.LogCaptureFixture, root_logging: None
) -> None:
    async def main(stop: asyncio.Event) -> int:
        raise ExceptionGroup("tasks", [FeedError("gone"), ZeroDivisionError("boom")])

    with caplog.at_level(logging.ERROR, logger="ingestor"):
        assert execute(Command("test", main)) == EXIT_FAILED
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["test: failed: FeedError: gone", "test: crashed: ZeroDivisionError: boom"]
    assert caplog.records[1].exc_info is not None  # a crash keeps its traceback


def test_the_help_names_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ingestor", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30 * TIMEOUT_FACTOR,
        check=True,
    ).stdout
    for sub in ("run", "backfill", "gaps", "schema", "simulate"):
        assert sub in out


def test_a_bad_replay_is_a_bad_argument() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ingestor", "simulate", "--replay", "BTCUSDT:7m=/nowhere.csv"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30 * TIMEOUT_FACTOR,
    )
    assert done.returncode == EXIT_USAGE
    assert "ingestor simulate: bad configuration" in done.stderr and "--replay" in done.stderr
