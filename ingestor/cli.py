"""``ingestor``: the command line, the project's only entry point (``python -m ingestor`` is the
same). Subcommands: ``run``, ``backfill``, ``gaps``, ``schema``, ``simulate``, ``status``.

Each subcommand is thin: its module parses (``add_arguments``) and builds a :class:`Command`
(``build``: config loaded and checked, logging set up); :func:`execute` runs every one of them
the same way: one event-loop choice, one signal policy, one exit-code mapping:

    0 done, 1 failed (reason logged), 2 bad configuration or arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from ingestor.errors import ConfigError, IngestorError, RateLimited
from ingestor.redact import redact

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "execute",
    "exit_code",
    "main",
]

log = logging.getLogger("ingestor")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: ``main(stop)`` of a command: its exit code; ``stop`` is set by SIGINT/SIGTERM when graceful.
Main = Callable[[asyncio.Event], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class Command:
    """A built subcommand, ready to run.

    ``graceful``: SIGINT/SIGTERM set ``stop`` and the command winds down by itself (the daemon
    drains, the simulator closes its connections) and exits with its own code; otherwise the
    signal cancels ``main`` and the exit code is 130.
    """

    name: str
    main: Main
    event_loop: str = "uvloop"
    graceful: bool = False


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _one(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, f"bad configuration: {exc}"
    if isinstance(exc, RateLimited) and exc.status == 418:
        return EXIT_FAILED, (
            f"failed: the exchange banned this IP (HTTP 418) for {exc.retry_after:.0f}s: "
            "stopped; run again after the ban to resume"
        )
    if isinstance(exc, IngestorError):
        return EXIT_FAILED, f"failed: {type(exc).__name__}: {exc}"
    if isinstance(exc, PyMongoError):
        return EXIT_FAILED, f"failed: database: {type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return EXIT_FAILED, f"failed: {type(exc).__name__}: {exc}"
    return EXIT_FAILED, f"crashed: {type(exc).__name__}: {exc}"


def exit_code(exc: BaseException) -> tuple[int, list[str]]:
    """The one mapping from how a command ended to its exit code (and a reason per error).

    A group (a TaskGroup's failures) maps to its gravest member: a bad configuration (2) over a
    failure (1) over an interruption (130)."""
    found = [_one(leaf) for leaf in _leaves(exc)]
    codes = {code for code, _ in found}
    code = next(c for c in (EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED) if c in codes)
    return code, [reason for _, reason in found]


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The one event-loop choice: uvloop (the design's) when asked for and installed, asyncio's
    own otherwise."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
            log.warning("uvloop is not installed: using asyncio's event loop")
        else:
            return uvloop.new_event_loop
    return None


def execute(command: Command) -> int:
    """Run a built command to its exit code; errors are logged once, here."""

    async def supervised() -> int:
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set if command.graceful else task.cancel)
        return await command.main(stop)

    try:
        return asyncio.run(supervised(), loop_factory=loop_factory(command.event_loop))
    except BaseException as exc:  # every way a command ends maps to one exit code
        code, reasons = exit_code(exc)
        for leaf, reason in zip(_leaves(exc), reasons, strict=True):
            crashed = reason.startswith("crashed")
            level = logging.WARNING if reason == "interrupted" else logging.ERROR
            log.log(level, "%s: %s", command.name, reason, exc_info=leaf if crashed else None)
        return code


# -- ingestor run -----------------------------------------------------------------------------


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--config", type=Path, default=None, help="config.toml (default: built-in defaults)"
    )
    run.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="ingest only shard I of N (auto/N: I from the pod ordinal); overrides service.shard",
    )


def _build_run(args: argparse.Namespace) -> Command:
    from ingestor.config import load_config
    from ingestor.logs import setup_logging

    config = load_config(args.config)
    if args.shard is not None:
        config = replace(config, service=replace(config.service, shard=args.shard))
    setup_logging(config.service.log_level, config.service.log_format)

    async def serve(stop: asyncio.Event) -> int:
        from ingestor.assemble import build_service

        async with build_service(config) as svc:
            # What the imports and the assembly made lives as long as the process: the
            # collector's full passes need not walk it again (under the flood they took about
            # a sixth of the daemon's CPU, walking numpy's, PyMongo's and the feed's objects).
            gc.collect()
            gc.freeze()
            await svc.run(stop)
        return EXIT_OK

    return Command("run", serve, config.service.event_loop, graceful=True)


# -- the parser -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from ingestor.backfill import cli as backfill_cli
    from ingestor.schema import cli as schema_cli
    from ingestor.simulator import cli as sim_cli

    p = argparse.ArgumentParser(prog="ingestor", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the ingestion daemon")
    _add_run_arguments(run)
    run.set_defaults(build=_build_run)
    backfill = sub.add_parser("backfill", help="fill market_data with closed klines from REST")
    backfill_cli.add_backfill_arguments(backfill)
    backfill.set_defaults(build=backfill_cli.build_backfill)
    gaps = sub.add_parser("gaps", help="list missing ranges per stream in the database")
    backfill_cli.add_gaps_arguments(gaps)
    gaps.set_defaults(build=backfill_cli.build_gaps)
    schema = sub.add_parser("schema", help="create or verify the database schema of the spec")
    schema_cli.add_arguments(schema)
    schema.set_defaults(build=schema_cli.build)
    sim = sub.add_parser("simulate", help="run the Binance-compatible exchange simulator")
    sim_cli.add_arguments(sim)
    sim.set_defaults(build=sim_cli.build)
    from ingestor import status

    status.add_arguments(sub.add_parser("status", help="a running daemon's /status as a table"))
    return p


def _one_blas_thread() -> None:
    """The daemon's math is many small matrix products on an event loop: BLAS worker threads
    busy-wait and take the cores the loop, the database and the exchange need (measured: one
    thread is ~2x faster per series and halves CPU time)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency
        return
    threadpool_limits(limits=1, user_api="blas")


def main(argv: list[str] | None = None) -> int:
    """Parse, build, run: the exit code."""
    args = _parser().parse_args(argv)
    _one_blas_thread()
    if args.command == "status":  # a plain HTTP client of a daemon: its own exit codes
        from ingestor import status

        return status.run(args)
    try:
        command: Command = args.build(args)
    except ConfigError as exc:
        print(redact(f"ingestor {args.command}: bad configuration: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    return execute(command)
