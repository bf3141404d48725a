"""exchange.ws_client: each name maps to its FeedConnection class; a client that is not
installed is a config error naming the fix, not a crash of the feed at start."""

from __future__ import annotations

import importlib.util

import pytest

from ingestor.feed.clients import WS_CLIENTS, check_ws_client, connection_class
from ingestor.feed.connection import FeedConnection


@pytest.mark.parametrize("name", WS_CLIENTS)
def test_each_client_is_a_feed_connection(name: str) -> None:
    assert check_ws_client(name) == name
    assert issubclass(connection_class(name), FeedConnection)


def test_unknown_or_missing_clients_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="must be one of websockets, picows"):
        check_ws_client("aiohttp")
    with pytest.raises(ValueError, match="unknown websocket client"):
        connection_class("aiohttp")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "picows" else real(name, *a),
    )
    with pytest.raises(ValueError, match=r"picows is not installed \(pip install picows\)"):
        check_ws_client("picows")
