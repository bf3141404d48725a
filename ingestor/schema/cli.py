"""``ingestor schema apply|verify``: thin — parse, load the config, connect, print the result.

Exit codes: 0 in sync (apply: nothing left to do), 1 drift remains or the database failed,
2 bad configuration. ``--json`` prints one JSON object instead of text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from ingestor.config import Config, KeyPattern, load_config, parse_key_pattern, redact_uri
from ingestor.errors import ConfigError, IngestorError
from ingestor.schema.apply import apply
from ingestor.schema.spec import COLLECTIONS, SPEC_VERSION
from ingestor.schema.verify import diff
from ingestor.store.database import open_database
from ingestor.store.schema import MARKET_DATA

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``apply`` and ``verify`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="schema_command", required=True)
    ap = sub.add_parser("apply", help="create missing collections, indexes and validators")
    ap.add_argument("--migrate", action="store_true",
                    help="also change existing collections that differ (collMod, index builds)")
    ve = sub.add_parser("verify", help="compare the database with the spec; exit 1 on drift")
    for p in (ap, ve):
        p.add_argument("--config", type=Path, default=None,
                       help="config.toml (default: built-in defaults)")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.add_argument("--shard-key", default=None, metavar="FIELD:KIND[,...]",
                       help="market_data's shard-key index (e.g. symbol:hashed), not drift; "
                            "overrides mongodb.shard_key")


def _shard_keys(config: Config, flag: str | None) -> dict[str, KeyPattern]:
    text = config.mongodb.shard_key if flag is None else flag
    return {MARKET_DATA: parse_key_pattern(text)} if text.strip() else {}


async def _run(
    config: Config, command: str, migrate: bool, shard_keys: dict[str, KeyPattern]
) -> dict[str, Any]:
    async with open_database(config) as db:
        out: dict[str, Any] = {
            "command": command, "database": config.mongodb.database,
            "uri": redact_uri(config.mongodb.uri) or "embedded", "spec_version": SPEC_VERSION,
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


def run(args: argparse.Namespace) -> int:
    """Run ``apply`` or ``verify`` as parsed by :func:`add_arguments`; returns the exit code."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(redact_uri(f"ingestor schema: bad configuration: {exc}"), file=sys.stderr)
        return 2
    command = args.schema_command
    try:
        shard_keys = _shard_keys(config, args.shard_key)
    except ValueError as exc:
        print(f"ingestor schema: bad --shard-key: {exc}", file=sys.stderr)
        return 2
    try:
        out = asyncio.run(_run(config, command, getattr(args, "migrate", False), shard_keys))
    except (IngestorError, PyMongoError) as exc:
        msg = f"ingestor schema {command}: failed: {type(exc).__name__}: {exc}"
        print(redact_uri(msg), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        _print_text(out)
    return 0 if out["in_sync"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ingestor schema", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
