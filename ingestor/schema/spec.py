"""The platform's database schema spec (``shared/spec/database-schema.md``), encoded once as data.

Every collection is a :class:`Collection`: its fields (:class:`T`, in the spec's order), its
indexes exactly as the spec's ``createIndex`` lines say them, its validation rules
(:class:`Rule`) and, for ``market_data``, the time-series options. :func:`validator` turns the
fields and rules into the ``$jsonSchema`` (+ ``$expr``) validator the database enforces, and
:func:`realize` turns the spec's indexes into what MongoDB can build. The project README's schema
section gives the decisions (brief collections, what is enforced where, and why).

Type encoding: ``number`` is bsonType ``"number"`` (int, long, double, decimal), ``Decimal128``
``"decimal"``, ``DateTime`` ``"date"``; ``x | null`` is ``[x, "null"]`` and not required (absent
means null); every other field is required. Documents may carry more fields than the spec names
(no ``additionalProperties: false``): the spec's principle 3 wants extensibility without
migrations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "COLLECTIONS",
    "SPEC_VERSION",
    "VALIDATION_ACTION",
    "VALIDATION_LEVEL",
    "Collection",
    "Index",
    "Origin",
    "Realized",
    "Rule",
    "T",
    "TimeSeries",
    "by_name",
    "iter_rules",
    "realize",
    "validator",
]

SPEC_VERSION = "1.0.0"
VALIDATION_LEVEL = "strict"
VALIDATION_ACTION = "error"

#: ``spec``: fully specified (sections 1-10); ``brief``: sections 11-17, schema defined here;
#: ``ingestor``: not in the spec, owned by this daemon.
Origin = Literal["spec", "brief", "ingestor"]


@dataclass(frozen=True, slots=True)
class T:
    """A field type: a bsonType (or ``any``), an enum, an object or an array of ``items``."""

    bson: str
    nullable: bool = False
    optional: bool = False  # may be absent (brief collections), but never null
    enum: tuple[str, ...] = ()
    fields: Mapping[str, T] | None = None
    items: T | None = None

    @property
    def null(self) -> T:
        return replace(self, nullable=True)

    @property
    def opt(self) -> T:
        return replace(self, optional=True)

    @property
    def required(self) -> bool:
        return not (self.nullable or self.optional)


def _obj(**fields: T) -> T:
    return T("object", fields=fields)


def _enum(*values: str) -> T:
    return T("string", enum=values)


def _arr(items: T) -> T:
    return T("array", items=items)


OID, STR, BOOL, DATE, DEC, NUM = (
    T(b) for b in ("objectId", "string", "bool", "date", "decimal", "number")
)
ANY, OBJ, BIN = T("any"), T("object"), T("binData")


@dataclass(frozen=True, slots=True)
class Index:
    """One ``createIndex``: ordered keys and the options the spec uses."""

    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    sparse: bool = False
    expire_after_s: int | None = None

    @property
    def name(self) -> str:
        """MongoDB's default index name (``symbol_1_open_time_-1``)."""
        return "_".join(f"{k}_{d}" for k, d in self.keys)

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.unique:
            opts["unique"] = True
        if self.sparse:
            opts["sparse"] = True
        if self.expire_after_s is not None:
            opts["expireAfterSeconds"] = self.expire_after_s
        return opts

    def __str__(self) -> str:
        keys = ", ".join(f"{k}: {d}" for k, d in self.keys)
        opts = ", ".join(f"{k}: {str(v).lower()}" for k, v in self.options().items())
        return f"{{{keys}}}" + (f" {{{opts}}}" if opts else "")


def _ix(
    *keys: tuple[str, int], unique: bool = False, sparse: bool = False, ttl: int | None = None
) -> Index:
    return Index(tuple(keys), unique, sparse, ttl)


@dataclass(frozen=True, slots=True)
class TimeSeries:
    time_field: str
    meta_field: str | None
    granularity: str

    def options(self) -> dict[str, Any]:
        opts = {"timeField": self.time_field, "granularity": self.granularity}
        if self.meta_field is not None:
            opts["metaField"] = self.meta_field
        return opts


