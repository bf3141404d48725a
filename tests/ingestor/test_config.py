"""ingestor.config: shipped config.toml, env overrides, every error naming its key."""

import re
from dataclasses import fields
from pathlib import Path

import pytest

from ingestor.config import (
    Config,
    ExchangeConfig,
    IngestConfig,
    _from_env,
    load_config,
    redact_uri,
)
from ingestor.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "config.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def key_of(tmp_path: Path, text: str = "", env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env or {})
    assert info.value.key in str(info.value)
    return info.value.key


def test_shipped_config_equals_defaults() -> None:
    assert load_config(SHIPPED, {}) == Config()
    assert load_config(None, {}) == Config()
    cfg = Config()
    assert cfg.ingest.symbols[0] == "BTCUSDT" and isinstance(cfg.ingest.symbols, tuple)
    assert cfg.ingest.timeframes == ("1m", "5m", "15m", "1h", "4h", "1d")
    assert cfg.mongodb.uri == "" and cfg.health.port == 8080


def test_shipped_config_lists_every_key_with_a_comment() -> None:
    seen: set[str] = set()
    section = ""
    for line in SHIPPED.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]\s*", line):
            section = m.group(1)
        elif m := re.match(r"(\w+)\s*=.*#\s*\S", line):
            seen.add(f"{section}.{m.group(1)}")
    cfg = Config()
    expected = {f"{s.name}.{f.name}" for s in fields(cfg) for f in fields(getattr(cfg, s.name))}
    assert seen == expected


