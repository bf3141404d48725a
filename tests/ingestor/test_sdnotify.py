"""sd_notify against a real unix datagram socket, the way systemd listens on NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor.sdnotify import Notifier
from tests.conftest import REPO, TIMEOUT_FACTOR


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5 * TIMEOUT_FACTOR)
    try:
        yield sock, path
    finally:
        sock.close()


def test_ready_status_and_stopping_arrive_as_datagrams(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_s is None
    assert n.ready("caught up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=caught up"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"ingestor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5 * TIMEOUT_FACTOR)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_means_no_op_and_a_dead_socket_is_not_fatal(tmp_path: Path) -> None:
    off = Notifier({})
    assert not off.enabled and not off.notify("READY=1")
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.enabled and not gone.notify("READY=1")  # logged, never raised


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    pid = str(os.getpid())
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "3000000"}
    assert Notifier(env).watchdog_s == 1.5
    assert Notifier({**env, "WATCHDOG_PID": pid}).watchdog_s == 1.5
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_s is None
    assert Notifier({**env, "WATCHDOG_USEC": "junk"}).watchdog_s is None


async def test_watchdog_loop_pings_from_the_event_loop(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    sock.setblocking(False)
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # a ping every 20 ms
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(n.watchdog_loop())
    try:
        async with asyncio.timeout(5 * TIMEOUT_FACTOR):
            got = [await loop.sock_recv(sock, 64) for _ in range(3)]
    finally:
        task.cancel()
    assert got == [b"WATCHDOG=1"] * 3
    # Without a watchdog configured the loop returns at once instead of idling forever.
    async with asyncio.timeout(5 * TIMEOUT_FACTOR):
        await Notifier({"NOTIFY_SOCKET": path}).watchdog_loop()


def test_notify_from_the_environment_in_a_child_process(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    code = "from ingestor.sdnotify import notify; raise SystemExit(0 if notify('READY=1') else 1)"
    env = dict(os.environ, NOTIFY_SOCKET=path)
    subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=60 * TIMEOUT_FACTOR
    )
    assert sock.recv(4096) == b"READY=1"
