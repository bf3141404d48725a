"""``ingestor backfill`` and ``ingestor gaps``: parse, load the config, run a job, report.

Exit codes: 0 done, 1 failed (reason on stderr), 2 bad arguments or configuration,
130 interrupted (SIGINT/SIGTERM; what was stored stays, a rerun resumes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pymongo.errors import PyMongoError

from ingestor.backfill.job import BackfillOptions, find_gaps, run_job, stream_keys
from ingestor.backfill.progress import make_progress
from ingestor.backfill.run import Summary
from ingestor.config import Config, load_config
from ingestor.errors import ConfigError, IngestorError, RateLimited
from ingestor.logs import setup_logging
from ingestor.redact import redact
from ingestor.store.database import open_database
from ingestor.streams import TIMEFRAME_MS

__all__ = [
    "add_backfill_arguments",
    "add_gaps_arguments",
    "parse_time",
    "run_backfill",
    "run_gaps",
]

log = logging.getLogger("ingestor.backfill")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

T = TypeVar("T")


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """``2025-08-01`` (UTC midnight; with ``end_of_day`` the next midnight, so an ``--until``
    date covers its day) or ISO 8601 ``2025-08-01T12:30:00Z`` (naive = UTC) -> epoch ms."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=UTC)
            if end_of_day:
                dt += timedelta(days=1)
        else:
            dt = datetime.fromisoformat(text)
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2025-08-01) or ISO 8601 UTC time (2025-08-01T12:30:00Z)"
        ) from None
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))


def _since(text: str) -> int:
    return parse_time(text)


