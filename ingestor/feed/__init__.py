"""Feed: websocket connections to Binance combined kline streams."""
