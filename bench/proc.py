"""Process figures the benches report."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["peak_rss_mb"]


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak RSS (``VmHWM``) of ``pid``, or of this process image when None, in MB.

    ``ru_maxrss`` would include the parent's peak from before ``exec``: it is only this
    process's fallback where ``/proc`` has no ``VmHWM``; another pid without one is an error.
    """
    path = Path(f"/proc/{'self' if pid is None else pid}/status")
    try:
        text = path.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    raise RuntimeError(f"no VmHWM for pid {pid}")
