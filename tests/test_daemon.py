"""The daemon as a process: its socket, TCP rules, health, shutdown, logs, shared services."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from chime.client import AsyncChimed, connect_aio
from chime.v1 import meeting_pb2, session_pb2, session_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.daemon_proc import DaemonProcess, EmbeddedProcess
from tests.helpers import create_meeting, create_session, started_session
from tests.streams import EventStream, attendee_ids

pytestmark = pytest.mark.daemon

S = session_pb2


def test_socket_is_private(daemon: DaemonProcess) -> None:
    mode = os.stat(daemon.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


@pytest.mark.slow
def test_second_daemon_on_same_socket_is_refused(daemon: DaemonProcess) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chimed", "--socket", daemon.socket_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "another chimed is already listening" in out.stderr


@pytest.mark.slow
def test_opus_complexity_out_of_range_is_refused(tmp_path: Any) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "chimed", "--opus-complexity", "11", "--socket", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--opus-complexity: Opus complexity must be 0 to 10, got 11" in out.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_tcp_beyond_loopback_needs_tls_and_token(tmp_path: Any) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "chimed",
            "--socket",
            str(tmp_path / "s.sock"),
            "--listen",
            "0.0.0.0:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "needs --tls-cert, --tls-key and a token" in out.stderr


@pytest.mark.slow
async def test_health_and_tcp_with_token(tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    proc = DaemonProcess(args=["--listen", "127.0.0.1:0", "--token-file", str(token_file)])
    proc.start()
    try:
        assert proc.tcp_address
        async with connect_aio(proc.tcp_address) as tcp:
            # Health is open (load balancers probe it); chimed's own services want the token.
            health = health_pb2_grpc.HealthStub(tcp.channel)
            reply = await health.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await tcp.sessions.ListSessions(S.ListSessionsRequest())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await tcp.sessions.ListSessions(
                    S.ListSessionsRequest(), metadata=(("authorization", "Bearer wrong"),)
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = await tcp.sessions.ListSessions(
                S.ListSessionsRequest(), metadata=(("authorization", "Bearer s3cret"),)
            )
            assert list(ok.sessions) == []
        # The Unix socket needs no token: its 0600 mode is the access control.
        async with connect_aio(proc.target) as chimed:
            await chimed.sessions.ListSessions(S.ListSessionsRequest())
            health = health_pb2_grpc.HealthStub(chimed.channel)
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service="chime.v1.SessionService")
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.stop()


@pytest.fixture
def shared() -> Iterator[tuple[EmbeddedProcess, DaemonProcess, DaemonProcess]]:
    embedded = EmbeddedProcess()
    a = DaemonProcess(args=["--control-plane", embedded.url]).start()
    b = DaemonProcess(args=["--control-plane", embedded.url]).start()
    yield embedded, a, b
    a.stop()
    b.stop()
    embedded.stop()


@pytest.mark.slow
async def test_two_daemons_share_one_embedded_service_and_sigterm_leaves(
    shared: tuple[EmbeddedProcess, DaemonProcess, DaemonProcess],
) -> None:
    _, a, b = shared
    async with connect_aio(a.target) as ca, connect_aio(b.target) as cb:
        meeting = await create_meeting(ca)
        alice = await started_session(ca, meeting, "alice")
        bob = await started_session(cb, meeting, "bob")
        rt_bob = EventStream(
            cb.sessions.AddRealtimeObserver(S.AddRealtimeObserverRequest(session_id=bob.session_id))
        )
        first = await rt_bob.expect("attendees_joined")
        assert {alice.attendee_id, bob.attendee_id} <= attendee_ids(first.attendees_joined)
        inbox = EventStream(
            cb.sessions.AddDataMessageObserver(
                S.AddDataMessageObserverRequest(session_id=bob.session_id)
            )
        )
        await inbox.registered()
        message = struct_pb2.Struct()
        message.update({"from": "daemon a"})
        await ca.sessions.SendMessage(
            S.SendMessageRequest(session_id=alice.session_id, message=message)
        )
        event = await inbox.expect("data_message_received")
        assert event.data_message_received.data_message.sender_attendee_id == alice.attendee_id

        av_alice = EventStream(
            ca.sessions.AddAudioVideoObserver(
                S.AddAudioVideoObserverRequest(session_id=alice.session_id)
            )
        )
        await av_alice.expect("audio_session_started")
        # SIGTERM daemon A: alice leaves properly (bob sees "left", not "dropped"), A's streams
        # end with a status, and A exits promptly with code 0.
        t0 = time.monotonic()
        code = await asyncio.to_thread(a.terminate)
        assert code == 0
        assert time.monotonic() - t0 < 10
        await rt_bob.expect("attendees_left", lambda e: alice.attendee_id in attendee_ids(e))
        assert not any(e.WhichOneof("event") == "attendees_dropped" for e in rt_bob.events)
        assert await av_alice.ended() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)
        await rt_bob.close()
        await inbox.close()


async def test_logs_never_carry_join_tokens(daemon: DaemonProcess, chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "secretive")
    full = await chimed.sessions.GetSession(
        S.GetSessionRequest(session_id=session.session_id, include_join_token=True)
    )
    token = full.session.credentials.join_token
    await chimed.sessions.Start(S.StartRequest(session_id=session.session_id, wait=True))
    await chimed.sessions.Stop(S.StopRequest(session_id=session.session_id))
    await chimed.meetings.CreateAttendee(
        meeting_pb2.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id="another")
    )
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=session.session_id))
    assert token and token not in daemon.log()


def _self_signed(tmp_path: Any) -> tuple[str, str, bytes]:
    """A throwaway certificate for 127.0.0.1 / localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path), pem


@pytest.mark.slow
async def test_tcp_with_tls_and_token(tmp_path: Any) -> None:
    cert, key, pem = _self_signed(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("tls-token")
    proc = DaemonProcess(
        args=[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--token-file",
            str(token_file),
        ]
    ).start()
    try:
        assert proc.tcp_address
        port = proc.tcp_address.rpartition(":")[2]
        creds = grpc.ssl_channel_credentials(root_certificates=pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
            sessions = session_pb2_grpc.SessionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await sessions.ListSessions(S.ListSessionsRequest())
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = await sessions.ListSessions(
                S.ListSessionsRequest(), metadata=(("authorization", "Bearer tls-token"),)
            )
            assert list(ok.sessions) == []
        # Plaintext to the TLS port fails: no silent downgrade.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await session_pb2_grpc.SessionServiceStub(plain).ListSessions(
                    S.ListSessionsRequest(), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.stop()
    assert "tls-token" not in proc.log()