def test_toml_values_are_parsed_and_normalised(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
        [exchange]
        ws_url = "ws://localhost:9000/"
        request_timeout_s = 3
        [ingest]
        symbols = ["btcusdt", "EthUsdt"]
        timeframes = ["1h"]
        [service]
        log_level = "debug"
        """,
        ),
        {},
    )
    assert cfg.exchange.ws_url == "ws://localhost:9000"
    assert cfg.exchange.request_timeout_s == 3.0
    assert isinstance(cfg.exchange.request_timeout_s, float)
    assert cfg.ingest.symbols == ("BTCUSDT", "ETHUSDT")
    assert cfg.ingest.timeframes == ("1h",)
    assert cfg.service.log_level == "DEBUG"
    assert cfg.exchange.rest_url == ExchangeConfig().rest_url  # untouched keys keep defaults


def test_env_overrides_each_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[mongodb]\nuri = "mongodb://file:27017"\n')
    cfg = load_config(
        path,
        {
            "INGESTOR_MONGODB__URI": "mongodb://env:27017/x",  # str, env beats the file
            "ingestor_ignored": "lowercase prefix is not ours",
            "INGESTOR_health__PORT": "0",  # int; key names case-insensitive
            "INGESTOR_EXCHANGE__MAX_WEIGHT_SHARE": "0.25",  # float
            "INGESTOR_INGEST__SYMBOLS": " btcusdt, ETHUSDT ,",  # list, comma-separated
            "INGESTOR_INGEST__TIMEFRAMES": '["1m", "1d"]',  # list, JSON array
            "PATH": "/usr/bin",
        },
    )
    assert cfg.mongodb.uri == "mongodb://env:27017/x"
    assert cfg.health.port == 0
    assert cfg.exchange.max_weight_share == 0.25
    assert cfg.ingest.symbols == ("BTCUSDT", "ETHUSDT")
    assert cfg.ingest.timeframes == ("1m", "1d")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_SERVICE__LOG_LEVEL", "warning")
    assert load_config(None).service.log_level == "WARNING"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("1", True),
        ("YES", True),
        ("false", False),
        ("0", False),
        (" no ", False),
    ],
)
def test_env_bool_parsing(text: str, value: bool) -> None:
    assert _from_env(bool, text) is value


def test_env_bool_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="true/false"):
        _from_env(bool, "maybe")


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"INGESTOR_MONGODB__URL": "x"}, "INGESTOR_MONGODB__URL"),
        ({"INGESTOR_NOPE__URI": "x"}, "INGESTOR_NOPE__URI"),
        ({"INGESTOR_HEALTH__PORT": "http"}, "health.port"),
        ({"INGESTOR_HEALTH__PORT": "70000"}, "health.port"),
        ({"INGESTOR_EXCHANGE__TIME_SCALE": "fast"}, "exchange.time_scale"),
        ({"INGESTOR_INGEST__SYMBOLS": ""}, "ingest.symbols"),
        ({"INGESTOR_INGEST__SYMBOLS": "[1, 2]"}, "ingest.symbols"),
        ({"INGESTOR_INGEST__TIMEFRAMES": "[broken"}, "ingest.timeframes"),
        ({"INGESTOR_INGEST__TIMEFRAMES": "1m,2m"}, "ingest.timeframes"),
    ],
)
def test_env_errors_name_the_key(tmp_path: Path, env: dict[str, str], key: str) -> None:
    assert key_of(tmp_path, "", env) == key


#: What Kubernetes injects for Services named ingestor, ingestor-foo and ingestor-health in the
#: namespace (service links): none has the INGESTOR_<SECTION>__<KEY> shape, so none is config,
#: even INGESTOR_HEALTH_PORT, which reads like health.port.
K8S_SERVICE_LINKS = {
    f"INGESTOR{svc}{suffix}": value
    for svc in ("", "_FOO", "_HEALTH")
    for suffix, value in (
        ("_SERVICE_HOST", "10.0.0.7"),
        ("_SERVICE_PORT", "8080"),
        ("_SERVICE_PORT_HTTP_METRICS", "8080"),
        ("_PORT", "tcp://10.0.0.7:8080"),
        ("_PORT_8080_TCP", "tcp://10.0.0.7:8080"),
        ("_PORT_8080_TCP_PROTO", "tcp"),
        ("_PORT_8080_TCP_PORT", "8080"),
        ("_PORT_8080_TCP_ADDR", "10.0.0.7"),
    )
}


def test_env_without_the_section_key_shape_is_not_config() -> None:
    env = dict(K8S_SERVICE_LINKS, INGESTOR_MONGODB_URI="x", INGESTOR_="", INGESTOR__X="1")
    assert load_config(None, env) == Config()
    env["INGESTOR_HEALTH__PORT"] = "9000"  # the shape: still config, still checked
    assert load_config(None, env).health.port == 9000


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[exchange]\nws_uri = 'wss://x'", "exchange.ws_uri"),  # unknown key
        ("[exchnage]\nws_url = 'wss://x'", "exchnage"),  # unknown section
        ("exchange = 1", "exchange"),  # section is not a table
        ("[ingest]\nmax_batch = '10'", "ingest.max_batch"),  # wrong type
        ("[ingest]\nmax_batch = true", "ingest.max_batch"),  # bool is not an int
        ("[ingest]\nmax_batch = 1.5", "ingest.max_batch"),
        ("[exchange]\nrequest_timeout_s = 'x'", "exchange.request_timeout_s"),
        ("[exchange]\nrequest_timeout_s = inf", "exchange.request_timeout_s"),
        ("[ingest]\nsymbols = 'BTCUSDT'", "ingest.symbols"),
        ("[ingest]\nsymbols = ['BTCUSDT', 1]", "ingest.symbols"),
        ("[health]\nhost = 1", "health.host"),
        ("[ingest]\ntimeframes = ['1m', '2m']", "ingest.timeframes"),  # unknown timeframe
        ("[ingest]\ntimeframes = ['1m', '1m']", "ingest.timeframes"),  # duplicate
        ("[ingest]\ntimeframes = []", "ingest.timeframes"),
        ("[ingest]\nsymbols = []", "ingest.symbols"),  # empty list
        ("[ingest]\nsymbols = ['BTC-USDT']", "ingest.symbols"),  # bad symbol
        ("[ingest]\nsymbols = ['B']", "ingest.symbols"),
        ("[ingest]\nsymbols = ['btcusdt', 'BTCUSDT']", "ingest.symbols"),  # duplicate after upper
        ("[exchange]\nws_url = 'https://stream.binance.com'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'wss://'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'wss://:9443'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'wss://host:99999'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'wss://host/stream?streams=a'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'stream.binance.com:9443'", "exchange.ws_url"),
        ("[exchange]\nws_client = 'aiohttp'", "exchange.ws_client"),
        ("[exchange]\nrest_url = 'wss://api.binance.com'", "exchange.rest_url"),
        ("[exchange]\nrest_url = 'https:api.binance.com'", "exchange.rest_url"),
        ("[exchange]\nrest_url = 'https://api binance.com'", "exchange.rest_url"),
        ("[mongodb]\nuri = 'localhost:27017'", "mongodb.uri"),
        ("[mongodb]\nuri = 'postgres://u:p@h/db'", "mongodb.uri"),
        ("[mongodb]\nuri = 'mongodb://'", "mongodb.uri"),
        ("[mongodb]\nuri = 'mongodb://u:p@/db'", "mongodb.uri"),
        ("[mongodb]\nuri = 'mongodb://a:1,,b:2'", "mongodb.uri"),
        ("[mongodb]\ndatabase = 'bad.name'", "mongodb.database"),
        ("[mongodb]\ntimeout_ms = 0", "mongodb.timeout_ms"),
        ("[health]\nport = -1", "health.port"),  # bad port
        ("[health]\nport = 65536", "health.port"),
        ("[exchange]\nstreams_per_connection = 1025", "exchange.streams_per_connection"),
        ("[exchange]\nmax_weight_share = 0", "exchange.max_weight_share"),
        ("[exchange]\nmax_weight_share = 1.5", "exchange.max_weight_share"),
        ("[exchange]\ntime_scale = 0", "exchange.time_scale"),
        ("[ingest]\nmax_batch = 0", "ingest.max_batch"),
        ("[ingest]\nlinger_ms = -1", "ingest.linger_ms"),
        ("[ingest]\nwarmup_candles = 99", "ingest.warmup_candles"),
        ("[ingest]\njournal_sync_after_ms = -1", "ingest.journal_sync_after_ms"),
        ("[ingest]\njournal_sync_after_ms = 60001", "ingest.journal_sync_after_ms"),
        ("[service]\nlog_level = 'TRACE'", "service.log_level"),
        ("[service]\ndata_dir = ''", "service.data_dir"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert key_of(tmp_path, text) == key


def test_valid_edge_values(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
        [exchange]
        streams_per_connection = 1024
        max_weight_share = 1
        [mongodb]
        uri = "mongodb+srv://user:pw@cluster0.example.net/?retryWrites=true"
        [ingest]
        warmup_candles = 100
        linger_ms = 0
        journal_sync_after_ms = 0
        [health]
        port = 65535
        """,
        ),
        {},
    )
    assert cfg.exchange.max_weight_share == 1.0
    assert cfg.ingest.warmup_candles == 100 and cfg.health.port == 65535
    assert cfg.ingest.journal_sync_after_ms == 0
    assert load_config(None, {"INGESTOR_MONGODB__URI": "mongodb://a:1,b:2/db"}).mongodb.uri


