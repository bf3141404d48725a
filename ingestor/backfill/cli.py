"""``ingestor backfill`` and ``ingestor gaps``: parse, load the config, build the job; the
``ingestor`` command line (:mod:`ingestor.cli`) runs it and maps its end to the exit code
(0 done, 1 failed, 2 bad arguments or configuration, 130 interrupted: what was stored stays,
a rerun resumes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ingestor.backfill.job import BackfillOptions, find_gaps, run_job, stream_keys
from ingestor.backfill.progress import make_progress
from ingestor.backfill.run import Summary
from ingestor.cli import EXIT_OK, Command
from ingestor.config import Config, load_config
from ingestor.errors import ConfigError
from ingestor.logs import setup_logging
from ingestor.store.database import open_database
from ingestor.streams import TIMEFRAME_MS

__all__ = [
    "add_backfill_arguments",
    "add_gaps_arguments",
    "build_backfill",
    "build_gaps",
    "parse_time",
]

log = logging.getLogger("ingestor.backfill")


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


def _prepare(args: argparse.Namespace) -> tuple[Config, tuple[str, ...], tuple[str, ...]]:
    """The config (logging set up on stderr) and the validated stream selection; ConfigError
    for bad ones."""
    config = load_config(args.config)
    setup_logging(config.service.log_level, config.service.log_format, stream=sys.stderr)
    symbols, timeframes = _selection(args, config)
    return config, symbols, timeframes


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


def build_backfill(args: argparse.Namespace) -> Command:
    """``ingestor backfill``: fill ``market_data`` with what is missing."""
    config, symbols, timeframes = _prepare(args)
    if args.until is not None and args.until <= args.since:
        raise ConfigError("--until", "must be after --since")
    opts = BackfillOptions(args.since, args.until, symbols, timeframes, args.dry_run)
    tty = sys.stderr.isatty() and not args.json

    async def job(stop: asyncio.Event) -> int:
        t0 = time.monotonic()
        progress = None if args.dry_run else make_progress(tty)
        try:
            summary = (await run_job(config, opts, progress=progress))[1]
        except asyncio.CancelledError:
            log.warning(
                "interrupted after %.1fs: what was stored stays; run again to resume",
                time.monotonic() - t0,
            )
            raise
        _print_summary(summary, args.json)
        return EXIT_OK

    return Command("backfill", job, config.service.event_loop)


def build_gaps(args: argparse.Namespace) -> Command:
    """``ingestor gaps``: missing ranges per stream in the database."""
    config, symbols, timeframes = _prepare(args)
    keys = stream_keys(config, symbols, timeframes)
    # The database's view only: "now" is this machine's clock, not the exchange's (no exchange
    # call is made), so a simulator's accelerated clock is not followed here.
    now_ms = int(time.time() * 1000) - 1000

    async def job(stop: asyncio.Event) -> int:
        async with open_database(config) as db:
            found = await find_gaps(db, keys, args.since, args.until, now_ms)
        _print_gaps([r.as_dict() for r in found], args.json)
        return EXIT_OK

    return Command("gaps", job, config.service.event_loop)


def _print_gaps(reports: list[dict[str, object]], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"streams": reports}, indent=2))
        return
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
