"""bot-core ingestor: Binance kline streams -> closed candles + indicators -> MongoDB.

A candle's path, one module each::

    feed/connection  websocket connections (combined streams), reconnects, raw frames
    feed/picows_connection  the same on picows (exchange.ws_client; feed/clients chooses)
    decode           frames -> closed klines (bad frames -> rejects)
    validate         the candle rules, once, for websocket rows and REST pages alike
    history          every REST kline's one way: pages -> validate -> seeded indicators -> store
    gate             once, in order, no gap: sequence (watermarks), REST fills, batch, enrich
    store/spool      write-ahead journal -> store/writer (BSON, insert_many, exactly once)
    pipeline         what the main queue carries (typed), each stream's progress (Tracks)
    service          the supervisor owning every task, built from given parts; cli is a thin
                     shell around it
    assemble         the production Service's parts, made once from the configuration
    probe            what health and metrics read of the service's state (neither knows the other)
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