def test_broken_or_missing_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[exchange\nws_url = ")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == str(path)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, {})
    assert info.value.key == str(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError) as info:
        load_config(binary, {})
    assert info.value.key == str(binary)


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.health = cfg.health  # type: ignore[misc]
    assert isinstance(cfg.ingest, IngestConfig) and not hasattr(cfg.ingest, "__dict__")


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "mongodb://user:s3cret@db:27017/x?authSource=admin",
            "mongodb://user:***@db:27017/x?authSource=admin",
        ),
        (
            "mongodb+srv://user:p%40ss@cluster.example.net",
            "mongodb+srv://user:***@cluster.example.net",
        ),
        ("mongodb://user@db:27017", "mongodb://user@db:27017"),
        ("mongodb://db:27017", "mongodb://db:27017"),
        ("", ""),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


def test_secret_not_echoed_in_uri_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[mongodb]\nuri = 'mongo://u:hunter2@db'"), {})
    assert "hunter2" not in str(info.value)


# A URI (with a password) typed into the wrong key: the error names the key, never the value.
_SECRET = "mongodb://admin:hunter2@db.example.net:27017/prod?authSource=admin"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"[mongodb]\ndatabase = '{_SECRET}'", "mongodb.database"),
        (f"[exchange]\nws_url = '{_SECRET}'", "exchange.ws_url"),
        ("[exchange]\nws_url = 'wss://u:hunter2@stream.example.com/x?a=1'", "exchange.ws_url"),
        ("[exchange]\nrest_url = 'https://u:hun/ter2@api.example.com/#x'", "exchange.rest_url"),
        ("[mongodb]\nuri = 'mongodb://u:hun ter2@db'", "mongodb.uri"),
        ("[mongodb]\nuri = 'MONGODB://u:hunter2@'", "mongodb.uri"),
        (f"[ingest]\nsymbols = ['{_SECRET}']", "ingest.symbols"),
        (f"[ingest]\nmax_batch = '{_SECRET}'", "ingest.max_batch"),
        (f"[service]\nshard = '{_SECRET}'", "service.shard"),
        (f"[service]\nlog_level = '{_SECRET}'", "service.log_level"),
    ],
)
def test_config_errors_never_echo_a_uri(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.key == key
    assert "hunter2" not in str(info.value) and "ter2" not in str(info.value)
    assert "db.example.net" not in str(info.value), str(info.value)


def test_env_config_errors_never_echo_a_uri(tmp_path: Path) -> None:
    env = {"INGESTOR_MONGODB__DATABASE": _SECRET}
    assert key_of(tmp_path, "", env) == "mongodb.database"
    names = ("INGESTOR_POSITIONS__ENABLED", "INGESTOR_HEALTH__PORT", "INGESTOR_INGEST__SYMBOLS")
    for name in names:
        with pytest.raises(ConfigError) as info:
            load_config(None, {name: _SECRET})
        assert "hunter2" not in str(info.value) and "db.example" not in str(info.value)
