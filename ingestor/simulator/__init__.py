"""A Binance-spot-compatible exchange for tests and the offline demo.

``market`` is the pure model (clock, deterministic klines), ``server`` the aiohttp exchange
(websocket streams + REST + admin), ``faults`` the failure knobs, ``replay`` CSV loading and
``cli`` the ``ingestor simulate`` command.
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
