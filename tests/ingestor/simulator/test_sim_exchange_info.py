"""The exchangeInfo document built from the packaged ``exchange_info.json``: every field the
data leaves open is filled, for every symbol the simulator knows."""

from __future__ import annotations

from importlib import resources
from typing import Any

from ingestor.simulator.exchange_info import exchange_info
from ingestor.simulator.market import DEFAULT_SYMBOLS


def nulls(value: Any, path: str = "") -> list[str]:
    """Paths of every null in a JSON value."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


def test_data_ships_as_package_data() -> None:
    assert resources.files("ingestor.simulator").joinpath("exchange_info.json").is_file()


def test_every_open_field_is_filled_per_run_and_symbol() -> None:
    info = exchange_info((*DEFAULT_SYMBOLS, "ETHBTC"), 1_767_225_600_000, 1234)
    assert nulls(info) == []
    assert info["rateLimits"][0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 1234,
    }
    eth_btc = info["symbols"][-1]
    assert (eth_btc["baseAsset"], eth_btc["quoteAsset"]) == ("ETH", "BTC")
    again = exchange_info(["BTCUSDT"], 0, 1)  # the data is copied, never edited in place
    assert again["symbols"][0] == info["symbols"][0] and again["rateLimits"][0]["limit"] == 1