RuleKind = Literal["bound", "pattern", "min_length", "expr", "type", "unique", "elsewhere"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A validation rule; ``text`` is the spec's words (a bullet, or a range in a comment).

    ``bound`` (lo/hi, open or closed) becomes ``minimum``/``maximum`` on a number field and an
    ``$expr`` comparison on a Decimal128 field (SecantusDB ignores ``minimum`` on
    decimals; the ``$expr`` form means the same on MongoDB and is enforced by both). ``type`` and
    ``unique`` are enforced by the field's type and by a unique index; ``elsewhere`` names the
    code that enforces what a validator cannot (``enforced_by``).
    """

    id: str
    text: str
    path: str
    kind: RuleKind
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    value: Any = None  # pattern / min length / $expr condition
    enforced_by: str = "database"


def _bound(
    cid: str,
    path: str,
    text: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Rule:
    return Rule(f"{cid}.{path}.range", text, path, "bound", lo, hi, lo_open)


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    origin: Origin
    fields: Mapping[str, T]
    indexes: tuple[Index, ...] = ()
    rules: tuple[Rule, ...] = ()
    timeseries: TimeSeries | None = None
    expire_after_s: int | None = None  # collection option (time-series retention)
    retention: str = "Permanent"
    #: Indexes this daemon adds beyond the spec's (built and verified like the spec's).
    own_indexes: tuple[Index, ...] = ()

    def field_type(self, path: str) -> T:
        t = T("object", fields=self.fields)
        for part in path.split("."):
            assert t.fields is not None, path
            t = t.fields[part]
        return t


# --- 1-10: fully specified ---------------------------------------------------------------------

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

USERS = Collection(
    "users",
    "spec",
    dict(
        _id=OID,
        email=STR,
        password_hash=STR,
        full_name=STR.null,
        is_active=BOOL,
        is_admin=BOOL,
        created_at=DATE,
        updated_at=DATE,
        last_login=DATE.null,
        settings=_obj(
            trading_enabled=BOOL,
            risk_level=_enum("Low", "Medium", "High"),
            max_positions=NUM,
            default_quantity=NUM,
            notifications=_obj(email_alerts=BOOL, trade_notifications=BOOL, system_alerts=BOOL),
        ),
    ),
    (
        _ix(("email", 1), unique=True),
        _ix(("created_at", -1)),
        _ix(("is_active", 1)),
    ),
    (
        Rule(
            "users.email.format",
            "Must be valid email format, unique",
            "email",
            "pattern",
            value=_EMAIL,
        ),
        Rule("users.email.unique", "Must be valid email format, unique", "email", "unique"),
        Rule(
            "users.password_hash.min_length",
            "Minimum 60 characters (bcrypt)",
            "password_hash",
            "min_length",
            value=60,
        ),
        _bound("users", "settings.max_positions", "Range 1-10", 1, 10),
        _bound("users", "settings.default_quantity", "Positive number > 0", 0, lo_open=True),
    ),
)

TRADES = Collection(
    "trades",
    "spec",
    dict(
        _id=OID,
        user_id=OID,
        symbol=STR,
        side=_enum("BUY", "SELL"),
        order_type=_enum("MARKET", "LIMIT", "STOP_LOSS", "TAKE_PROFIT"),
        quantity=DEC,
        price=DEC.null,
        executed_price=DEC.null,
        status=_enum("PENDING", "FILLED", "PARTIALLY_FILLED", "CANCELLED", "FAILED"),
        binance_order_id=STR.null,
        client_order_id=STR,
        time_in_force=_enum("GTC", "IOC", "FOK"),
        pnl=DEC.null,
        pnl_percentage=NUM.null,
        fees=DEC,
        fee_asset=STR,
        strategy_name=STR.null,
        ai_signal_id=STR.null,
        ai_confidence=NUM.null,
        created_at=DATE,
        updated_at=DATE,
        executed_at=DATE.null,
        cancelled_at=DATE.null,
        metadata=_obj(ip_address=STR, user_agent=STR, notes=STR.null),
    ),
    (
        _ix(("user_id", 1), ("created_at", -1)),
        _ix(("symbol", 1), ("created_at", -1)),
        _ix(("status", 1)),
        _ix(("binance_order_id", 1), sparse=True),
        _ix(("ai_signal_id", 1), sparse=True),
        _ix(("created_at", 1), ttl=31_536_000),
    ),
    (
        _bound("trades", "quantity", "Must be positive Decimal128", 0, lo_open=True),
        Rule("trades.status.enum", "Must be valid enum value", "status", "type"),
        _bound("trades", "pnl_percentage", "Range -100 to infinity", -100),
        _bound("trades", "fees", "Non-negative Decimal128", 0),
        _bound("trades", "ai_confidence", "AI confidence score (0-1)", 0, 1),
    ),
    retention="1 year",
)

POSITIONS = Collection(
    "positions",
    "spec",
    dict(
        _id=OID,
        user_id=OID,
        symbol=STR,
        side=_enum("LONG", "SHORT"),
        entry_price=DEC,
        current_price=DEC,
        quantity=DEC,
        leverage=NUM,
        stop_loss=DEC.null,
        take_profit=DEC.null,
        liquidation_price=DEC.null,
        unrealized_pnl=DEC,
        realized_pnl=DEC,
        total_pnl=DEC,
        pnl_percentage=NUM,
        margin_type=_enum("cross", "isolated"),
        margin_used=DEC,
        maintenance_margin=DEC,
        margin_ratio=NUM,
        total_fees=DEC,
        funding_fees=DEC,
        strategy_name=STR.null,
        ai_signal_id=STR.null,
        opened_at=DATE,
        updated_at=DATE,
        last_price_update=DATE,
        metadata=_obj(
            max_favorable_excursion=DEC,
            max_adverse_excursion=DEC,
            entry_volatility=NUM,
            risk_score=NUM,
        ),
    ),
    (
        _ix(("user_id", 1), ("symbol", 1)),
        _ix(("symbol", 1), ("opened_at", -1)),
        _ix(("margin_ratio", 1)),
        _ix(("updated_at", -1)),
    ),
    (
        _bound("positions", "quantity", "Must be positive", 0, lo_open=True),
        _bound("positions", "leverage", "Range 1-125", 1, 125),
        Rule(
            "positions.margin_ratio.alert",
            "Should trigger alerts below 1.5",
            "margin_ratio",
            "elsewhere",
            enforced_by="application: the positions loop (positions.alert_below)",
        ),
        Rule(
            "positions.liquidation_price.leveraged",
            "Must be calculated for leveraged positions",
            "liquidation_price",
            "expr",
            value={
                "$or": [
                    {"$lte": ["$leverage", 1]},
                    {"$eq": [{"$type": "$liquidation_price"}, "decimal"]},
                ]
            },
        ),
        _bound("positions", "metadata.risk_score", "Risk assessment (0-1)", 0, 1),
    ),
    retention="Until closed",
    # the positions loop's pending margin-alert mark (ingestor/positions/pipeline.py)
    own_indexes=(_ix(("margin_alert_pending", 1), sparse=True),),
)

_CANDLE_CHECK = (
    "ingestor.validate: every REST row and websocket kline (a time-series collection has no "
    "validator)"
)

MARKET_DATA = Collection(
    "market_data",
    "spec",
    dict(
        _id=OID,
        symbol=STR,
        timeframe=_enum("1m", "5m", "15m", "1h", "4h", "1d"),
        open_time=DATE,
        close_time=DATE,
        open_price=DEC,
        high_price=DEC,
        low_price=DEC,
        close_price=DEC,
        volume=DEC,
        quote_volume=DEC,
        trades_count=NUM,
        taker_buy_base_volume=DEC,
        taker_buy_quote_volume=DEC,
        indicators=_obj(
            rsi_14=NUM.null,
            macd=NUM.null,
            macd_signal=NUM.null,
            bollinger_upper=DEC.null,
            bollinger_middle=DEC.null,
            bollinger_lower=DEC.null,
            ema_20=DEC.null,
            sma_50=DEC.null,
        ),
        created_at=DATE,
        source=STR,
    ),
    (
        _ix(("symbol", 1), ("timeframe", 1), ("open_time", -1)),
        _ix(("symbol", 1), ("timeframe", 1), ("close_time", -1)),
        _ix(("open_time", 1), ttl=7_776_000),
    ),
    tuple(
        Rule(f"market_data.{rid}", text, path, "elsewhere", enforced_by=_CANDLE_CHECK)
        for rid, text, path in (
            ("high_low", "`high_price` >= `low_price`", "high_price"),
            ("high_open_close", "`high_price` >= `open_price` and `close_price`", "high_price"),
            ("low_open_close", "`low_price` <= `open_price` and `close_price`", "low_price"),
            ("volumes", "`volume` and `quote_volume` must be non-negative", "volume"),
        )
    ),
    TimeSeries("open_time", "symbol", "minutes"),
    expire_after_s=7_776_000,
    retention="90 days",
)

AI_ANALYSIS_RESULTS = Collection(
    "ai_analysis_results",
    "spec",
    dict(
        _id=OID,
        analysis_id=STR,
        symbol=STR,
        timeframe=STR,
        signal=_enum("BUY", "SELL", "HOLD", "NEUTRAL"),
        signal_strength=_enum("STRONG", "MODERATE", "WEAK"),
        confidence=NUM,
        reasoning=STR,
        entry_price=DEC.null,
        stop_loss=DEC.null,
        take_profit=DEC.null,
        position_size=NUM.null,
        risk_reward_ratio=NUM.null,
        market_analysis=_obj(
            trend_direction=STR,
            trend_strength=NUM,
            volatility=NUM,
            volume_trend=STR,
            support_levels=_arr(DEC),
            resistance_levels=_arr(DEC),
            risk_score=NUM,
        ),
        indicators=_obj(
            rsi=NUM.null,
            macd=NUM.null,
            adx=NUM.null,
            bollinger_position=NUM.null,
            volume_ratio=NUM.null,
            moving_averages=_obj(sma_20=DEC.null, ema_50=DEC.null, ema_200=DEC.null),
        ),
        model_metadata=_obj(
            model_name=STR,
            model_version=STR,
            processing_time_ms=NUM,
            tokens_used=NUM.null,
            temperature=NUM.null,
        ),
        timestamp=DATE,
        created_at=DATE,
        expires_at=DATE.null,
        executed=BOOL,
        trade_id=STR.null,
        performance=_obj(
            outcome=_enum("WIN", "LOSS", "BREAKEVEN").null,
            actual_pnl=DEC.null,
            signal_accuracy=NUM.null,
        ),
    ),
    (
        _ix(("symbol", 1), ("timestamp", -1)),
        _ix(("signal", 1), ("confidence", -1)),
        _ix(("executed", 1)),
        _ix(("trade_id", 1), sparse=True),
        _ix(("created_at", 1), ttl=2_592_000),
    ),
    (
        _bound("ai_analysis_results", "confidence", "Range 0.0-1.0", 0, 1),
        _bound(
            "ai_analysis_results", "risk_reward_ratio", "Must be positive if set", 0, lo_open=True
        ),
        _bound("ai_analysis_results", "position_size", "Range 0-100", 0, 100),
        Rule(
            "ai_analysis_results.signal_strength.enum",
            "Must be valid enum",
            "signal_strength",
            "type",
        ),
        _bound("ai_analysis_results", "market_analysis.trend_strength", "0-100", 0, 100),
        _bound("ai_analysis_results", "market_analysis.volatility", "0-100", 0, 100),
        _bound(
            "ai_analysis_results", "market_analysis.risk_score", "0-100 (higher = riskier)", 0, 100
        ),
    ),
    retention="30 days",
)

PORTFOLIO_SNAPSHOTS = Collection(
    "portfolio_snapshots",
    "spec",
    dict(
        _id=OID,
        user_id=OID,
        total_value=DEC,
        cash_balance=DEC,
        positions_value=DEC,
        margin_used=DEC,
        free_margin=DEC,
        unrealized_pnl=DEC,
        realized_pnl=DEC,
        daily_pnl=DEC,
        total_pnl=DEC,
        total_pnl_percentage=NUM,
        open_positions_count=NUM,
        long_positions_count=NUM,
        short_positions_count=NUM,
        portfolio_leverage=NUM,
        max_drawdown=DEC,
        max_drawdown_percentage=NUM,
        var_95=DEC.null,
        sharpe_ratio=NUM.null,
        snapshot_time=DATE,
        created_at=DATE,
    ),
    (
        _ix(("user_id", 1), ("snapshot_time", -1)),
        _ix(("snapshot_time", -1)),
        _ix(("created_at", 1), ttl=7_776_000),
    ),
    retention="90 days",
)

PAPER_TRADING_ACCOUNTS = Collection(
    "paper_trading_accounts",
    "spec",
    dict(
        _id=OID,
        user_id=OID,
        initial_balance=DEC,
        current_balance=DEC,
        equity=DEC,
        margin_used=DEC,
        free_margin=DEC,
        metrics=_obj(
            total_trades=NUM,
            winning_trades=NUM,
            losing_trades=NUM,
            win_rate=NUM,
            total_pnl=DEC,
            total_pnl_percentage=NUM,
            average_win=DEC,
            average_loss=DEC,
            largest_win=DEC,
            largest_loss=DEC,
            profit_factor=NUM,
            sharpe_ratio=NUM,
            max_drawdown=DEC,
            max_drawdown_percentage=NUM,
            max_consecutive_wins=NUM,
            max_consecutive_losses=NUM,
            average_trade_duration_ms=NUM,
            shortest_trade_ms=NUM,
            longest_trade_ms=NUM,
        ),
        open_positions=NUM,
        open_trade_ids=_arr(STR),
        settings=_obj(
            max_leverage=NUM,
            max_positions=NUM,
            default_quantity=DEC,
            trading_fees_rate=NUM,
            enable_ai_trading=BOOL,
            risk_per_trade=NUM,
        ),
        created_at=DATE,
        updated_at=DATE,
        last_trade_at=DATE.null,
        reset_at=DATE.null,
    ),
    (
        _ix(("user_id", 1), unique=True),
        _ix(("metrics.total_pnl", -1)),
        _ix(("metrics.win_rate", -1)),
    ),
    (_bound("paper_trading_accounts", "metrics.win_rate", "Percentage (0-100)", 0, 100),),
)

PAPER_TRADING_TRADES = Collection(
    "paper_trading_trades",
    "spec",
    dict(
        _id=OID,
        trade_id=STR,
        user_id=OID,
        account_id=OID,
        symbol=STR,
        trade_type=_enum("LONG", "SHORT"),
        status=_enum("OPEN", "CLOSED", "CANCELLED"),
        entry_price=DEC,
        quantity=DEC,
        leverage=NUM,
        initial_margin=DEC,
        exit_price=DEC.null,
        close_reason=_enum("TAKE_PROFIT", "STOP_LOSS", "MANUAL", "AI_SIGNAL", "MARGIN_CALL").null,
        pnl=DEC.null,
        pnl_percentage=NUM,
        unrealized_pnl=DEC,
        trading_fees=DEC,
        funding_fees=DEC,
        total_fees=DEC,
        stop_loss=DEC.null,
        take_profit=DEC.null,
        max_favorable_excursion=DEC,
        max_adverse_excursion=DEC,
        ai_signal_id=STR.null,
        ai_confidence=NUM.null,
        ai_reasoning=STR.null,
        open_time=DATE,
        close_time=DATE.null,
        duration_ms=NUM.null,
        created_at=DATE,
        updated_at=DATE,
    ),
    (
        _ix(("trade_id", 1), unique=True),
        _ix(("user_id", 1), ("created_at", -1)),
        _ix(("account_id", 1), ("status", 1)),
        _ix(("symbol", 1), ("created_at", -1)),
        _ix(("status", 1)),
        _ix(("ai_signal_id", 1), sparse=True),
    ),
    (_bound("paper_trading_trades", "leverage", "Leverage used (1-125)", 1, 125),),
    retention="Permanent (user-controlled reset)",
)

AUDIT_LOGS = Collection(
    "audit_logs",
    "spec",
    dict(
        _id=OID,
        user_id=OID.null,
        action=STR,
        resource=STR,
        resource_id=STR.null,
        method=STR.null,
        endpoint=STR.null,
        ip_address=STR,
        user_agent=STR.null,
        status=_enum("SUCCESS", "FAILURE", "ERROR"),
        error_message=STR.null,
        metadata=OBJ,
        timestamp=DATE,
        created_at=DATE,
    ),
    (
        _ix(("user_id", 1), ("timestamp", -1)),
        _ix(("action", 1), ("timestamp", -1)),
        _ix(("resource", 1), ("resource_id", 1)),
        _ix(("ip_address", 1)),
        _ix(("timestamp", -1)),
        _ix(("created_at", 1), ttl=15_552_000),
    ),
    retention="180 days",
)

SYSTEM_CONFIG = Collection(
    "system_config",
    "spec",
    dict(
        _id=OID,
        key=STR,
        value=ANY,
        category=STR,
        description=STR,
        is_active=BOOL,
        updated_by=STR,
        updated_at=DATE,
        created_at=DATE,
    ),
    (_ix(("key", 1), unique=True), _ix(("category", 1))),
)

# --- 11-17: described briefly; minimal schemas defined here (the README's schema section) ------

PAPER_TRADING_SETTINGS = Collection(
    "paper_trading_settings",
    "brief",
    {"_id": OID, "user_id": OID.null, "settings": OBJ, "created_at": DATE.opt, "updated_at": DATE},
    (_ix(("user_id", 1), ("updated_at", -1)),),
)

PORTFOLIO_HISTORY = Collection(
    "portfolio_history",
    "brief",
    {
        "_id": OID,
        "account_id": OID,
        "timestamp": DATE,
        "user_id": OID.opt,
        "equity": DEC.opt,
        "current_balance": DEC.opt,
        "unrealized_pnl": DEC.opt,
    },
    (_ix(("account_id", 1), ("timestamp", -1)),),
    timeseries=TimeSeries("timestamp", "account_id", "minutes"),
    retention="Permanent (user-controlled reset)",
)

AI_SIGNALS = Collection(
    "ai_signals",
    "brief",
    {
        "_id": OID,
        "signal_id": STR,
        "analysis_id": STR.null,
        "symbol": STR,
        "signal": _enum("BUY", "SELL", "HOLD", "NEUTRAL").opt,
        "confidence": NUM.null,
        "status": STR,
        "trade_id": STR.null,
        "created_at": DATE,
        "updated_at": DATE.opt,
    },
    (
        _ix(("signal_id", 1)),
        _ix(("symbol", 1), ("created_at", -1)),
        _ix(("status", 1)),
    ),
)

PERFORMANCE_METRICS = Collection(
    "performance_metrics",
    "brief",
    {"_id": OID, "user_id": OID, "date": DATE, "metrics": OBJ, "created_at": DATE.opt},
    (_ix(("user_id", 1), ("date", -1), unique=True), _ix(("date", -1))),
)

NOTIFICATIONS = Collection(
    "notifications",
    "brief",
    {
        "_id": OID,
        "user_id": OID.null,
        "type": STR,
        "severity": STR.opt,
        "title": STR.opt,
        "message": STR,
        "read": BOOL.opt,
        "created_at": DATE,
    },
    (
        _ix(("user_id", 1), ("read", 1), ("created_at", -1)),
        _ix(("created_at", 1), ttl=604_800),
    ),
    retention="7 days",
)

SESSIONS = Collection(
    "sessions",
    "brief",
    {
        "_id": OID,
        "user_id": OID,
        "token_hash": STR,
        "created_at": DATE,
        "expires_at": DATE,
        "last_seen_at": DATE.opt,
        "ip_address": STR.opt,
        "user_agent": STR.opt,
    },
    (
        _ix(("token_hash", 1), unique=True),
        _ix(("user_id", 1)),
        _ix(("expires_at", 1), ttl=0),
    ),
    retention="Until expires_at",
)

API_KEYS = Collection(
    "api_keys",
    "brief",
    {
        "_id": OID,
        "user_id": OID,
        "exchange": STR,
        "label": STR.opt,
        "api_key": STR,
        "api_secret_encrypted": BIN,
        "created_at": DATE,
        "updated_at": DATE.opt,
    },
    (_ix(("user_id", 1), ("exchange", 1)),),
)

# --- not in the spec: the daemon's quarantine (ingestor/rejects.py) ------------------------------

MARKET_DATA_REJECTS = Collection(
    "market_data_rejects",
    "ingestor",
    {"_id": OID, "raw": STR, "reason": STR, "detail": STR, "stream": STR.null, "received_at": DATE},
    (
        _ix(("received_at", 1), ttl=7 * 86_400),
        _ix(("reason", 1), ("received_at", -1)),
    ),
    retention="7 days",
)

COLLECTIONS: tuple[Collection, ...] = (
    USERS,
    TRADES,
    POSITIONS,
    MARKET_DATA,
    AI_ANALYSIS_RESULTS,
    PORTFOLIO_SNAPSHOTS,
    PAPER_TRADING_ACCOUNTS,
    PAPER_TRADING_TRADES,
    AUDIT_LOGS,
    SYSTEM_CONFIG,
    PAPER_TRADING_SETTINGS,
    PORTFOLIO_HISTORY,
    AI_SIGNALS,
    PERFORMANCE_METRICS,
    NOTIFICATIONS,
    SESSIONS,
    API_KEYS,
    MARKET_DATA_REJECTS,
)


def by_name(name: str) -> Collection:
    for c in COLLECTIONS:
        if c.name == name:
            return c
    raise KeyError(name)


# --- builders ----------------------------------------------------------------------------------


def _schema(t: T) -> dict[str, Any]:
    bson: Any = [t.bson, "null"] if t.nullable else t.bson
    out: dict[str, Any] = {"bsonType": bson}
    if t.enum:
        out["enum"] = [*t.enum, None] if t.nullable else list(t.enum)
    if t.fields is not None:
        out.update(_object(t.fields))
    if t.items is not None:
        out["items"] = _schema(t.items)
    return out


def _object(fields: Mapping[str, T]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fields:
        required = [k for k, t in fields.items() if t.required and k != "_id"]
        if required:
            out["required"] = required
        # ``any`` (system_config.value) is required but has no property schema at all.
        out["properties"] = {k: _schema(t) for k, t in fields.items() if t.bson != "any"}
    return out


def _walk(props: dict[str, Any], path: str) -> dict[str, Any]:
    node: dict[str, Any] = {"properties": props}
    for part in path.split("."):
        node = node["properties"][part]
    return node


def _expr_bound(rule: Rule) -> list[dict[str, Any]]:
    ref = f"${rule.path}"
    out: list[dict[str, Any]] = []
    if rule.lo is not None:
        out.append({"$gt" if rule.lo_open else "$gte": [ref, rule.lo]})
    if rule.hi is not None:
        out.append({"$lte": [ref, rule.hi]})
    return out


def validator(coll: Collection) -> dict[str, Any] | None:
    """The collection's validator; None for a time-series collection (MongoDB refuses one)."""
    if coll.timeseries is not None:
        return None
    schema: dict[str, Any] = {"bsonType": "object", **_object(coll.fields)}
    exprs: list[dict[str, Any]] = []
    for rule in coll.rules:
        if rule.kind == "expr":
            exprs.append(rule.value)
        elif rule.kind == "bound" and coll.field_type(rule.path).bson == "decimal":
            exprs.extend(_expr_bound(rule))
        elif rule.kind == "bound":
            node = _walk(schema["properties"], rule.path)
            if rule.lo is not None:
                node["minimum"] = rule.lo
                if rule.lo_open:
                    node["exclusiveMinimum"] = True
            if rule.hi is not None:
                node["maximum"] = rule.hi
        elif rule.kind == "pattern":
            _walk(schema["properties"], rule.path)["pattern"] = rule.value
        elif rule.kind == "min_length":
            _walk(schema["properties"], rule.path)["minLength"] = rule.value
    out: dict[str, Any] = {"$jsonSchema": schema}
    if exprs:
        out["$expr"] = {"$and": exprs}
    return out


@dataclass(frozen=True, slots=True)
class Realized:
    """What MongoDB can build for a collection, and how spec items were mapped to get there."""

    indexes: tuple[Index, ...]
    expire_after_s: int | None
    notes: tuple[str, ...] = field(default=())


def realize(coll: Collection) -> Realized:
    """The spec's indexes as MongoDB can build them.

    On a time-series collection MongoDB refuses a TTL index on the time field and any unique
    index. The first becomes the collection's ``expireAfterSeconds`` (same retention, enforced per
    bucket); a unique index is built non-unique and noted (uniqueness cannot be enforced there).
    """
    ts = coll.timeseries
    if ts is None:
        return Realized(coll.indexes + coll.own_indexes, coll.expire_after_s)
    indexes: list[Index] = []
    notes: list[str] = []
    expire = coll.expire_after_s
    for ix in coll.indexes + coll.own_indexes:
        if ix.expire_after_s is not None:
            if ix.keys != ((ts.time_field, 1),):
                raise ValueError(f"{coll.name}: TTL index {ix} is not on the time field")
            if expire is not None and expire != ix.expire_after_s:
                raise ValueError(f"{coll.name}: TTL index {ix} != expireAfterSeconds {expire}")
            expire = ix.expire_after_s
            notes.append(f"TTL index {ix} -> collection option expireAfterSeconds: {expire}")
            continue
        if ix.unique:
            ix = replace(ix, unique=False)
            notes.append(f"unique index {ix} built non-unique (time-series collection)")
        indexes.append(ix)
    return Realized(tuple(indexes), expire, tuple(notes))


def iter_rules() -> Iterator[tuple[Collection, Rule]]:
    for c in COLLECTIONS:
        for r in c.rules:
            yield c, r
