"""The daemon's configuration: one typed, frozen object, parsed and validated once at the edge.

Sources, later wins: field defaults < TOML file < ``INGESTOR_<SECTION>__<KEY>`` environment
variables (names case-insensitive after the prefix). Only names of that shape are config (and
checked: an unknown one is an error); other ``INGESTOR_*`` names are not ours, e.g. the
``INGESTOR_FOO_SERVICE_HOST`` Kubernetes injects for a Service named ``ingestor-foo``. The
dataclasses below are the schema: a field's type drives parsing, its ``check`` (metadata)
validates and normalises. Every problem is a ``ConfigError`` naming the dotted key
(``ingest.timeframes``), the unknown variable (``INGESTOR_FOO__BAR``) or, for an
unreadable/unparsable file, the file path.
"""

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ingestor.errors import ConfigError
from ingestor.feed.clients import check_ws_client
from ingestor.redact import redact as redact_uri
from ingestor.streams import TIMEFRAME_MS

__all__ = [
    "ENV_PREFIX",
    "LOG_LEVELS",
    "BackfillConfig",
    "Config",
    "ExchangeConfig",
    "HealthConfig",
    "IngestConfig",
    "KeyPattern",
    "MongoConfig",
    "PositionsConfig",
    "ServiceConfig",
    "load_config",
    "parse_key_pattern",
    "redact_uri",
]

ENV_PREFIX = "INGESTOR_"
_ENV_NAME = re.compile(r"INGESTOR_([A-Za-z]+)__([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*)")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")
_STRS = tuple[str, ...]
Check = Callable[[Any], Any]  # returns the (normalised) value or raises ValueError(message)


def _shown(value: Any) -> str:
    """A bad value as an error message may show it: never one that could be a URI (it may
    carry a password, e.g. a connection string typed into the wrong key), at most 60 chars."""
    text = repr(value)
    if any(mark in text for mark in ("://", "@", "?", "%")):
        return "a value that looks like a URI (not shown: it may hold a secret)"
    return text if len(text) <= 60 else f"{text[:57]}... ({len(text)} chars)"


def _ok(pred: Callable[[Any], bool], message: str, norm: Check = lambda v: v) -> Check:
    def check(value: Any) -> Any:
        if not pred(value := norm(value)):
            raise ValueError(f"{message}, got {_shown(value)}")
        return value

    return check


def _between(lo: float, hi: float = math.inf, *, lo_open: bool = False) -> Check:
    text = f"must be {'>' if lo_open else '>='} {lo}" + ("" if hi == math.inf else f" and <= {hi}")
    return _ok(lambda v: (lo < v if lo_open else lo <= v) and v <= hi, text)


