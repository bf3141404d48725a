"""``ingestor status``: a running daemon's ``/status`` as a terminal table (rich).

Readiness and why, the feed connections, and per stream the newest stored candle (open time,
close, the eight indicators), its lag and its connection, then rejects by reason. ``--watch``
refreshes in place (rich ``Live``); ``--json`` prints the document as the daemon sent it.

Exit codes (usable in scripts): 0 ready, 1 not ready, 2 the daemon could not be reached (or did
not answer a ``/status`` document). ``make demo`` prints its table through :func:`render`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ingestor.candles import INDICATOR_FIELDS
from ingestor.errors import IngestorError

__all__ = [
    "DEFAULT_URL",
    "EXIT_NOT_READY",
    "EXIT_READY",
    "EXIT_UNREACHABLE",
    "DaemonUnreachable",
    "add_arguments",
    "exit_code",
    "fetch",
    "reasons",
    "render",
    "run",
    "status_url",
]

EXIT_READY, EXIT_NOT_READY, EXIT_UNREACHABLE = 0, 1, 2
#: The health endpoint's default address (``[health] host``/``port``).
DEFAULT_URL = "http://127.0.0.1:8080"
#: Short column headers of the indicators, in INDICATOR_FIELDS order.
_SHORT = {
    "rsi_14": "rsi14",
    "macd": "macd",
    "macd_signal": "signal",
    "bollinger_upper": "bb up",
    "bollinger_middle": "bb mid",
    "bollinger_lower": "bb low",
    "ema_20": "ema20",
    "sma_50": "sma50",
}


class DaemonUnreachable(IngestorError):
    """Nothing answered at the URL, or what answered is not a daemon's ``/status``."""


def status_url(url: str) -> str:
    """``http://host:port`` (or a URL already ending in ``/status``) -> the ``/status`` URL."""
    if not url.startswith(("http://", "https://")):
        raise DaemonUnreachable(f"not an http(s) URL: {url!r}")
    url = url.rstrip("/")
    return url if url.endswith("/status") else f"{url}/status"


