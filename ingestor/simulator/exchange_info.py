"""The ``GET /api/v3/exchangeInfo`` document.

Binance spot's static shape lives in ``exchange_info.json`` (package data), so a long literal does
not crowd the code; the fields left ``null`` there vary per run or per symbol (the weight limit,
the assets, tick and step sizes) and are filled in here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson

from ingestor.simulator.market import profile_for

__all__ = ["exchange_info", "symbol_info"]

_DATA: dict[str, Any] = orjson.loads(
    resources.files("ingestor.simulator").joinpath("exchange_info.json").read_bytes()
)
#: Quote assets tried, in order, to split a symbol name into base and quote.
_QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "BTC", "ETH", "BNB")


def _dec8(text: str) -> str:
    return f"{float(text):.8f}"


def symbol_info(symbol: str) -> dict[str, Any]:
    """One ``symbols`` entry: assets split from the name, tick and step from its price profile."""
    prof = profile_for(symbol)
    quote = next((q for q in _QUOTES if symbol.endswith(q) and symbol != q), symbol[-4:])
    info: dict[str, Any] = copy.deepcopy(_DATA["symbol"])
    info.update(symbol=symbol, baseAsset=symbol[: -len(quote)], quoteAsset=quote)
    for f in info["filters"]:
        if f["filterType"] == "PRICE_FILTER":
            f["minPrice"] = f["tickSize"] = _dec8(prof.tick)
        elif f["filterType"] == "LOT_SIZE":
            f["minQty"] = f["stepSize"] = _dec8(prof.step)
    return info


def exchange_info(
    symbols: Iterable[str], server_time_ms: int, weight_limit_1m: int
) -> dict[str, Any]:
    """The whole answer, its keys in Binance's order."""
    rate_limits: list[dict[str, Any]] = copy.deepcopy(_DATA["rateLimits"])
    for limit in rate_limits:
        if limit["rateLimitType"] == "REQUEST_WEIGHT":
            limit["limit"] = weight_limit_1m
    return {
        "timezone": _DATA["timezone"],
        "serverTime": server_time_ms,
        "rateLimits": rate_limits,
        "exchangeFilters": copy.deepcopy(_DATA["exchangeFilters"]),
        "symbols": [symbol_info(s) for s in symbols],
    }
