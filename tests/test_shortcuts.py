"""chimed's shortcuts through aiortc and aioice (chimed.media.shortcuts) all engage with the
versions pinned: a session joins the embedded service through its TURN relay, as every meeting
does, and each shortcut reports it engaged for it, none that it stood aside. This is the test
to run first on an aiortc or aioice upgrade."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chime.client import connect_aio
from chime.v1 import session_pb2
from chimed.config import DaemonConfig
from chimed.media import shortcuts
from chimed.media.fastpath import TurnSends
from chimed.server.app import Daemon

from tests.helpers import create_meeting, create_session

RELAYED = 150  # packets the relay passes from the session to the media server


@pytest.fixture
async def own_daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(DaemonConfig(socket_path=str(tmp_path / "chimed.sock")))
    await daemon.start()
    yield daemon
    await daemon.stop()


@pytest.mark.slow
async def test_every_shortcut_engages_for_a_session_through_the_relay(own_daemon: Daemon) -> None:
    assert own_daemon.embedded is not None
    relay = own_daemon.embedded.turn.stats
    before = shortcuts.report()
    queued_before = TurnSends.queued
    async with connect_aio(f"unix:{own_daemon.config.socket_path}") as client:
        meeting = await create_meeting(client)
        session = await create_session(client, meeting, "alice")
        await client.sessions.Start(
            session_pb2.StartRequest(session_id=session.session_id, wait=True)
        )
        target = relay.packets_to_peers + RELAYED
        for _ in range(300):  # a readiness poll of the relay's counters, bounded
            if relay.packets_to_peers >= target:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the relay passed {relay.packets_to_peers} of {target}")
        # Sends that took aioice's task per datagram: only those before the channel was bound.
        assert TurnSends.queued - queued_before < RELAYED // 3

    after = shortcuts.report()
    for name in shortcuts.PROCESS_WIDE:
        assert after[name].engaged == 1 and after[name].stood_aside == 0, after[name]
    # The session's peer took every per-peer one but video forwarding's (the media server's
    # alone, tests/test_video_forwarding.py); the media server's took ICE and jitter.
    least = {name: 1 for name in shortcuts.PER_PEER if name not in shortcuts.VIDEO_FORWARDING}
    least |= {"ice_settings": 2, "shallow_jitter": 2}
    for name, count in least.items():
        assert after[name].engaged - before[name].engaged >= count, after[name]
        assert after[name].stood_aside == before[name].stood_aside, after[name]


def test_a_shortcut_that_stands_aside_warns_once_naming_itself() -> None:
    """Two receivers without aiortc's jitter buffer attribute (as a changed aiortc would make
    them): both stand aside and are counted, one warning is logged. In a process of its own,
    so this test's stand-asides stay out of the others' report."""
    code = (
        "import logging; logging.basicConfig()\n"
        "from chimed.media import shortcuts\n"
        "assert not shortcuts.shallow_jitter(object(), 1)\n"
        "assert not shortcuts.shallow_jitter(object(), 1)\n"
        "print(shortcuts.report()['shallow_jitter'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stderr.count("WARNING") == 1, out.stderr
    assert "shortcut shallow_jitter stands aside" in out.stderr
    assert "engaged=0, stood_aside=2" in out.stdout
