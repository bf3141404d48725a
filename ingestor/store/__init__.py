"""Store: candle columns -> MongoDB documents -> bulk inserts, watermarks, schema."""
