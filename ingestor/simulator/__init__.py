"""A Binance-spot-compatible exchange for tests and the offline demo.

``market`` is the pure model (clock, deterministic klines); ``server`` composes the aiohttp
exchange from ``streams`` (websocket connections and delivery), ``ticker`` (the market clock's
loop), ``rest`` and ``throttle`` (``/api/v3`` and its weight limit), ``exchange_info`` (its data
in ``exchange_info.json``) and ``admin`` (``/_sim/`` controls), configured by ``config`` and
counted in ``stats``; ``faults`` holds the failure knobs, ``replay`` CSV loading and ``cli`` the
``ingestor simulate`` command.
"""

from ingestor.simulator.faults import FaultConfig
from ingestor.simulator.market import DEFAULT_SYMBOLS, Market, SimClock
from ingestor.simulator.server import SimConfig, SimStats, Simulator, serve_until

__all__ = [
    "DEFAULT_SYMBOLS",
    "FaultConfig",
    "Market",
    "SimClock",
    "SimConfig",
    "SimStats",
    "Simulator",
    "serve_until",
]
