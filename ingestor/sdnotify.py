"""systemd's ``sd_notify`` protocol without libsystemd: datagrams on ``$NOTIFY_SOCKET``.

``Type=notify`` units wait for ``READY=1``; with ``WatchdogSec=`` systemd sets
``WATCHDOG_USEC`` and kills the service when ``WATCHDOG=1`` stops arriving. The watchdog pings
come from a task on the daemon's event loop, so a wedged loop (not only a dead process) gets
restarted. Everything is a no-op when ``NOTIFY_SOCKET`` is unset (a terminal, a container).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "notify"]

log = logging.getLogger(__name__)


class Notifier:
    """``Notifier()`` reads the environment once; ``notify("READY=1")`` sends one message."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        # '@' starts a name in Linux's abstract socket namespace, a leading NUL on the wire.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *states: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when sent, False when disabled/failed."""
        if not self.address:
            return False
        message = "\n".join(states).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    async def watchdog_loop(self) -> None:
        """Send ``WATCHDOG=1`` every ``WATCHDOG_USEC / 2`` until cancelled; returns at once if no
        watchdog is configured for this process."""
        if not self.address or self.watchdog_s is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds, or None when unset, invalid or meant for another
    process (``WATCHDOG_PID``)."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000


def notify(*states: str) -> bool:
    """One-shot ``sd_notify`` from the current environment."""
    return Notifier().notify(*states)
