"""The lock files agree with pyproject.toml (offline: ``packaging`` only).

``requirements-dev.lock`` is what ``make install`` installs (extras dev + embedded),
``requirements.lock`` what the production image installs (no extras), both with hashes and at the
same versions. A dependency added, removed or re-bounded in pyproject without ``make lock`` fails
here, in CI."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SELF = f"{PROJECT['name']} (pyproject.toml)"
#: The platform the locks are for (Makefile `lock`): CPython 3.12 on Linux x86_64.
ENV: dict[str, str] = {
    **{k: str(v) for k, v in default_environment().items()},
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


@dataclass
class Pin:
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def _parse(text: str) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in text.splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = pins.setdefault(canonicalize_name(m[1]), Pin(m[2]))
        elif current is not None and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.append(h[1])
        elif (
            current is not None
            and (v := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line))
            and v[1].strip() != "via"
        ):
            current.via.append(v[1].strip())
    return pins


def _direct(extras: tuple[str, ...]) -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return {
        canonicalize_name(r.name): r for r in reqs if r.marker is None or r.marker.evaluate(ENV)
    }


LOCKS = {"requirements-dev.lock": ("dev", "embedded"), "requirements.lock": ()}


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_the_lock_pins_exactly_what_pyproject_asks(lock: str, extras: tuple[str, ...]) -> None:
    text = (REPO / lock).read_text()
    assert "make lock" in text.splitlines()[1]  # regenerated the documented way
    pins = _parse(text)
    direct = _direct(extras)
    for name, req in direct.items():
        assert name in pins, f"{lock}: {req} is not locked; run `make lock`"
        assert req.specifier.contains(pins[name].version, prereleases=True), (
            f"{lock}: {name}=={pins[name].version} does not satisfy {req}; run `make lock`"
        )
    locked_direct = {n for n, p in pins.items() if any(SELF in v for v in p.via)}
    assert locked_direct == set(direct), (
        f"{lock}: direct dependencies differ from pyproject.toml "
        f"(only in lock: {sorted(locked_direct - set(direct))}, "
        f"only in pyproject: {sorted(set(direct) - locked_direct)}); run `make lock`"
    )
    for name, pin in pins.items():
        assert pin.hashes, f"{lock}: {name} has no hash"


def test_production_runs_the_tested_versions_without_the_embedded_server() -> None:
    dev = _parse((REPO / "requirements-dev.lock").read_text())
    prod = _parse((REPO / "requirements.lock").read_text())
    assert "secantusdb" not in prod and "secantusdb" in dev
    for name, pin in prod.items():
        assert dev[name].version == pin.version, name
    assert tuple(int(x) for x in prod["aiohttp"].version.split(".")[:3]) >= (3, 14, 4)
