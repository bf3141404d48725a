"""Scale-out: which daemon of N owns which symbol, the same answer in every process.

The unit of partition is the **symbol**: all timeframes of a symbol, its latest price (the
``PriceBook``) and its positions land on one daemon, so the positions loop of the daemon that
owns a symbol always has that symbol's price feed. A stream key (``BTCUSDT:1m``) or Binance
stream name (``btcusdt@kline_1m``) is owned by whoever owns its symbol.

Assignment is rendezvous (highest-random-weight) hashing over blake2b, never Python's salted
``hash()``: stable across processes and hosts, and growing N from 3 to 4 moves only the symbols
the new daemon wins (about a quarter), not nearly all of them as ``hash % N`` would.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from hashlib import blake2b

from ingestor.errors import ConfigError

__all__ = ["owned_symbols", "owns", "parse_shard", "shard_of", "symbol_of"]

_SPEC = re.compile(r"(\d+|auto)/(\d+)")
_ORDINAL = re.compile(r"-(\d+)$")


def parse_shard(text: str, hostname: str = "") -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``; ``"auto/N"`` takes I from a StatefulSet pod name (``name-<I>``)."""
    m = _SPEC.fullmatch(text.strip())
    if not m or int(m[2]) < 1:
        raise ConfigError("service.shard", f"must be I/N with 0 <= I < N, or auto/N, got {text!r}")
    count = int(m[2])
    if m[1] == "auto":
        found = _ORDINAL.search(hostname.split(".")[0])
        if not found:
            raise ConfigError(
                "service.shard",
                f"auto/{count} needs a hostname ending in -<ordinal> (a StatefulSet pod), "
                f"got {hostname!r}",
            )
        index = int(found[1])
    else:
        index = int(m[1])
    if index >= count:
        raise ConfigError("service.shard", f"index {index} is not below the count {count}")
    return index, count


def symbol_of(key: str) -> str:
    """The symbol of ``BTCUSDT``, ``BTCUSDT:1m`` or ``btcusdt@kline_1m``, upper-cased."""
    return key.partition(":")[0].partition("@")[0].strip().upper()


def _weight(symbol: str, shard: int) -> int:
    digest = blake2b(f"{symbol}/{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that owns ``key``'s symbol."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    symbol = symbol_of(key)
    return max(range(count), key=lambda shard: _weight(symbol, shard))


def owns(key: str, index: int, count: int) -> bool:
    """True when daemon ``index`` of ``count`` owns ``key`` (symbol, stream key or name)."""
    return count == 1 or shard_of(key, count) == index


def owned_symbols(symbols: Iterable[str], index: int, count: int) -> list[str]:
    """The symbols daemon ``index`` of ``count`` ingests and keeps positions for, in order."""
    return [s for s in symbols if owns(s, index, count)]
