"""The collector issue 17 compares against: cryptofeed's Binance candles feed, closed candles
only, into its own MongoDB backend, pointed at the simulator.

Run by ``bench/service_bench.py`` with the interpreter named in ``BENCH_CRYPTOFEED_PYTHON`` (a
separate venv: ``pip install cryptofeed==2.5.0 motor``). It is not a dependency of this project:
its MongoDB backend uses Motor. argv: websocket URL, REST URL, number of symbols (``S0000USDT``
onwards, as the bench's simulator lists them), the database's port.

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

TIMEFRAMES = ("1m", "5m")  # bench.service_bench's


def main(ws_url: str, rest_url: str, symbols: int, port: int) -> None:
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
    for interval in TIMEFRAMES:
        handler.add_feed(
            SimBinance(
                symbols=[f"S{i:04d}-USDT" for i in range(symbols)],
                channels=[CANDLES],
                candle_interval=interval,
                candle_closed_only=True,
                callbacks={CANDLES: CandlesMongo("bench_cryptofeed", host="127.0.0.1", port=port)},
            )
        )
    handler.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
