"""Loading Binance public-data kline CSVs for replay (the I/O half of ``market``'s replay).

Files are data.binance.vision / ``GET /api/v3/klines`` dumps: 12 columns, optionally a header.
Rows are kept as the exact strings of the file, so replayed klines carry real Binance values.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ingestor.simulator.market import INTERVAL_MS
from ingestor.streams import StreamKey

__all__ = ["FILE_NAME_RE", "load_csv_rows", "load_replays", "parse_replay_specs"]

#: ``BTCUSDT-1m-2020-01-01.csv`` -> symbol, interval.
FILE_NAME_RE = re.compile(r"^(?P<symbol>[A-Z0-9]+)-(?P<tf>\d+[smhd])-.*\.csv$")


def load_csv_rows(paths: Iterable[Path]) -> list[list[Any]]:
    """Rows of the files, header lines skipped, deduplicated by open time, ascending."""
    by_open: dict[int, list[Any]] = {}
    for path in paths:
        with path.open(newline="") as fh:
            for rec in csv.reader(fh):
                if len(rec) < 12 or not rec[0].strip().isdigit():
                    continue  # header or blank line
                row: list[Any] = [s.strip() for s in rec[:12]]
                row[0] = int(row[0])
                row[6] = int(row[6])
                row[8] = int(row[8])
                by_open[row[0]] = row
    return [by_open[k] for k in sorted(by_open)]


def _from_name(path: Path) -> StreamKey | None:
    m = FILE_NAME_RE.match(path.name)
    if m is None or m["tf"] not in INTERVAL_MS:
        return None
    return StreamKey(m["symbol"], m["tf"])


def parse_replay_specs(specs: Iterable[str]) -> dict[StreamKey, list[Path]]:
    """``SYMBOL:TF=path``, a CSV path named ``SYMBOL-TF-*.csv``, or a directory of such files."""
    out: dict[StreamKey, list[Path]] = {}
    for spec in specs:
        if "=" in spec:
            pair, _, raw_path = spec.partition("=")
            symbol, _, tf = pair.partition(":")
            if tf not in INTERVAL_MS:
                raise ValueError(f"bad replay spec {spec!r}: unknown interval {tf!r}")
            out.setdefault(StreamKey(symbol.upper(), tf), []).append(Path(raw_path))
            continue
        path = Path(spec)
        files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
        found = False
        for f in files:
            key = _from_name(f)
            if key is not None:
                out.setdefault(key, []).append(f)
                found = True
        if not found:
            raise ValueError(f"replay {spec!r}: no file named like SYMBOL-TF-*.csv")
    return out


def load_replays(specs: dict[StreamKey, list[Path]]) -> dict[StreamKey, list[list[Any]]]:
    """Read every stream's files; a stream whose files hold no rows is an error."""
    out: dict[StreamKey, list[list[Any]]] = {}
    for key, paths in specs.items():
        rows = load_csv_rows(sorted(paths))
        if not rows:
            raise ValueError(f"replay {key}: no kline rows in {[str(p) for p in paths]}")
        out[key] = rows
    return out