def fetch(url: str, timeout_s: float = 5.0) -> tuple[dict[str, Any], bytes]:
    """The daemon's ``/status`` document and its raw body; ``DaemonUnreachable`` otherwise."""
    target = status_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            body: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        raise DaemonUnreachable(f"{target} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaemonUnreachable(f"cannot reach {target}: {reason}") from exc
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise DaemonUnreachable(f"{target} did not answer JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("ready"), bool):
        raise DaemonUnreachable(f"{target} did not answer an ingestor /status document")
    return doc, body


def exit_code(doc: Mapping[str, Any]) -> int:
    return EXIT_READY if doc.get("ready") is True else EXIT_NOT_READY


def reasons(doc: Mapping[str, Any]) -> list[str]:
    """One line per failed readiness check, saying why (from the document's ``checks``)."""
    checks: Mapping[str, Any] = doc.get("checks") or {}
    out = []
    for name in doc.get("failed", []):
        check: Mapping[str, Any] = checks.get(name) or {}
        if name == "database":
            line = "database: not answering (or the last write failed)"
        elif name == "feed":
            line = (
                f"feed: {check.get('connections', '?')} of {check.get('expected', '?')} "
                f"connections, down: {check.get('down', [])}"
            )
        elif name == "streams":
            stale = [s.get("stream") for s in check.get("stale", [])]
            more = check.get("stale_count", len(stale)) - len(stale)
            line = (
                f"streams: {check.get('stale_count', len(stale))} lag beyond "
                f"{check.get('grace_s', '?')} s: {', '.join(map(str, stale))}"
                + (f" (+{more} more)" if more > 0 else "")
            )
        elif name == "catching_up":
            line = "catching_up: still filling streams from REST after the start"
        else:
            line = f"{name}: failed"
        # Whatever else a check carries (a reason, an error) is shown as it is.
        known = {"ok", "connections", "expected", "down", "stale", "stale_count", "grace_s"}
        extra = {k: v for k, v in check.items() if k not in known}
        if extra:
            line += " (" + ", ".join(f"{k}: {v}" for k, v in extra.items()) + ")"
        out.append(line)
    return out


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, int | float):
        return f"{v:.7g}"
    return str(v)


def _lag(v: Any, grace_s: float | None) -> Text:
    if v is None:
        return Text("nothing stored", style="yellow")
    style = "red" if grace_s is not None and v > grace_s else "green" if v == 0 else ""
    return Text(_duration(float(v)), style=style)


def _duration(s: float) -> str:
    """Exchange seconds, short: ``0 s``, ``12.5 s``, ``14m04s``, ``5h07m``, ``3d02h``."""
    if s < 120:
        return f"{s:.3g} s" if s else "0 s"
    m, h = int(s // 60), int(s // 3600)
    if s < 7200:
        return f"{m}m{int(s) % 60:02d}s"
    return f"{h}h{m % 60:02d}m" if h < 48 else f"{h // 24}d{h % 24:02d}h"


def _header(doc: Mapping[str, Any]) -> RenderableType:
    status = str(doc.get("status", "?"))
    style = "bold green" if doc.get("ready") else "bold red"
    head = Text.assemble(
        ("ingestor ", "bold"),
        (str(doc.get("version", "?")), ""),
        "  ",
        (status.upper(), style),
        f"  uptime {doc.get('uptime_s', 0):.0f} s",
    )
    why = [Text(f"  why: {line}", style="red") for line in reasons(doc)]
    return Group(head, *why)


def _connections(doc: Mapping[str, Any]) -> Table:
    t = Table(title="connections", title_justify="left", expand=False)
    for col in ("#", "up", "last frame", "reconnects"):
        t.add_column(col, justify="right")
    for c in doc.get("connections", []):
        age = c.get("last_frame_age_s")
        t.add_row(
            str(c.get("index")),
            Text("up", style="green") if c.get("connected") else Text("DOWN", style="red"),
            "never" if age is None else f"{age:.1f} s ago",
            str(c.get("reconnects", 0)),
        )
    return t


def _streams(doc: Mapping[str, Any]) -> Table:
    grace = (doc.get("checks") or {}).get("streams", {}).get("grace_s")
    t = Table(title="streams: newest stored candle", title_justify="left")
    t.add_column("stream", no_wrap=True)
    t.add_column("open time (UTC)", no_wrap=True)
    t.add_column("close", justify="right")
    for name in INDICATOR_FIELDS:
        t.add_column(_SHORT.get(name, name), justify="right")
    t.add_column("lag", justify="right")
    t.add_column("conn", justify="right")
    for s in doc.get("streams", []):
        candle = s.get("candle") or {}
        ind = candle.get("indicators") or {}
        opened = candle.get("open_time") or s.get("last_stored_open") or "-"
        t.add_row(
            str(s.get("stream")),
            str(opened).replace("T", " ")[:19],  # to the second, UTC
            str(candle.get("close", "-")),
            *(_num(ind.get(name)) for name in INDICATOR_FIELDS),
            _lag(s.get("lag_s"), grace),
            _num(s.get("connection")),
        )
    return t


def _rejects(doc: Mapping[str, Any]) -> RenderableType:
    rejects: Mapping[str, int] = doc.get("rejects") or {}
    if not rejects:
        return Text("rejects: none")
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(rejects.items()))
    return Text(f"rejects: {sum(rejects.values())} ({parts})", style="yellow")


def render(doc: Mapping[str, Any]) -> Group:
    """The whole view of one ``/status`` document."""
    return Group(_header(doc), _connections(doc), _streams(doc), _rejects(doc))


def _unreachable(exc: DaemonUnreachable) -> Text:
    return Text(f"ingestor status: {exc}", style="bold red")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the daemon's health endpoint (default {DEFAULT_URL})"
    )
    parser.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes with --watch"
    )
    parser.add_argument("--json", action="store_true", help="print the /status document as is")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")


def _console() -> Console:
    console = Console()
    # Piped or captured (scripts, CI): wide enough that the stream table is not squeezed.
    return console if console.is_terminal else Console(width=max(console.width, 200))


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.timeout <= 0:
        print("ingestor status: --interval and --timeout must be > 0", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.watch:
        return _watch(args)
    try:
        doc, body = fetch(args.url, args.timeout)
    except DaemonUnreachable as exc:
        print(f"ingestor status: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        sys.stdout.write(body.decode() + "\n")
    else:
        _console().print(render(doc))
    return exit_code(doc)


def _watch(args: argparse.Namespace) -> int:
    """Until Ctrl-C; the exit code of the last look. A daemon that goes away (a restart) is
    shown as unreachable and looked for again, not the end of the watch."""
    code = EXIT_UNREACHABLE
    view: RenderableType
    try:
        if args.json:
            while True:
                try:
                    doc, body = fetch(args.url, args.timeout)
                    sys.stdout.write(body.decode() + "\n")
                    code = exit_code(doc)
                except DaemonUnreachable as exc:
                    print(f"ingestor status: {exc}", file=sys.stderr)
                    code = EXIT_UNREACHABLE
                sys.stdout.flush()
                time.sleep(args.interval)
        with Live(console=_console(), auto_refresh=False, screen=False) as live:
            while True:
                try:
                    doc, _ = fetch(args.url, args.timeout)
                    view, code = render(doc), exit_code(doc)
                except DaemonUnreachable as exc:
                    view, code = _unreachable(exc), EXIT_UNREACHABLE
                live.update(view, refresh=True)
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return code
