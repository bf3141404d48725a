"""The collector issue 17 compares against: cryptofeed's Binance candles feed, closed candles
only, into its own MongoDB backend, pointed at the simulator.

Run by ``bench/service_bench.py`` with the interpreter named in ``BENCH_CRYPTOFEED_PYTHON`` (a
separate venv: ``pip install cryptofeed==2.5.0 motor``). It is not a dependency of this project:
its MongoDB backend uses Motor. argv: websocket URL, REST URL, the symbols (comma-separated,
each ending in ``USDT``), the timeframes (comma-separated), the database's port.

Two changes to cryptofeed, both outside its per-message path: its Binance endpoints are the
simulator's, and its websocket connection accepts the simulator's ``ws://`` (it insists on
``wss://``). One feed per timeframe (cryptofeed takes one candle interval per feed), both in
one ``FeedHandler``, as its docs show.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import cryptofeed.connection as connection
from cryptofeed import FeedHandler
from cryptofeed.backends.mongo import CandlesMongo
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import CANDLES
from cryptofeed.exchanges import Binance


def main(ws_url: str, rest_url: str, symbols: list[str], timeframes: list[str], port: int) -> None:
    init = connection.WSAsyncConn.__init__

    def plain_ws(self: Any, address: str, *args: Any, **kwargs: Any) -> None:
        init(self, address.replace("ws://", "wss://", 1), *args, **kwargs)
        self.address = address

    connection.WSAsyncConn.__init__ = plain_ws

    class SimBinance(Binance):  # type: ignore[misc]
        websocket_endpoints: ClassVar[list[Any]] = [WebsocketEndpoint(ws_url)]
        rest_endpoints: ClassVar[list[Any]] = [
            RestEndpoint(
                rest_url,
                routes=Routes(
                    "/api/v3/exchangeInfo",
                    l2book="/api/v3/depth?symbol={}&limit={}",
                    authentication="/api/v3/userDataStream",
                ),
            )
        ]

    handler = FeedHandler()
    pairs = [f"{s.removesuffix('USDT')}-USDT" for s in symbols]  # cryptofeed's own names
    for interval in timeframes:
        handler.add_feed(
            SimBinance(
                symbols=pairs,
                channels=[CANDLES],
                candle_interval=interval,
                candle_closed_only=True,
                callbacks={CANDLES: CandlesMongo("bench_cryptofeed", host="127.0.0.1", port=port)},
            )
        )
    handler.run()


if __name__ == "__main__":
    ws, rest, names, frames, port = sys.argv[1:]
    main(ws, rest, names.split(","), frames.split(","), int(port))
