"""bot-core ingestor: Binance kline streams -> closed candles + indicators -> MongoDB.

A candle's path, one module each::

    feed/        websocket connections (combined streams), reconnects, raw frames
    decode       frames -> closed-kline columns (bad frames -> rejects)
    batch        size-or-linger batching of columns
    enrich       indicator state per stream (indicators/ does the math)
    store/       BSON documents, bulk insert, watermarks
    service      the supervisor owning every task; cli is a thin shell around it
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
