"""Fixtures shared by the test modules, and the test tiers.

Markers (registered in pyproject.toml, enforced by --strict-markers): `browser` (headless
Chromium and the meeting page built by `make web`), `pulse` (PulseAudio; skipped where it is
missing), `daemon` (starts a chimed process), `slow` (a second or more of its own), `xvfb` (an
X server of its own; skipped where Xvfb is missing). `make test-fast` runs what carries none of
them: the in-process tier, which needs only the virtualenv.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from chime.client import AsyncChimed, connect_aio
from chimed.embedded.service import EmbeddedChime
from chimed.media.ice import pin_host_addresses, pinned_host_addresses

from tests import pulse
from tests.daemon_proc import DaemonProcess
from tests.video_media import Display, run_xvfb


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The fast tier must not start a daemon: a test that asks for one carries the marker.
    unmarked = [
        item.nodeid
        for item in items
        if "daemon" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("daemon")
    ]
    if unmarked:
        raise pytest.UsageError(
            f"tests using the daemon fixture need @pytest.mark.daemon: {unmarked}"
        )
    if pulse.available():
        return
    skip = pytest.mark.skip(reason="needs pulseaudio and pactl")
    for item in items:
        if item.get_closest_marker("pulse"):
            item.add_marker(skip)


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


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedChime]:
    """The embedded Chime service in this process, on loopback ports of its own. Stopping it
    inside a test is allowed (stop is idempotent)."""
    service = EmbeddedChime()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
def loopback_only() -> Iterator[None]:
    """Plain aiortc peers of this process (chimed's own carry their MediaConfig) offer only
    127.0.0.1 as host candidate, for the test."""
    before = pinned_host_addresses()
    pin_host_addresses(["127.0.0.1"])
    yield
    pin_host_addresses(before)


@pytest.fixture
def xvfb() -> Iterator[Display]:
    """An Xvfb server of its own on a free display number, the root window a plain red
    (skipped where Xvfb or xsetroot is missing)."""
    yield from run_xvfb()
