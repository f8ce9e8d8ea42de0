from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from chime.client import AsyncChimed, connect_aio

from tests.daemon_proc import DaemonProcess


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """A real chimed process with its in-process embedded service, shared by a module."""
    proc = DaemonProcess().start()
    yield proc
    proc.stop()


@pytest.fixture
async def chimed(daemon: DaemonProcess) -> AsyncIterator[AsyncChimed]:
    async with connect_aio(daemon.target) as client:
        yield client
