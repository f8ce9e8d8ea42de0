"""One configuration per daemon and per embedded service: two daemons and an embedded service
in one process each keep their own media settings, down to the objects their peers run with,
and each daemon its own bearer token."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aioice.stun
import grpc
import pytest
from aiortc import RTCPeerConnection
from chime.client import connect_aio
from chime.v1 import session_pb2, session_pb2_grpc, video_pb2
from chimed.config import LOOPBACK_MEDIA, DaemonConfig, EmbeddedConfig, MediaConfig
from chimed.media import shortcuts
from chimed.media.ice import IceSettings
from chimed.server.app import Daemon

from tests.helpers import create_meeting, create_session, started_session
from tests.streams import EventStream

A_MEDIA = MediaConfig(
    jitter_depth=2, opus_complexity=3, ice_host_addresses=("127.0.0.1",), stun_rto=0.1
)
B_MEDIA = MediaConfig(
    jitter_depth=0, opus_complexity=9, ice_host_addresses=("127.0.0.2",), stun_rto=0.2
)
SERVICE_MEDIA = MediaConfig(
    jitter_depth=1, opus_complexity=7, ice_host_addresses=("127.0.0.3",), stun_rto=0.15
)


def _ice(media: MediaConfig) -> IceSettings:
    return IceSettings(media.ice_host_addresses, media.stun_rto)


def _candidate_hosts(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


@pytest.fixture
def first_rtos() -> Iterator[list[float]]:
    """The first retransmission timeout of every STUN transaction aioice runs meanwhile."""
    seen: list[float] = []
    run = aioice.stun.Transaction.run

    async def recording(self: Any) -> Any:
        seen.append(vars(self)["_Transaction__timeout_delay"])
        return await run(self)

    aioice.stun.Transaction.run = recording  # type: ignore[method-assign]
    yield seen
    aioice.stun.Transaction.run = run  # type: ignore[method-assign]


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Daemon]]:
    """Daemon A with its embedded service in-process, daemon B using A's service by URL."""
    a = Daemon(
        DaemonConfig(
            socket_path=str(tmp_path / "a.sock"),
            embedded=EmbeddedConfig(media=SERVICE_MEDIA),
            media=A_MEDIA,
        )
    )
    await a.start()
    assert a.embedded is not None
    b = Daemon(
        DaemonConfig(
            socket_path=str(tmp_path / "b.sock"),
            control_plane=a.embedded.base_url,
            media=B_MEDIA,
        )
    )
    try:
        await b.start()
        yield a, b
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.2-3 are loopback on Linux only")
async def test_two_daemons_and_an_embedded_service_keep_their_own_media_settings(
    daemons: tuple[Daemon, Daemon], first_rtos: list[float]
) -> None:
    a, b = daemons
    assert a.embedded is not None
    async with (
        connect_aio(f"unix:{a.config.socket_path}") as client_a,
        connect_aio(f"unix:{b.config.socket_path}") as client_b,
    ):
        meeting = await create_meeting(client_a)
        sessions = [
            await create_session(client_a, meeting, "alice"),
            await create_session(client_b, meeting, "bob"),
        ]
        await asyncio.gather(
            *(
                client.sessions.Start(
                    session_pb2.StartRequest(session_id=session.session_id, wait=True)
                )
                for client, session in zip((client_a, client_b), sessions, strict=True)
            )
        )

        for daemon, session, media in ((a, sessions[0], A_MEDIA), (b, sessions[1], B_MEDIA)):
            peer = daemon.manager.get(session.session_id).chime_session.peer
            assert peer is not None
            assert peer.encoder_complexity == media.opus_complexity
            assert shortcuts.applied(peer.connection) == shortcuts.Applied(
                (media.jitter_depth,), (_ice(media),)
            )
            # what the media server gathered, on its own address only
            remote = peer.connection.remoteDescription.sdp
            assert _candidate_hosts(remote) == {"127.0.0.3"}

        served: list[RTCPeerConnection] = a.embedded.signaling.media.peer_connections(
            meeting.meeting_id
        )
        assert len(served) == 2
        for pc in served:
            assert shortcuts.applied(pc) == shortcuts.Applied(
                (SERVICE_MEDIA.jitter_depth,), (_ice(SERVICE_MEDIA),)
            )
            assert _candidate_hosts(pc.localDescription.sdp) == {"127.0.0.3"}

    # Each side's transactions ran on its own timer, and aioice's own default stays untouched.
    assert {0.1, 0.2, 0.15} <= set(first_rtos) <= {0.1, 0.2, 0.15}
    assert aioice.stun.RETRY_RTO == 0.5


async def _listed_with(port: int | None, token: str) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        try:
            await stub.ListSessions(
                session_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK


async def test_each_daemon_in_a_process_asks_for_its_own_token(tmp_path: Path) -> None:
    daemons = [
        Daemon(
            DaemonConfig(
                socket_path=str(tmp_path / f"{name}.sock"),
                listen="127.0.0.1:0",
                token=f"{name}-token",
                control_plane="http://127.0.0.1:9",  # never called here
            )
        )
        for name in ("a", "b")
    ]
    for daemon in daemons:
        await daemon.start()
    try:
        a, b = (daemon.tcp_port for daemon in daemons)
        assert await _listed_with(a, "a-token") == grpc.StatusCode.OK
        assert await _listed_with(b, "b-token") == grpc.StatusCode.OK
        assert await _listed_with(a, "b-token") == grpc.StatusCode.UNAUTHENTICATED
        assert await _listed_with(b, "a-token") == grpc.StatusCode.UNAUTHENTICATED
    finally:
        for daemon in daemons:
            await daemon.stop()


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_a_daemons_video_codec_is_what_its_camera_negotiates(
    tmp_path: Path, codec: str
) -> None:
    media = replace(LOOPBACK_MEDIA, video_codec=codec)
    daemon = Daemon(DaemonConfig(socket_path=str(tmp_path / "v.sock"), media=media))
    await daemon.start()
    try:
        async with connect_aio(f"unix:{daemon.config.socket_path}") as client:
            meeting = await create_meeting(client)
            session = await started_session(client, meeting, "camera")
            sid = session.session_id
            events = EventStream(
                client.sessions.AddAudioVideoObserver(
                    session_pb2.AddAudioVideoObserverRequest(session_id=sid)
                )
            )
            await events.registered()
            await client.video.StartLocal(video_pb2.StartLocalRequest(session_id=sid))
            await events.expect("video_session_started")  # the answer is applied
            await events.close()
            peer = daemon.manager.get(sid).chime_session.peer
            assert peer is not None
            camera = peer.connection.remoteDescription.sdp.split("m=video")[1]
            first_payload_type = camera.split("\r\n")[0].split()[2]
            assert f"a=rtpmap:{first_payload_type} {codec}/90000" in camera
    finally:
        await daemon.stop()
