"""Fault knobs, the malformed frames the simulator can inject, and the disconnect schedule.

The knobs live in one mutable dataclass shared by the server loops, so a test can change them
on a live simulator (directly, or over ``POST /_sim/faults``) and the next frame obeys.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import orjson

__all__ = ["GARBAGE_KINDS", "FaultConfig", "disconnect_schedule", "garbage_frame"]


@dataclass(slots=True)
class FaultConfig:
    """What goes wrong, and how often. Probabilities are per delivery, in [0, 1]."""

    disconnect_every_s: float | None = None  # abort every websocket every N real seconds
    repeat_final_p: float = 0.0  # a final (x:true) event is sent twice
    drop_final_p: float = 0.0  # a final event is not sent (REST still has the kline)
    garbage_p: float = 0.0  # a malformed frame is sent before a real one
    rest_delay_s: float = 0.0  # added latency on every /api/v3 response
    rest_429_p: float = 0.0  # a /api/v3 request is answered 429 regardless of weight
    rest_429_retry_after_s: int = 1  # Retry-After of those forced 429s
    # JSON values appended to every /api/v3/klines answer that has room for them under its
    # limit: rows a broken exchange might send (short, mistyped, NaN, far in the future, ...)
    rest_extra_rows: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial JSON update; unknown names or bad values raise ValueError, leaving
        the config unchanged."""
        trial = copy.copy(self)
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise ValueError(f"unknown fault {name!r}")
            if name == "disconnect_every_s":
                if value is not None and (not _is_number(value) or value <= 0):
                    raise ValueError("disconnect_every_s must be null or > 0")
                setattr(trial, name, None if value is None else float(value))
            elif name == "rest_429_retry_after_s":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError("rest_429_retry_after_s must be an int >= 0")
                setattr(trial, name, value)
            elif name == "rest_extra_rows":
                if not isinstance(value, list):
                    raise ValueError("rest_extra_rows must be a list")
                setattr(trial, name, list(value))
            elif name == "rest_delay_s":
                if not _is_number(value) or value < 0:
                    raise ValueError("rest_delay_s must be >= 0")
                setattr(trial, name, float(value))
            else:
                if not _is_number(value) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name} must be a probability in [0, 1]")
                setattr(trial, name, float(value))
        for f in fields(self):
            setattr(self, f.name, getattr(trial, f.name))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


#: The kinds of malformed frame ``garbage_frame`` produces.
GARBAGE_KINDS: tuple[str, ...] = ("not_json", "missing_field", "wrong_type", "high_below_low")


def garbage_frame(event: dict[str, Any], stream: str | None, rng: random.Random) -> str:
    """A malformed variant of a real kline event (wrapped for combined streams if ``stream``)."""
    kind = rng.choice(GARBAGE_KINDS)
    if kind == "not_json":
        return rng.choice(['{"stream":"', "<html>502 Bad Gateway</html>", "\x00\x01garbage", "]"])
    bad = copy.deepcopy(event)
    k = bad["k"]
    if kind == "missing_field":
        del k[rng.choice(["t", "c", "x", "v", "h"])]
    elif kind == "wrong_type":
        field_name = rng.choice(["t", "x", "n", "c"])
        k[field_name] = {"t": str(k["t"]), "x": "true", "n": str(k["n"]), "c": 1.5}[field_name]
    else:  # high_below_low: a kline violating high >= low
        k["h"], k["l"] = k["l"], k["h"]
        if k["h"] == k["l"]:
            k["l"] = k["h"] + "1"
    payload = {"stream": stream, "data": bad} if stream is not None else bad
    return orjson.dumps(payload).decode()


async def disconnect_schedule(
    faults: FaultConfig, time_source: Callable[[], float], disconnect_all: Callable[[], object]
) -> None:
    """Call ``disconnect_all`` every ``faults.disconnect_every_s`` real seconds until cancelled;
    a changed knob restarts the count, so a test's first drop comes a full period after it."""
    last = time_source()
    armed: float | None = None
    while True:
        await asyncio.sleep(0.02)
        every = faults.disconnect_every_s
        if every != armed:
            armed, last = every, time_source()
        if every is not None and time_source() - last >= every:
            last = time_source()
            disconnect_all()