def _url(*schemes: str) -> Check:
    """A base URL: one of ``schemes``, a host, a valid port, no query/fragment; '/' stripped."""

    def check(value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not value.lower().startswith(f"{parts.scheme}://"):
            raise ValueError(f"must start with {' or '.join(schemes)} + '://', got {_shown(value)}")
        if any(c.isspace() for c in value) or not parts.hostname:
            raise ValueError(f"needs a host and no whitespace, got {_shown(value)}")
        try:
            _ = parts.port  # a malformed or out-of-range port
        except ValueError:
            raise ValueError(f"has a malformed port, got {_shown(value)}") from None
        if "?" in value or "#" in value or "@" in value:
            raise ValueError(
                f"must be a base URL without user info, query or fragment, got {_shown(value)}"
            )
        return value.rstrip("/")

    return check


def _mongo_uri(value: str) -> str:
    if value == "":
        return value
    scheme, sep, rest = value.partition("://")
    if scheme not in ("mongodb", "mongodb+srv") or not sep:
        raise ValueError("must be empty, or start with mongodb:// or mongodb+srv:// (not shown)")
    hosts = rest.partition("?")[0].rpartition("@")[2].partition("/")[0]
    if any(c.isspace() for c in value) or not all(h.partition(":")[0] for h in hosts.split(",")):
        raise ValueError("needs a host and no whitespace (the URI is not shown)")
    return value


def _names(normalise: Callable[[str], str], valid: Callable[[str], bool], what: str) -> Check:
    """A non-empty list of unique, valid names (normalised first)."""

    def check(value: _STRS) -> _STRS:
        out = tuple(normalise(v) for v in value)
        if not out:
            raise ValueError("must not be empty")
        if bad := [v for v in out if not valid(v)]:
            raise ValueError(f"{_shown(bad[0])} is not a valid {what}")
        if dup := [v for i, v in enumerate(out) if v in out[:i]]:
            raise ValueError(f"duplicate {_shown(dup[0])}")
        return out

    return check


def _by(check: Check) -> dict[str, Check]:  # field metadata: validated/normalised by check
    return {"check": check}


_SYMBOLS = _names(
    lambda s: s.strip().upper(), lambda s: bool(_SYMBOL.fullmatch(s)), "symbol (2-20 of A-Z 0-9)"
)
_TIMEFRAMES = _names(
    str.strip, TIMEFRAME_MS.__contains__, f"timeframe (one of {', '.join(TIMEFRAME_MS)})"
)
_DB_NAME = _ok(
    lambda v: 0 < len(v) < 64 and not set(v) & set('/\\. "$'),
    'must be 1-63 characters without /\\. "$',
)
_LOG_LEVEL = _ok(LOG_LEVELS.__contains__, f"must be one of {', '.join(LOG_LEVELS)}", str.upper)
_NONEMPTY = _ok(lambda v: v.strip() != "", "must not be empty")
_EXPIRY = _ok(("auto", "daemon", "server").__contains__, "must be auto, daemon or server")
_POSITIVE = _between(0, lo_open=True)
_NONNEG = _between(0)


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    ws_url: str = field(default="wss://stream.binance.com:9443", metadata=_by(_url("ws", "wss")))
    rest_url: str = field(default="https://api.binance.com", metadata=_by(_url("http", "https")))
    streams_per_connection: int = field(default=200, metadata=_by(_between(1, 1024)))
    request_timeout_s: float = field(default=10.0, metadata=_by(_POSITIVE))
    max_weight_share: float = field(default=0.5, metadata=_by(_between(0, 1, lo_open=True)))
    time_scale: float = field(default=1.0, metadata=_by(_POSITIVE))
    ws_client: str = field(default="picows", metadata=_by(check_ws_client))


KeyPattern = tuple[tuple[str, int | str], ...]


def parse_key_pattern(text: str) -> KeyPattern:
    """``"symbol:hashed"`` / ``"symbol:1,open_time:1"`` -> an index key pattern (ValueError)."""
    out: list[tuple[str, int | str]] = []
    for part in text.split(","):
        name, _, kind = part.strip().partition(":")
        kind = kind.strip() or "1"
        if not name.strip() or kind not in ("1", "-1", "hashed") or name.startswith("$"):
            raise ValueError(f"must be field:1|-1|hashed[,field:...], got {text!r}")
        out.append((name.strip(), kind if kind == "hashed" else int(kind)))
    return tuple(out)


def _key_pattern(value: str) -> str:
    return value.strip() and ",".join(f"{k}:{v}" for k, v in parse_key_pattern(value))


@dataclass(frozen=True, slots=True)
class MongoConfig:
    uri: str = field(default="", metadata=_by(_mongo_uri))
    database: str = field(default="bot_core_db", metadata=_by(_DB_NAME))
    #: Client-wide timeoutMS: every operation (selection, checkout, round trip) ends within it.
    timeout_ms: int = field(default=10_000, metadata=_by(_POSITIVE))
    #: How long a start waits for a primary: longer than an election (~12 s median).
    server_selection_timeout_ms: int = field(default=60_000, metadata=_by(_POSITIVE))
    #: A shard-key index on market_data that schema verify accepts (e.g. "symbol:hashed").
    shard_key: str = field(default="", metadata=_by(_key_pattern))
    # who deletes candles past market_data's expireAfterSeconds (ingestor.store.retention)
    expiry: str = field(default="auto", metadata=_by(_EXPIRY))


@dataclass(frozen=True, slots=True)
class IngestConfig:
    symbols: _STRS = field(
        default=(
            "BTCUSDT",
            "ETHUSDT",
            "BNBUSDT",
            "SOLUSDT",
            "XRPUSDT",
            "ADAUSDT",
            "DOGEUSDT",
            "AVAXUSDT",
        ),
        metadata=_by(_SYMBOLS),
    )
    timeframes: _STRS = field(
        default=("1m", "5m", "15m", "1h", "4h", "1d"), metadata=_by(_TIMEFRAMES)
    )
    max_batch: int = field(default=2048, metadata=_by(_POSITIVE))
    linger_ms: int = field(default=40, metadata=_by(_NONNEG))
    queue_size: int = field(default=10000, metadata=_by(_POSITIVE))
    warmup_candles: int = field(default=500, metadata=_by(_between(100)))
    final_grace_ms: int = field(default=3000, metadata=_by(_NONNEG))
    startup_concurrency: int = field(default=8, metadata=_by(_between(1, 64)))
    journal_sync_after_ms: int = field(default=250, metadata=_by(_between(0, 60_000)))


@dataclass(frozen=True, slots=True)
class HealthConfig:
    host: str = field(default="127.0.0.1", metadata=_by(_NONEMPTY))
    port: int = field(default=8080, metadata=_by(_between(0, 65535)))  # 0: pick a free port


@dataclass(frozen=True, slots=True)
class PositionsConfig:
    enabled: bool = field(default=True, metadata=_by(lambda v: v))
    refresh_ms: int = field(default=1000, metadata=_by(_between(10)))
    max_price_age_ms: int = field(default=10_000, metadata=_by(_POSITIVE))
    alert_below: float = field(default=1.5, metadata=_by(_POSITIVE))
    recover_above: float = field(default=1.75, metadata=_by(_POSITIVE))
    mark_prices: bool = field(default=False, metadata=_by(lambda v: v))
    futures_ws_url: str = field(
        default="wss://fstream.binance.com/market", metadata=_by(_url("ws", "wss"))
    )


@dataclass(frozen=True, slots=True)
class BackfillConfig:
    concurrency: int = field(default=8, metadata=_by(_between(1, 64)))
    warmup_candles: int = field(default=500, metadata=_by(_between(100)))


_SHARD = re.compile(r"(\d+|auto)/(\d+)")


def _shard(value: str) -> str:
    m = _SHARD.fullmatch(value.strip())
    if not m or int(m[2]) < 1 or (m[1] != "auto" and int(m[1]) >= int(m[2])):
        raise ValueError(f"must be I/N with 0 <= I < N, or auto/N, got {_shown(value)}")
    return value.strip()


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    data_dir: str = field(default="./data", metadata=_by(_NONEMPTY))
    log_level: str = field(default="INFO", metadata=_by(_LOG_LEVEL))
    log_format: str = field(
        default="json", metadata=_by(_ok(("json", "text").__contains__, "must be json or text"))
    )
    event_loop: str = field(
        default="uvloop",
        metadata=_by(_ok(("uvloop", "asyncio").__contains__, "must be uvloop or asyncio")),
    )
    shard: str = field(default="0/1", metadata=_by(_shard))
    shutdown_timeout_s: float = field(default=10.0, metadata=_by(_POSITIVE))


@dataclass(frozen=True, slots=True)
class Config:
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    mongodb: MongoConfig = field(default_factory=MongoConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    positions: PositionsConfig = field(default_factory=PositionsConfig)
    backfill: BackfillConfig = field(default_factory=BackfillConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)


_CLASSES: dict[str, Any] = {f.name: f.type for f in fields(Config)}
_SCHEMA: dict[str, dict[str, Field[Any]]] = {
    name: {f.name: f for f in fields(cls)} for name, cls in _CLASSES.items()
}


def _coerce(typ: Any, value: Any) -> Any:
    """A TOML (or env-parsed) value as the field's type, else ValueError."""
    if typ == _STRS:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif isinstance(value, bool) != (typ is bool):
        pass  # bool is an int subclass: never accept one for the other
    elif typ is float:
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    elif isinstance(value, typ):
        return value
    want = {float: "a finite number", _STRS: "a list of strings"}.get(typ, typ.__name__)
    raise ValueError(f"expected {want}, got {type(value).__name__} {_shown(value)}")


_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _from_env(typ: Any, text: str) -> Any:
    """An environment string parsed per the field's type (``_coerce`` checks the result)."""
    if typ is bool:
        if text.strip().lower() not in _FLAGS:
            raise ValueError(f"expected true/false/1/0/yes/no, got {_shown(text)}")
        return _FLAGS[text.strip().lower()]
    if typ == _STRS:
        if text.lstrip().startswith("["):
            return json.loads(text)  # JSONDecodeError is a ValueError
        return [s.strip() for s in text.split(",") if s.strip()]
    if typ in (int, float):
        try:
            return typ(text.strip())
        except ValueError:  # its message would echo the text
            raise ValueError(f"expected {typ.__name__}, got {_shown(text)}") from None
    return text


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read TOML: {exc}") from None


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults < ``path`` (None: defaults only) < ``INGESTOR_*`` in ``env`` (``os.environ``)."""
    values: dict[str, dict[str, Any]] = {sec: {} for sec in _SCHEMA}
    for sec, table in (_read_toml(path) if path is not None else {}).items():
        if sec not in _SCHEMA:
            raise ConfigError(sec, f"unknown section, known: {', '.join(_SCHEMA)}")
        if not isinstance(table, dict):
            raise ConfigError(sec, f"expected a table [{sec}], got {type(table).__name__}")
        for key, value in table.items():
            if key not in _SCHEMA[sec]:
                raise ConfigError(f"{sec}.{key}", f"unknown key, known: {', '.join(_SCHEMA[sec])}")
            try:
                values[sec][key] = _coerce(_SCHEMA[sec][key].type, value)
            except ValueError as exc:
                raise ConfigError(f"{sec}.{key}", str(exc)) from None
    for name, text in (os.environ if env is None else env).items():
        if not (shaped := _ENV_NAME.fullmatch(name)):
            continue
        sec, key = shaped[1].lower(), shaped[2].lower()
        if key not in _SCHEMA.get(sec, {}):
            raise ConfigError(name, f"no config key {sec}.{key} ({ENV_PREFIX}<SECTION>__<KEY>)")
        typ = _SCHEMA[sec][key].type
        try:
            values[sec][key] = _coerce(typ, _from_env(typ, text))
        except ValueError as exc:
            raise ConfigError(f"{sec}.{key}", f"from {name}: {exc}") from None
    sections: dict[str, Any] = {}
    for sec, specs in _SCHEMA.items():
        kwargs: dict[str, Any] = {}
        for key, spec in specs.items():
            try:
                kwargs[key] = spec.metadata["check"](values[sec].get(key, spec.default))
            except ValueError as exc:
                raise ConfigError(f"{sec}.{key}", str(exc)) from None
        sections[sec] = _CLASSES[sec](**kwargs)
    return Config(**sections)
