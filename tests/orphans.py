"""Closing what PyMongo orphans: a socket left open by a server monitor cancelled mid-connect.

PyMongo 4.20's async client, closed while a monitor is still inside its TCP connect (the server
down, refusing or unreachable), cancels that connect without closing the socket
(PYTHON-5867): the socket stays referenced from the cancelled task's traceback until the
garbage collector breaks the cycle, at an arbitrary later moment. Its "unclosed socket"
ResourceWarning then fails whichever test happens to be running (CI at 9fb173a failed a
positions test this way). ``collect_orphaned_sockets`` runs after every test (tests/conftest.py),
so such a socket is closed where it was made and nowhere else.
"""

from __future__ import annotations

import gc
import warnings

__all__ = ["NEVER_CONNECTED", "collect_orphaned_sockets"]

#: The warning for a TCP socket that never got a peer (no ``raddr``): a connect cut short. Any
#: other unclosed socket is still an error.
NEVER_CONNECTED = (
    r"unclosed <socket\.socket fd=\d+, family=\d+, type=\d+, proto=6, laddr=\([^)]*\)>$"
)


def collect_orphaned_sockets() -> None:
    """One full collection, with the orphaned-connect warning (and only it) not repeated."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", NEVER_CONNECTED, ResourceWarning)
        gc.collect()
