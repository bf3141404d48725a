"""The websocket client of the kline feed connections (``exchange.ws_client``).

Both keep every behaviour the feed tests prove; they differ in CPU per frame (docs/performance.md,
"Feed client (issue 17)"). picows is imported only when chosen.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingestor.feed.connection import FeedConnection

__all__ = ["WS_CLIENTS", "check_ws_client", "connection_class"]

#: ``exchange.ws_client`` values.
WS_CLIENTS = ("websockets", "picows")


def check_ws_client(name: str) -> str:
    """``name`` if it is a client this installation can run (config check: ValueError)."""
    if name not in WS_CLIENTS:
        raise ValueError(f"must be one of {', '.join(WS_CLIENTS)}")
    if importlib.util.find_spec(name) is None:
        raise ValueError(f"{name} is not installed (pip install {name})")
    return name


def connection_class(name: str) -> type[FeedConnection]:
    """The :class:`FeedConnection` class of client ``name`` (one of :data:`WS_CLIENTS`)."""
    if name == "picows":
        from ingestor.feed.picows_connection import PicowsFeedConnection

        return PicowsFeedConnection
    if name == "websockets":
        from ingestor.feed.connection import FeedConnection

        return FeedConnection
    raise ValueError(f"unknown websocket client {name!r} (one of {', '.join(WS_CLIENTS)})")
