"""``ingestor simulate``: run the simulated exchange standalone until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from ingestor.cli import EXIT_OK, Command
from ingestor.errors import ConfigError
from ingestor.logs import setup_logging
from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.market import DEFAULT_SYMBOLS
from ingestor.simulator.replay import load_replays, parse_replay_specs
from ingestor.simulator.server import SimConfig, Simulator, serve_until

__all__ = ["add_arguments", "build", "config_from_args", "parse_start"]


def parse_start(text: str) -> int:
    """``--start``: epoch milliseconds, or an ISO time (naive means UTC)."""
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's flags (``ingestor simulate``)."""
    d = SimConfig()
    f = FaultConfig()
    parser.add_argument("--host", default=d.host, help="bind address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 = any free port")
    parser.add_argument(
        "--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated symbols"
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="synthetic market seed")
    parser.add_argument(
        "--speed", type=float, default=d.speed, help="sim seconds per real second (default 1)"
    )
    parser.add_argument(
        "--start",
        type=parse_start,
        default=None,
        help="sim start: ISO time or epoch ms (default now)",
    )
    parser.add_argument(
        "--history-start",
        type=parse_start,
        default=0,
        help="the exchange's first kline: ISO time or epoch ms (default the epoch)",
    )
    parser.add_argument(
        "--replay",
        action="append",
        default=[],
        metavar="SPEC",
        help="replay CSVs: file named SYMBOL-TF-*.csv, SYMBOL:TF=path, or a directory (repeatable)",
    )
    parser.add_argument(
        "--update-interval", type=float, default=d.update_interval_s,
        help="real seconds between forming-kline updates (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--ping-interval", type=float, default=d.ping_interval_s)
    parser.add_argument("--weight-limit", type=int, default=d.weight_limit_1m)
    parser.add_argument(
        "--connection-lifetime-hours", type=float, default=24.0, help="in simulated hours"
    )
    g = parser.add_argument_group("faults")
    g.add_argument("--disconnect-every", type=float, default=f.disconnect_every_s, metavar="S")
    g.add_argument("--repeat-final", type=float, default=f.repeat_final_p, metavar="P")
    g.add_argument("--drop-final", type=float, default=f.drop_final_p, metavar="P")
    g.add_argument("--garbage", type=float, default=f.garbage_p, metavar="P")
    g.add_argument("--rest-delay", type=float, default=f.rest_delay_s, metavar="S")
    g.add_argument("--rest-429", type=float, default=f.rest_429_p, metavar="P")
    g.add_argument(
        "--rest-429-retry-after", type=int, default=f.rest_429_retry_after_s, metavar="S"
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    faults = FaultConfig()
    faults.update(
        {
            "disconnect_every_s": args.disconnect_every,
            "repeat_final_p": args.repeat_final,
            "drop_final_p": args.drop_final,
            "garbage_p": args.garbage,
            "rest_delay_s": args.rest_delay,
            "rest_429_p": args.rest_429,
            "rest_429_retry_after_s": args.rest_429_retry_after,
        }
    )
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    replays = load_replays(parse_replay_specs(args.replay))
    symbols += tuple(sorted({k.symbol for k in replays} - set(symbols)))
    return SimConfig(
        host=args.host,
        port=args.port,
        symbols=symbols,
        seed=args.seed,
        speed=args.speed,
        start_ms=args.start,
        history_start_ms=args.history_start,
        replays=replays,
        update_interval_s=args.update_interval,
        ping_interval_s=args.ping_interval,
        weight_limit_1m=args.weight_limit,
        connection_lifetime_sim_ms=int(args.connection_lifetime_hours * 3_600_000),
        faults=faults,
    )


def build(args: argparse.Namespace) -> Command:
    """``ingestor simulate``: serve until SIGINT/SIGTERM; prints ``simulator listening on URL``
    once ready. A bad replay spec or file is a bad argument (exit 2)."""
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        raise ConfigError("--replay", str(exc)) from exc
    setup_logging("INFO", "text", stream=sys.stderr)

    def ready(sim: Simulator) -> None:
        print(f"simulator listening on {sim.rest_url}", flush=True)

    async def main(stop: asyncio.Event) -> int:
        await serve_until(config, stop, ready)
        return EXIT_OK

    return Command("simulate", main, graceful=True)
