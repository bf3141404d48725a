"""``ingestor schema apply|verify``: thin — parse, load the config, connect, print the result.

Exit codes: 0 in sync (apply: nothing left to do), 1 drift remains or the database failed,
2 bad configuration (the mapping is :mod:`ingestor.cli`'s). ``--json`` prints one JSON object
instead of text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ingestor.cli import EXIT_FAILED, EXIT_OK, Command
from ingestor.config import Config, KeyPattern, load_config, parse_key_pattern, redact_uri
from ingestor.errors import ConfigError
from ingestor.logs import setup_logging
from ingestor.schema.apply import apply
from ingestor.schema.spec import COLLECTIONS, SPEC_VERSION
from ingestor.schema.verify import diff
from ingestor.store.database import open_database
from ingestor.store.schema import MARKET_DATA

__all__ = ["add_arguments", "build"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``apply`` and ``verify`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="schema_command", required=True)
    ap = sub.add_parser("apply", help="create missing collections, indexes and validators")
    ap.add_argument(
        "--migrate",
        action="store_true",
        help="also change existing collections that differ (collMod, index builds)",
    )
    ve = sub.add_parser("verify", help="compare the database with the spec; exit 1 on drift")
    for p in (ap, ve):
        p.add_argument(
            "--config", type=Path, default=None, help="config.toml (default: built-in defaults)"
        )
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument(
            "--shard-key",
            default=None,
            metavar="FIELD:KIND[,...]",
            help="market_data's shard-key index (e.g. symbol:hashed), not drift; "
            "overrides mongodb.shard_key",
        )


def _shard_keys(config: Config, flag: str | None) -> dict[str, KeyPattern]:
    text = config.mongodb.shard_key if flag is None else flag
    return {MARKET_DATA: parse_key_pattern(text)} if text.strip() else {}


async def _run(
    config: Config, command: str, migrate: bool, shard_keys: dict[str, KeyPattern]
) -> dict[str, Any]:
    async with open_database(config) as db:
        out: dict[str, Any] = {
            "command": command,
            "database": config.mongodb.database,
            "uri": redact_uri(config.mongodb.uri) or "embedded",
            "spec_version": SPEC_VERSION,
            "collections": len(COLLECTIONS),
        }
        if command == "apply":
            out.update((await apply(db, migrate=migrate, shard_keys=shard_keys)).as_dict())
        else:
            drift = await diff(db, shard_keys=shard_keys)
            out.update(drift=[d.as_dict() for d in drift], in_sync=not drift)
        return out


def _print_text(out: dict[str, Any]) -> None:
    where = f"{out['database']} ({out['uri']})"
    for change in out.get("changes", []):
        print(change)
    for denied in out.get("denied", []):
        print(f"DENIED {denied}")
    drift = out.get("pending", out.get("drift", []))
    for d in drift:
        how = f"fix: {d['fix']}" if d["fix"] else "manual migration"
        print(f"DRIFT {d['collection']}: {d['detail']} ({how})")
    if out["command"] == "apply":
        if not out["changes"] and not drift:
            print(f"no changes: {where} already matches schema spec {out['spec_version']}")
        elif drift:
            fixable = any(d["fix"] for d in drift)
            hint = "; run with --migrate to fix" if fixable else ""
            print(f"{len(drift)} differences left in {where}{hint}")
        else:
            print(f"{where} now matches schema spec {out['spec_version']}")
    elif drift:
        print(f"{len(drift)} differences between {where} and schema spec {out['spec_version']}")
    else:
        print(f"in sync: {where}, {out['collections']} collections, spec {out['spec_version']}")


def build(args: argparse.Namespace) -> Command:
    """``ingestor schema apply|verify`` as parsed by :func:`add_arguments`, ready to run; its
    exit code: 0 in sync, 1 drift left."""
    config = load_config(args.config)
    setup_logging(config.service.log_level, config.service.log_format, stream=sys.stderr)
    command = args.schema_command
    migrate = getattr(args, "migrate", False)
    try:
        shard_keys = _shard_keys(config, args.shard_key)
    except ValueError as exc:
        raise ConfigError("--shard-key", str(exc)) from None

    async def main(stop: asyncio.Event) -> int:
        out = await _run(config, command, migrate, shard_keys)
        if args.json:
            print(json.dumps(out, indent=2, default=str))
        else:
            _print_text(out)
        return EXIT_OK if out["in_sync"] else EXIT_FAILED

    return Command(f"schema {command}", main, config.service.event_loop)