def _until(text: str) -> int:
    return parse_time(text, end_of_day=True)


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="config.toml (default: built-in)")
    parser.add_argument(
        "--symbols", nargs="+", type=_names, default=None, metavar="SYMBOL",
        help="symbols (space or comma separated; default: the config's ingest.symbols)",
    )  # fmt: skip
    parser.add_argument(
        "--timeframes", nargs="+", type=_names, default=None, metavar="TF",
        help=f"timeframes ({', '.join(TIMEFRAME_MS)}; default: the config's ingest.timeframes)",
    )  # fmt: skip
    parser.add_argument(
        "--until", type=_until, default=None,
        help="end, exclusive: a date (that whole day included) or an ISO 8601 UTC time; "
        "default and at most: the last closed kline",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_backfill_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ingestor backfill``."""
    _common(parser)
    parser.add_argument(
        "--since", type=_since, required=True,
        help="start: a date (UTC midnight) or ISO 8601 UTC time, e.g. 2025-08-01T12:30:00Z",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="print what is missing; fetch and write nothing"
    )


def add_gaps_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ingestor gaps``."""
    _common(parser)
    parser.add_argument(
        "--since", type=_since, default=None,
        help="start (default: each stream's first stored kline)",
    )  # fmt: skip


def _selection(args: argparse.Namespace, config: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The --symbols/--timeframes lists, validated; ConfigError names the bad argument."""
    symbols = tuple(s.upper() for group in (args.symbols or []) for s in group)
    timeframes = tuple(t for group in (args.timeframes or []) for t in group)
    if bad := [t for t in timeframes if t not in TIMEFRAME_MS]:
        raise ConfigError("--timeframes", f"unknown {bad[0]!r}; known: {', '.join(TIMEFRAME_MS)}")
    if bad := [s for s in symbols if not (s.isalnum() and 2 <= len(s) <= 20)]:
        raise ConfigError("--symbols", f"{bad[0]!r} is not a symbol")
    return tuple(dict.fromkeys(symbols)), tuple(dict.fromkeys(timeframes))


_Selection = tuple[Config, tuple[str, ...], tuple[str, ...]]


def _prepare(args: argparse.Namespace, command: str) -> _Selection | int:
    """The config and the validated stream selection, or the exit code of bad ones."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(redact(f"ingestor: bad configuration: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.service.log_level, config.service.log_format, stream=sys.stderr)
    try:
        symbols, timeframes = _selection(args, config)
    except ConfigError as exc:
        print(redact(f"ingestor {command}: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    return config, symbols, timeframes


def _execute[T](
    command: str, config: Config, coro: Coroutine[Any, Any, T], on_interrupt: Callable[[], None]
) -> T | int:
    """Run the job: its result, or the exit code it ended with (interrupted, failed)."""
    try:
        return _run(config, coro)
    except (KeyboardInterrupt, asyncio.CancelledError):
        on_interrupt()
        return EXIT_INTERRUPTED
    except BaseException as exc:
        code, reason = _failure(exc)
        print(redact(f"ingestor {command}: failed: {reason}"), file=sys.stderr)
        return code


def _run[T](config: Config, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; SIGINT/SIGTERM cancel it (CancelledError reaches the caller)."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await coro

    factory = None
    if config.service.event_loop == "uvloop":
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover - uvloop is a runtime dependency
            factory = None
    return asyncio.run(main(), loop_factory=factory)


def _failure(exc: BaseException) -> tuple[int, str]:
    """Exit code and reason for an error that ended a job."""
    if isinstance(exc, BaseExceptionGroup):
        first = exc.exceptions[0]
        return _failure(first)
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"bad arguments: {exc}"
    if isinstance(exc, RateLimited) and exc.status == 418:
        return EXIT_FAILED, (
            f"the exchange banned this IP (HTTP 418) for {exc.retry_after:.0f}s: stopped; "
            "run again after the ban to resume"
        )
    if isinstance(exc, IngestorError):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PyMongoError):
        return EXIT_FAILED, f"database: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return EXIT_FAILED, f"{type(exc).__name__}: {exc}"
    raise exc


def _print_summary(s: Summary, as_json: bool) -> None:
    if s.expired_skipped:
        print(
            f"ingestor backfill: --since is before the retention; market_data keeps candles "
            f"from {s.retention_start} on: filling from there, {s.expired_skipped:,} older "
            "klines skipped",
            file=sys.stderr,
        )
    if as_json:
        print(json.dumps(s.as_dict(), indent=2))
        return
    if s.dry_run:
        for st in s.per_stream:
            ranges = st["ranges"]
            assert isinstance(ranges, list)
            head = ", ".join(f"{a}..{b} ({n})" for a, b, n in ranges[:5])
            more = f" and {len(ranges) - 5} more ranges" if len(ranges) > 5 else ""
            print(
                f"{st['stream']:<16} missing {st['missing']:>9,} of {st['expected']:>9,}"
                + (f": {head}{more}" if ranges else "")
            )
        print(f"dry run: {s.missing:,} of {s.expected:,} klines missing over {s.streams} streams")
        return
    print(
        f"backfill: {s.streams} streams, {s.fetched:,} klines fetched "
        f"(+{s.warmup_fetched:,} warm-up), {s.inserted:,} inserted, "
        f"{s.skipped_present:,} skipped as present, {s.expired_skipped:,} skipped as past "
        f"the retention, {s.rejected:,} rejected, "
        f"{s.unavailable:,} not available; {s.requests:,} requests, weight {s.weight_used:,} "
        f"(max {s.max_used_weight_1m:,}/min, budget {s.weight_budget:,}); {s.duration_s:.1f}s"
    )


def run_backfill(args: argparse.Namespace) -> int:
    """``ingestor backfill``: fill ``market_data`` with what is missing; the exit code."""
    prepared = _prepare(args, "backfill")
    if isinstance(prepared, int):
        return prepared
    config, symbols, timeframes = prepared
    if args.until is not None and args.until <= args.since:
        print("ingestor backfill: --until must be after --since", file=sys.stderr)
        return EXIT_USAGE
    opts = BackfillOptions(args.since, args.until, symbols, timeframes, args.dry_run)
    tty = sys.stderr.isatty() and not args.json

    async def job() -> Summary:
        progress = None if args.dry_run else make_progress(tty)
        return (await run_job(config, opts, progress=progress))[1]

    t0 = time.monotonic()

    def interrupted() -> None:
        log.warning(
            "interrupted after %.1fs: what was stored stays; run again to resume",
            time.monotonic() - t0,
        )

    summary = _execute("backfill", config, job(), interrupted)
    if isinstance(summary, int):
        return summary
    _print_summary(summary, args.json)
    return EXIT_OK


def run_gaps(args: argparse.Namespace) -> int:
    """``ingestor gaps``: missing ranges per stream in the database; the exit code."""
    prepared = _prepare(args, "gaps")
    if isinstance(prepared, int):
        return prepared
    config, symbols, timeframes = prepared
    keys = stream_keys(config, symbols, timeframes)
    # The database's view only: "now" is this machine's clock (no exchange call), scaled like
    # the exchange's clock would be is not knowable without it, so the simulator's speed is not
    # applied here.
    now_ms = int(time.time() * 1000) - 1000

    async def job() -> list[dict[str, object]]:
        async with open_database(config) as db:
            reports = await find_gaps(db, keys, args.since, args.until, now_ms)
        return [r.as_dict() for r in reports]

    reports = _execute("gaps", config, job(), lambda: None)
    if isinstance(reports, int):
        return reports
    if args.json:
        print(json.dumps({"streams": reports}, indent=2))
        return EXIT_OK
    for r in reports:
        ranges = r["ranges"]
        assert isinstance(ranges, list)
        if r["first"] is None:
            print(f"{r['stream']:<16} nothing stored")
            continue
        print(
            f"{r['stream']:<16} {r['first']}..{r['last']}: {r['stored']:,} stored, "
            f"{r['missing']:,} missing in {len(ranges)} ranges"
        )
        for a, b, n in ranges:
            print(f"    {a} .. {b}  ({n:,})")
    return EXIT_OK
