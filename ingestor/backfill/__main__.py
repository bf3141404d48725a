"""``python -m ingestor.backfill backfill|gaps ...`` until the ``ingestor`` CLI carries them."""

from __future__ import annotations

import argparse
import sys

from ingestor.backfill.cli import (
    add_backfill_arguments,
    add_gaps_arguments,
    run_backfill,
    run_gaps,
)

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingestor.backfill")
    sub = parser.add_subparsers(dest="command", required=True)
    add_backfill_arguments(sub.add_parser("backfill", help="fill market_data from REST history"))
    add_gaps_arguments(sub.add_parser("gaps", help="list missing ranges per stream"))
    args = parser.parse_args(argv)
    return run_backfill(args) if args.command == "backfill" else run_gaps(args)


if __name__ == "__main__":
    sys.exit(main())
