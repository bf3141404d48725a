"""``ingestor``: the command line. Thin: parse, build the config, run.

Exit codes: 0 done, 1 failed (reason logged), 2 bad configuration or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from ingestor.config import Config, load_config
from ingestor.errors import ConfigError, IngestorError
from ingestor.logs import setup_logging
from ingestor.redact import redact

__all__ = ["main"]

log = logging.getLogger("ingestor")


def _parser() -> argparse.ArgumentParser:
    from ingestor.simulator import cli as sim_cli

    p = argparse.ArgumentParser(prog="ingestor", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the ingestion daemon")
    run.add_argument(
        "--config", type=Path, default=None, help="config.toml (default: built-in defaults)"
    )
    run.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="ingest only shard I of N (auto/N: I from the pod ordinal); overrides service.shard",
    )
    from ingestor.backfill import cli as backfill_cli
    from ingestor.schema import cli as schema_cli

    backfill_cli.add_backfill_arguments(
        sub.add_parser("backfill", help="fill market_data with closed klines from REST history")
    )
    backfill_cli.add_gaps_arguments(
        sub.add_parser("gaps", help="list missing ranges per stream in the database")
    )
    schema = sub.add_parser("schema", help="create or verify the database schema of the spec")
    schema_cli.add_arguments(schema)
    sim = sub.add_parser("simulate", help="run the Binance-compatible exchange simulator")
    sim_cli.add_arguments(sim)
    from ingestor import status

    status.add_arguments(sub.add_parser("status", help="a running daemon's /status as a table"))
    return p


async def _run(config: Config) -> None:
    from ingestor.service import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Service(config) as svc:
        await svc.run(stop)


def _event_loop_runner(kind: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """uvloop (the design's choice) when asked for and installed, asyncio's own otherwise."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: using asyncio's event loop")
        else:
            return uvloop.run
    return asyncio.run


def _one_blas_thread() -> None:
    """The daemon's math is many small matrix products on an event loop: BLAS worker threads
    busy-wait and take the cores the loop, the database and the exchange need (measured: one
    thread is ~2x faster per series and halves CPU time)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _one_blas_thread()
    if args.command in ("backfill", "gaps"):
        from ingestor.backfill import cli as backfill_cli

        return (backfill_cli.run_backfill if args.command == "backfill" else backfill_cli.run_gaps)(
            args
        )
    if args.command == "schema":
        from ingestor.schema import cli as schema_cli

        return schema_cli.run(args)
    if args.command == "status":
        from ingestor import status

        return status.run(args)
    if args.command == "simulate":
        from ingestor.simulator import cli as sim_cli

        return sim_cli.run(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(redact(f"ingestor: bad configuration: {exc}"), file=sys.stderr)
        return 2
    if args.shard is not None:
        config = replace(config, service=replace(config.service, shard=args.shard))
    setup_logging(config.service.log_level, config.service.log_format)
    code = 0
    try:
        _event_loop_runner(config.service.event_loop)(_run(config))
    except* ConfigError as group:
        for err in group.exceptions:
            log.error("bad configuration: %s", err)
        code = 2
    except* IngestorError as failed:
        for fail in failed.exceptions:
            log.error("failed: %s: %s", type(fail).__name__, fail)
        code = 1
    except* Exception as crashed:
        for crash in crashed.exceptions:
            log.error("crashed: %s: %s", type(crash).__name__, crash, exc_info=crash)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
