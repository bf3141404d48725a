"""`make stress`: the whole test suite, round after round, with cores kept busy; every flake.

A test that passes alone but fails when the machine is busy depends on timing (a clock read
after an await, a fixed sleep, a deadline not scaled by TIMEOUT_FACTOR). This runs pytest
STRESS_ROUNDS times (default 5) while STRESS_BUSY processes (default 1) each spin a core, and
prints at the end: rounds run, wall time, and every test that failed at least once with its
failure message and the rounds it failed in. Exit 1 if any test failed (or a round broke).

    STRESS_ROUNDS=5 STRESS_BUSY=1 make stress
    STRESS_MINUTES=30 make stress                     (no new round starts after 30 minutes)
    STRESS_ARGS="tests/ingestor/simulator -x" make stress        (a subset; any pytest args)
    python scripts/stress.py --rounds 3 --busy 1 -- tests/ingestor/simulator

Each round's pytest output and JUnit XML stay in a temporary folder (or --out DIR), named in
the output. The running round is never cut short: a partial round reports nothing reliable.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Failure", "main", "parse_junit"]

REPO = Path(__file__).resolve().parents[1]
# Spins until its parent is gone: a stress run that is killed leaves no core busy behind it.
_SPIN = (
    "import os\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(1_000_000):\n"
    "        pass\n"
)


@dataclass(slots=True)
class Failure:
    """One test's failures over the rounds: message -> rounds it was seen in."""

    messages: dict[str, list[int]] = field(default_factory=dict)


def _nodeid(case: ET.Element) -> str:
    """pytest's node id from a JUnit ``testcase`` (xunit1: it carries the file)."""
    name = case.get("name", "?")
    classname = case.get("classname", "")
    file = case.get("file")
    if not file:
        return f"{classname}::{name}" if classname else name
    module = file.removesuffix(".py").replace("/", ".").replace("\\", ".")
    inner = classname.removeprefix(module).lstrip(".")
    return "::".join(p for p in (file, inner, name) if p)


def _message(node: ET.Element) -> str:
    """The failure's message, else the last line of its traceback text."""
    text = (node.get("message") or "").strip()
    if not text:
        lines = [ln for ln in (node.text or "").strip().splitlines() if ln.strip()]
        text = lines[-1].strip() if lines else node.tag
    return " ".join(text.split())[:500]


def parse_junit(path: Path) -> tuple[int, dict[str, str]]:
    """Number of test cases in a pytest JUnit file and the failed ones: node id -> message."""
    root = ET.parse(path).getroot()
    cases = 0
    failed: dict[str, str] = {}
    for case in root.iter("testcase"):
        cases += 1
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                failed.setdefault(_nodeid(case), f"{tag}: {_message(node)}")
    return cases, failed


def _spinners(count: int) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def _run_round(n: int, out: Path, pytest_args: list[str]) -> tuple[int, dict[str, str], float]:
    """One pytest run: (test cases, failures, seconds). A run without a report is a failure."""
    xml = out / f"round-{n}.xml"
    log = out / f"round-{n}.log"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
        "-o",
        "junit_family=xunit1",
        *pytest_args,
    ]
    start = time.monotonic()
    with log.open("wb") as sink:
        rc = subprocess.run(
            cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.monotonic() - start
    if not xml.exists():
        return 0, {f"<round {n}>": f"pytest exited {rc} without a report (see {log})"}, seconds
    cases, failed = parse_junit(xml)
    if rc not in (0, 1) or (rc == 1 and not failed) or (rc == 0 and failed):
        failed.setdefault(f"<round {n}>", f"pytest exited {rc} (see {log})")
    return cases, failed, seconds


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=_env_int("STRESS_ROUNDS", 5))
    p.add_argument(
        "--minutes",
        type=float,
        default=_env_float("STRESS_MINUTES"),
        help="start no new round after this much wall time",
    )
    p.add_argument("--busy", type=int, default=_env_int("STRESS_BUSY", 1), help="cores to spin")
    p.add_argument("--out", type=Path, default=None, help="keep logs and JUnit XML here")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (default: STRESS_ARGS)")
    ns = p.parse_args(argv)
    if ns.rounds < 1 or ns.busy < 0 or (ns.minutes is not None and ns.minutes <= 0):
        p.error("--rounds must be >= 1, --busy >= 0, --minutes > 0")
    if not ns.pytest_args:
        ns.pytest_args = shlex.split(os.environ.get("STRESS_ARGS", ""))
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = _args(argv)
    out: Path = ns.out or Path(tempfile.mkdtemp(prefix="stress-"))
    out.mkdir(parents=True, exist_ok=True)
    args = " ".join(ns.pytest_args) or "(whole suite)"
    print(f"stress: {ns.rounds} rounds, {ns.busy} busy core(s), pytest {args}; logs in {out}")
    failures: dict[str, Failure] = {}
    rounds_run = 0
    interrupted = False
    start = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the spinners too
    spinners = _spinners(ns.busy)
    try:
        for n in range(1, ns.rounds + 1):
            if ns.minutes is not None and time.monotonic() - start >= ns.minutes * 60:
                print(f"stress: {ns.minutes:g} minutes reached, no round {n}")
                break
            cases, failed, seconds = _run_round(n, out, ns.pytest_args)
            rounds_run += 1
            print(f"round {n}: {cases} tests, {len(failed)} failed, {seconds:.0f} s", flush=True)
            for nodeid, msg in failed.items():
                failures.setdefault(nodeid, Failure()).messages.setdefault(msg, []).append(n)
    except KeyboardInterrupt:
        interrupted = True
        print("stress: interrupted")
    finally:
        _stop(spinners)
    wall = time.monotonic() - start
    print(f"\nstress: {rounds_run} rounds in {wall:.0f} s wall ({wall / 60:.1f} min)")
    if not failures:
        print("stress: no test failed in any round")
        return 1 if interrupted or rounds_run == 0 else 0
    print(f"stress: {len(failures)} test(s) failed at least once:")
    for nodeid in sorted(failures):
        print(f"  {nodeid}")
        for msg, rounds in failures[nodeid].messages.items():
            print(f"    rounds {','.join(map(str, rounds))}: {msg}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
