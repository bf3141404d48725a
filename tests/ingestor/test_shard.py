"""Shard assignment: every stream owned by exactly one daemon of N, the same in every process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ingestor.errors import ConfigError
from ingestor.shard import owned_symbols, owns, parse_shard, shard_of, symbol_of
from ingestor.streams import TIMEFRAME_MS, StreamKey
from tests.conftest import REPO, TIMEOUT_FACTOR

SYMBOLS = [f"SYM{i}USDT" for i in range(300)] + ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
KEYS = [str(StreamKey(s, tf)) for s in SYMBOLS for tf in TIMEFRAME_MS]


def test_parse_explicit_and_auto_from_a_statefulset_hostname() -> None:
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 2/3 ") == (2, 3)
    assert parse_shard("auto/3", "ingestor-2") == (2, 3)
    assert parse_shard("auto/4", "ingestor-0.ingestor.markets.svc.cluster.local") == (0, 4)
    assert parse_shard("auto/12", "bot-core-ingestor-11") == (11, 12)
    for bad, host in [
        ("3/3", ""),
        ("1/0", ""),
        ("x/2", ""),
        ("auto/3", "laptop"),
        ("auto/3", "ingestor-3"),
        ("1/2/3", ""),
    ]:
        with pytest.raises(ConfigError, match=r"service\.shard"):
            parse_shard(bad, host)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_every_stream_has_exactly_one_owner(count: int) -> None:
    for key in KEYS:
        owners = [i for i in range(count) if owns(key, i, count)]
        assert owners == [shard_of(key, count)]
    # Roughly balanced: no daemon gets more than twice its fair share of 303 symbols.
    sizes = [len(owned_symbols(SYMBOLS, i, count)) for i in range(count)]
    assert sum(sizes) == len(SYMBOLS) and max(sizes) <= 2 * len(SYMBOLS) / count


def test_a_symbols_streams_and_positions_stay_together() -> None:
    """The positions loop of the daemon owning a symbol must have that symbol's prices."""
    for count in (2, 3, 7):
        for sym in SYMBOLS[:50]:
            names = [sym, f"{sym}:1m", f"{sym}:1d", f"{sym.lower()}@kline_4h"]
            assert len({shard_of(n, count) for n in names}) == 1
    assert symbol_of("btcusdt@kline_1m") == "BTCUSDT" == symbol_of("BTCUSDT:15m")


def test_growing_the_fleet_moves_few_symbols() -> None:
    """Rendezvous hashing: going from 3 to 4 daemons moves only what the new one takes."""
    moved = [s for s in SYMBOLS if shard_of(s, 3) != shard_of(s, 4)]
    assert all(shard_of(s, 4) == 3 for s in moved)
    assert len(moved) < len(SYMBOLS) * 0.4


def test_assignment_is_the_same_in_another_process() -> None:
    """Stable across processes (Python's hash() is salted per process: never used)."""
    code = (
        "import json, sys; from ingestor.shard import shard_of; "
        "keys = json.load(sys.stdin); print(json.dumps([shard_of(k, 3) for k in keys]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(KEYS),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        check=True,
        timeout=60 * TIMEOUT_FACTOR,
    )
    assert json.loads(out.stdout) == [shard_of(k, 3) for k in KEYS]
    # Pinned values: a change of the hash would silently move every symbol in production.
    assert [shard_of(s, 3) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT")] == [1, 0, 2]
