"""The suite's guard against PyMongo's orphaned connect sockets (tests/orphans.py)."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import ServerSelectionTimeoutError

from tests.orphans import collect_orphaned_sockets


def _open_sockets() -> set[str]:
    """This process's socket descriptors as ``/proc`` names them (``socket:[inode]``)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, gone already
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """The collector runs only when the test says so: without the guard the socket would stay
    open for certain, not only until some allocation happens to trigger a collection."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A listener whose accept queue is full: the kernel drops further SYNs, so a client's
    connect to it is still pending when the client is closed."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # takes the queue's one place
            yield port


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.usefixtures("no_automatic_gc")
async def test_a_client_closed_mid_connect_leaves_no_socket_after_the_guard(
    hung_port: int,
) -> None:
    before = _open_sockets()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{hung_port}/?directConnection=true",
        serverSelectionTimeoutMS=200,
        connectTimeoutMS=60_000,
    )
    with pytest.raises(ServerSelectionTimeoutError):
        await client.admin.command("ping")
    assert _open_sockets() - before, "the monitor should still be connecting"
    await client.close()
    del client
    collect_orphaned_sockets()  # without it the socket is still open here (PyMongo 4.20)
    assert _open_sockets() - before == set()
