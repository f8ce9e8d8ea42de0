"""The embedded signaling and media servers, driven by real WebSocket and aiortc clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame
from chime.signaling import signaling_pb2 as pb
from chimed.embedded.data_messages import DataMessages, Limits
from chimed.embedded.meetings import Attendee, Meeting, Registry
from chimed.embedded.room import Room
from chimed.embedded.service import EmbeddedChime
from chimed.embedded.signaling_server import SignalingServer, TurnProvider
from chimed.embedded.turn_server import TurnCredentials
from chimed.media.ice import pin_host_addresses, rtc_configuration

T = pb.SdkSignalFrame.Type
TIMEOUT = 10.0


# --- a tiny service around the handler -----------------------------------------------------
@dataclass
class Service:
    registry: Registry
    server: SignalingServer
    ws_url: str
    http: aiohttp.ClientSession

    def meeting(self) -> Meeting:
        return self.registry.create_meeting(f"tok-{time.monotonic_ns()}", "m")

    def attendee(self, meeting: Meeting, user: str) -> Attendee:
        return self.registry.create_attendee(meeting.meeting_id, user)

    async def connect(
        self, meeting: Meeting, token: str, cookie: bool = False, type_byte: int = 0x05
    ) -> Client:
        url = f"{self.ws_url}/control/{meeting.meeting_id}?X-Chime-Control-Protocol-Version=3"
        if cookie:
            ws = await self.http.ws_connect(
                url,
                headers={
                    "Cookie": f"_aws_wt_session={token}",
                    "X-Chime-Control-Protocol-Version": "3",
                },
            )
        else:
            ws = await self.http.ws_connect(url, protocols=("_aws_wt_session", token))
        return Client(ws, type_byte)

    async def join(self, meeting: Meeting, user: str) -> Client:
        attendee = self.attendee(meeting, user)
        client = await self.connect(meeting, attendee.join_token)
        client.attendee = attendee
        await client.send(frame(T.JOIN))
        await client.expect(T.JOIN_ACK)
        await client.expect(T.INDEX)
        return client


def frame(kind: int) -> pb.SdkSignalFrame:
    return pb.SdkSignalFrame(type=kind, timestamp_ms=int(time.time() * 1000))  # type: ignore[arg-type]


class Client:
    """A signaling client: frames of other types than the one awaited are kept for later."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, type_byte: int) -> None:
        self.ws = ws
        self.type_byte = type_byte
        self.pending: list[pb.SdkSignalFrame] = []
        self.attendee: Attendee | None = None

    async def send(self, f: pb.SdkSignalFrame) -> None:
        await self.ws.send_bytes(bytes([self.type_byte]) + f.SerializePartialToString())

    async def read(self) -> pb.SdkSignalFrame | None:
        msg = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        if msg.type != aiohttp.WSMsgType.BINARY:
            return None
        assert msg.data[0] == 0x05
        f = pb.SdkSignalFrame()
        f.ParseFromString(msg.data[1:])
        return f

    async def expect(self, kind: int) -> pb.SdkSignalFrame:
        for i, f in enumerate(self.pending):
            if f.type == kind:
                return self.pending.pop(i)
        while True:
            got = await self.read()
            if got is None:
                raise AssertionError(f"socket closed ({self.ws.close_code}) awaiting {kind}")
            if got.type == kind:
                return got
            self.pending.append(got)

    async def closed(self) -> int | None:
        """Read to the close; the close code."""
        while await self.read() is not None:
            pass
        return self.ws.close_code

    async def ping(self, ping_id: int) -> None:
        """A round trip: every frame the server queued before the PONG is now in `pending`."""
        f = frame(T.PING_PONG)
        f.ping_pong.type = pb.PING
        f.ping_pong.ping_id = ping_id
        await self.send(f)
        while True:
            pong = await self.expect(T.PING_PONG)
            if pong.ping_pong.type == pb.PONG:
                assert pong.ping_pong.ping_id == ping_id
                return

    def pending_of(self, kind: int) -> list[pb.SdkSignalFrame]:
        return [f for f in self.pending if f.type == kind]


@contextlib.asynccontextmanager
async def serving(turn_credentials: TurnProvider | None = None) -> AsyncIterator[Service]:
    """A SignalingServer on its own loopback port, with a client session for the tests."""
    pin_host_addresses(["127.0.0.1"])
    registry = Registry()
    server = SignalingServer(registry, turn_credentials=turn_credentials)
    app = web.Application()
    server.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Service(registry, server, f"ws://127.0.0.1:{port}", http)
            await server.close()
    finally:
        await runner.cleanup()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    turn = TurnCredentials("user", "pass", 300, ["turn:127.0.0.1:3478?transport=udp"])
    async with serving(lambda m, a: turn if a == "turn-wanted" else None) as svc:
        yield svc


# --- auth and join -------------------------------------------------------------------------
async def test_subprotocol_auth_join_ack_then_index(service: Service) -> None:
    meeting = service.meeting()
    attendee = service.attendee(meeting, "alice")
    client = await service.connect(meeting, attendee.join_token)
    assert client.ws.protocol == "_aws_wt_session"
    join = frame(T.JOIN)
    join.join.protocol_version = 2
    join.join.flags = pb.HAS_STREAM_UPDATE
    await client.send(join)
    ack = await client.expect(T.JOIN_ACK)
    assert not ack.joinack.HasField("turn_credentials")
    assert not client.pending  # JOIN_ACK first, then INDEX
    index = await client.expect(T.INDEX)
    assert list(index.index.sources) == []
    assert index.index.num_participants == 1
    await client.ws.close()


async def test_cookie_auth_and_type_byte_2(service: Service) -> None:
    meeting = service.meeting()
    attendee = service.attendee(meeting, "cpp")
    first = await service.join(meeting, "first")
    client = await service.connect(meeting, attendee.join_token, cookie=True, type_byte=0x02)
    await client.send(frame(T.JOIN))
    await client.expect(T.JOIN_ACK)
    index = await client.expect(T.INDEX)
    assert index.index.num_participants == 2
    await client.ws.close()
    await first.ws.close()


async def test_turn_credentials_hook_fills_join_ack(service: Service) -> None:
    meeting = service.meeting()
    attendee = service.attendee(meeting, "x")
    attendee.attendee_id = "turn-wanted"  # the hook in the fixture keys on it
    client = await service.connect(meeting, attendee.join_token)
    await client.send(frame(T.JOIN))
    ack = await client.expect(T.JOIN_ACK)
    creds = ack.joinack.turn_credentials
    assert (creds.username, creds.password, creds.ttl) == ("user", "pass", 300)
    assert list(creds.uris) == ["turn:127.0.0.1:3478?transport=udp"]
    await client.ws.close()


@pytest.mark.parametrize("cookie", [False, True])
async def test_bad_token_is_rejected_with_403(service: Service, cookie: bool) -> None:
    meeting = service.meeting()
    service.attendee(meeting, "alice")
    client = await service.connect(meeting, "not-a-token", cookie=cookie)
    status = await client.expect(T.AUDIO_STATUS)
    assert status.audio_status.audio_status == 403
    assert status.error.status == 403
    assert await client.closed() == 4403


async def test_token_of_another_meeting_is_rejected(service: Service) -> None:
    attendee = service.attendee(service.meeting(), "alice")
    other = service.meeting()
    client = await service.connect(other, attendee.join_token)
    assert (await client.expect(T.AUDIO_STATUS)).audio_status.audio_status == 403
    assert await client.closed() == 4403


# --- keep-alive ----------------------------------------------------------------------------
async def test_ping_answered_with_pong_of_same_id(service: Service) -> None:
    client = await service.join(service.meeting(), "alice")
    await client.ping(4242)
    await client.ws.close()


async def test_server_sends_pings(service: Service) -> None:
    service.server.ping_interval = 0.05
    client = await service.join(service.meeting(), "alice")
    ping = await client.expect(T.PING_PONG)
    assert ping.ping_pong.type == pb.PING
    await client.ws.close()


async def test_unknown_and_ignored_frames_are_skipped(service: Service) -> None:
    client = await service.join(service.meeting(), "alice")
    await client.ws.send_bytes(b"\x05" + bytes([0x08, 0x01, 0x10, 0x63]))  # type 99
    await client.ws.send_bytes(b"\x09garbage")  # unknown type byte
    for kind in (T.CLIENT_METRIC, T.BITRATES, T.PAUSE, T.RESUME):
        await client.send(frame(kind))
    await client.ping(1)
    assert client.pending_of(T.JOIN_ACK) == []  # the type-99 frame was not taken for a JOIN
    await client.ws.close()


# --- data messages -------------------------------------------------------------------------
def data_frame(*payloads: pb.SdkDataMessagePayload) -> pb.SdkSignalFrame:
    f = frame(T.DATA_MESSAGE)
    f.data_message.messages.extend(payloads)
    return f


async def test_data_message_fan_out_with_stamped_sender(service: Service) -> None:
    meeting = service.meeting()
    a, b, c = [await service.join(meeting, u) for u in ("alice", "bob", "carol")]
    before = time.time_ns()
    await a.send(data_frame(pb.SdkDataMessagePayload(topic="chat", data=b"hi", lifetime_ms=0)))
    for receiver in (b, c):
        got = (await receiver.expect(T.DATA_MESSAGE)).data_message.messages
        assert len(got) == 1
        assert (got[0].topic, got[0].data) == ("chat", b"hi")
        assert a.attendee is not None
        assert got[0].sender_attendee_id == a.attendee.attendee_id
        assert got[0].sender_external_user_id == "alice"
        assert got[0].ingest_time_ns >= before
    await a.ping(1)
    assert a.pending_of(T.DATA_MESSAGE) == []  # not echoed to its sender
    for client in (a, b, c):
        await client.ws.close()


async def test_invalid_messages_are_bounced_flagged(service: Service) -> None:
    meeting = service.meeting()
    a, b = [await service.join(meeting, u) for u in ("alice", "bob")]
    bad_topic = pb.SdkDataMessagePayload(topic="no spaces!", data=b"x")
    too_big = pb.SdkDataMessagePayload(topic="chat", data=b"x" * 2049)
    await a.send(data_frame(bad_topic, too_big))
    bounced = (await a.expect(T.DATA_MESSAGE)).data_message.messages
    assert [m.topic for m in bounced] == ["no spaces!", "chat"]
    assert all(m.HasField("ingest_time_ns") and m.ingest_time_ns == 0 for m in bounced)
    await a.send(data_frame(pb.SdkDataMessagePayload(topic="chat", data=b"x" * 2048)))
    delivered = (await b.expect(T.DATA_MESSAGE)).data_message.messages
    assert [len(m.data) for m in delivered] == [2048]  # the invalid two never reached bob
    await a.ws.close()
    await b.ws.close()


async def test_throttled_messages_come_back_with_ingest_time_zero(service: Service) -> None:
    meeting = service.meeting()
    a, b = [await service.join(meeting, u) for u in ("alice", "bob")]
    burst = [pb.SdkDataMessagePayload(topic="t", data=str(i).encode()) for i in range(300)]
    await a.send(data_frame(*burst))  # one frame: one instant, so exactly the burst passes
    delivered = (await b.expect(T.DATA_MESSAGE)).data_message.messages
    bounced = (await a.expect(T.DATA_MESSAGE)).data_message.messages
    assert [m.data for m in delivered] == [str(i).encode() for i in range(200)]
    assert [m.data for m in bounced] == [str(i).encode() for i in range(200, 300)]
    assert all(m.ingest_time_ns > 0 for m in delivered)
    assert all(m.ingest_time_ns == 0 for m in bounced)
    await a.ws.close()
    await b.ws.close()


async def test_messages_with_lifetime_replayed_to_late_joiner(service: Service) -> None:
    meeting = service.meeting()
    a = await service.join(meeting, "alice")
    await a.send(
        data_frame(
            pb.SdkDataMessagePayload(topic="keep", data=b"1", lifetime_ms=60_000),
            pb.SdkDataMessagePayload(topic="gone", data=b"2"),
        )
    )
    await a.ping(1)
    late = await service.join(meeting, "late")
    replay = (await late.expect(T.DATA_MESSAGE)).data_message.messages
    assert [(m.topic, m.sender_external_user_id) for m in replay] == [("keep", "alice")]
    await a.ws.close()
    await late.ws.close()


# --- endings -------------------------------------------------------------------------------
async def test_leave_acked_then_closed(service: Service) -> None:
    client = await service.join(service.meeting(), "alice")
    await client.send(frame(T.LEAVE))
    await client.expect(T.LEAVE_ACK)
    assert await client.closed() == 1000


async def test_delete_meeting_ends_everyone_with_410(service: Service) -> None:
    meeting = service.meeting()
    a, b = [await service.join(meeting, u) for u in ("alice", "bob")]
    service.registry.delete_meeting(meeting.meeting_id)
    for client in (a, b):
        assert (await client.expect(T.AUDIO_STATUS)).audio_status.audio_status == 410
        assert await client.closed() == 4410


async def test_delete_attendee_ends_only_its_session_with_411(service: Service) -> None:
    meeting = service.meeting()
    a, b = [await service.join(meeting, u) for u in ("alice", "bob")]
    assert a.attendee is not None
    service.registry.delete_attendee(meeting.meeting_id, a.attendee.attendee_id)
    assert (await a.expect(T.AUDIO_STATUS)).audio_status.audio_status == 411
    assert await a.closed() == 4411
    await b.ping(5)
    assert b.pending_of(T.AUDIO_STATUS) == []
    await b.ws.close()


async def test_second_device_ends_the_first_with_301(service: Service) -> None:
    meeting = service.meeting()
    old = await service.join(meeting, "alice")
    assert old.attendee is not None
    new = await service.connect(meeting, old.attendee.join_token)
    await new.send(frame(T.JOIN))
    await new.expect(T.JOIN_ACK)
    assert (await old.expect(T.AUDIO_STATUS)).audio_status.audio_status == 301
    assert await old.closed() == 4301
    await new.ping(1)
    await new.ws.close()


# --- media ---------------------------------------------------------------------------------
@dataclass
class MediaClient:
    sig: Client
    pc: RTCPeerConnection
    remote: asyncio.Future[MediaStreamTrack]


async def subscribe(client: Client, pc: RTCPeerConnection) -> pb.SdkSubscribeAckFrame:
    await pc.setLocalDescription(await pc.createOffer())
    sub = frame(T.SUBSCRIBE)
    sub.sub.duplex = pb.RX
    sub.sub.sdp_offer = pc.localDescription.sdp
    sub.sub.audio_muted = False
    assert client.attendee is not None
    sub.sub.send_streams.add(
        stream_id=1,
        group_id=1,
        track_label="AmazonChimeExpressAudio",
        attendee_id=client.attendee.attendee_id,
        media_type=pb.AUDIO,
    )
    sub.sub.receive_stream_ids.append(0)
    await client.send(sub)
    ack = (await client.expect(T.SUBSCRIBE_ACK)).suback
    await pc.setRemoteDescription(RTCSessionDescription(ack.sdp_answer, "answer"))
    return ack


async def join_with_media(service: Service, meeting: Meeting, user: str) -> MediaClient:
    sig = await service.join(meeting, user)
    pc = RTCPeerConnection(rtc_configuration())
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if not remote.done():
            remote.set_result(track)

    pc.addTrack(AudioStreamTrack())
    ack = await subscribe(sig, pc)
    # Allocations name video send streams only (JS reads allocations[0] as its video's).
    assert list(ack.allocations) == []
    assert [t.track_label for t in ack.tracks] == ["AmazonChimeExpressAudio"]
    return MediaClient(sig, pc, remote)


async def wait_for_info(client: Client, match: object) -> list[pb.SdkAudioStreamIdInfo]:
    """The next AUDIO_STREAM_ID_INFO whose entries satisfy `match`."""
    assert callable(match)
    while True:
        info = list((await client.expect(T.AUDIO_STREAM_ID_INFO)).audio_stream_id_info.streams)
        if match(info):
            return info


async def test_media_presence_on_first_audio_and_audio_back(service: Service) -> None:
    meeting = service.meeting()
    alice = await join_with_media(service, meeting, "alice")
    assert alice.sig.attendee is not None
    me = alice.sig.attendee.attendee_id
    info = await wait_for_info(alice.sig, lambda i: any(e.attendee_id == me for e in i))
    assert [(e.attendee_id, e.external_user_id, e.muted) for e in info] == [(me, "alice", False)]

    track = await asyncio.wait_for(alice.remote, TIMEOUT)
    received = await asyncio.wait_for(track.recv(), TIMEOUT)
    assert isinstance(received, AudioFrame)

    # A re-offer renegotiates the same peer connection, now with a video m-line too.
    alice.pc.addTransceiver("video", direction="recvonly")
    ack = await subscribe(alice.sig, alice.pc)
    assert "m=video" in ack.sdp_answer
    assert isinstance(await asyncio.wait_for(track.recv(), TIMEOUT), AudioFrame)
    assert alice.pc.connectionState == "connected"

    await alice.sig.send(frame(T.LEAVE))
    await alice.sig.expect(T.LEAVE_ACK)
    await alice.pc.close()


async def test_media_roster_mute_and_drop(service: Service) -> None:
    meeting = service.meeting()
    alice = await join_with_media(service, meeting, "alice")
    assert alice.sig.attendee is not None
    a_id = alice.sig.attendee.attendee_id
    await wait_for_info(alice.sig, lambda i: any(e.attendee_id == a_id for e in i))

    bob = await join_with_media(service, meeting, "bob")
    assert bob.sig.attendee is not None
    b_id = bob.sig.attendee.attendee_id
    roster = await wait_for_info(bob.sig, lambda i: any(e.attendee_id == b_id for e in i))
    assert {e.attendee_id for e in roster} == {a_id, b_id}  # the full list for the newcomer
    joined = await wait_for_info(alice.sig, lambda i: any(e.attendee_id == b_id for e in i))
    assert len(joined) == 1  # a delta for the others
    b_stream = joined[0].audio_stream_id

    mute = frame(T.AUDIO_CONTROL)
    mute.audio_control.muted = True
    await bob.sig.send(mute)
    muted = await wait_for_info(alice.sig, lambda i: i[0].HasField("muted"))
    assert (muted[0].audio_stream_id, muted[0].muted, muted[0].attendee_id) == (b_stream, True, "")

    await bob.sig.ws.close()  # no LEAVE: dropped
    await bob.pc.close()
    gone = await wait_for_info(alice.sig, lambda i: i[0].audio_stream_id == b_stream)
    assert (gone[0].HasField("attendee_id"), gone[0].HasField("muted")) == (False, False)
    assert gone[0].dropped is True

    await alice.sig.ws.close()
    await alice.pc.close()


async def test_attendee_sending_no_audio_is_not_present(service: Service) -> None:
    meeting = service.meeting()
    mute = await service.join(meeting, "listener")
    pc = RTCPeerConnection(rtc_configuration())
    pc.addTransceiver("audio", direction="recvonly")  # answers, never sends
    await subscribe(mute, pc)
    talker = await join_with_media(service, meeting, "talker")
    assert talker.sig.attendee is not None
    t_id = talker.sig.attendee.attendee_id
    roster = await wait_for_info(talker.sig, lambda i: any(e.attendee_id == t_id for e in i))
    assert [e.external_user_id for e in roster] == ["talker"]
    # The silent one still hears who is present.
    heard = await wait_for_info(mute, lambda i: any(e.attendee_id == t_id for e in i))
    assert [e.external_user_id for e in heard] == ["talker"]
    for client in (mute, talker.sig):
        await client.ws.close()
    await pc.close()
    await talker.pc.close()


# --- plain state ---------------------------------------------------------------------------
def test_room_allocates_stream_ids_and_announces() -> None:
    room = Room("m")
    a = room.join("a", "alice")
    b = room.join("b", "bob")
    assert (a.stream_id, b.stream_id) == (1, 2)
    assert room.mark_present(1)[0].recipients == [1]
    second = room.mark_present(2)
    assert [(x.recipients, [e.attendee_id for e in x.entries]) for x in second] == [
        ([2], ["a", "b"]),
        ([1], ["b"]),
    ]
    assert room.mark_present(2) == []
    left = room.leave(1, dropped=False)
    assert left[0].recipients == [2]
    assert not left[0].entries[0].HasField("dropped")
    again = room.join("a", "alice")
    assert again.stream_id == 3  # a rejoin is a new, higher stream
    assert room.leave(3, dropped=True) == []  # never present: nothing to announce


def test_data_messages_buffer_expires_and_caps() -> None:
    data = DataMessages(Limits(soft_burst=5000, attendee_hard_burst=5000))
    msgs = [pb.SdkDataMessagePayload(topic="t", data=b"", lifetime_ms=1000) for _ in range(1100)]
    result = data.ingest("a", "alice", msgs, now_ns=10**18)
    assert len(result.deliver) == 1100
    assert len(data.replay(10**18)) == 1024
    assert data.replay(10**18 + 1_000_000_000) == []  # past its lifetime
    stamps = [m.ingest_time_ns for m in result.deliver]
    assert stamps == sorted(set(stamps))  # strictly increasing


def test_data_messages_hard_limit_hangs_up() -> None:
    data = DataMessages(Limits(attendee_hard_burst=3))
    msgs = [pb.SdkDataMessagePayload(topic="t", data=b"") for _ in range(4)]
    result = data.ingest("a", "alice", msgs, now_ns=1)
    assert (len(result.deliver), result.hang_up) == (3, True)


# --- the official web client in headless Chromium --------------------------------------------
@dataclass
class WebSite:
    registry: Registry
    base_url: str


async def serve_page(
    web_registry: Registry, signaling_registry: Registry
) -> AsyncIterator[WebSite]:
    """The meeting page (joining through `web_registry`) and signaling on `signaling_registry`."""
    from chimed.embedded.meeting_page import DIST_DIR, add_web_routes

    if not (DIST_DIR / "index.html").is_file():
        pytest.fail("the meeting page is not built: run make web")
    pin_host_addresses(["127.0.0.1"])
    server = SignalingServer(signaling_registry)
    app = web.Application()
    urls: dict[str, str] = {}
    add_web_routes(app, web_registry, lambda: (urls["base"], urls["ws"], ""))
    server.add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    urls["base"], urls["ws"] = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        yield WebSite(web_registry, urls["base"])
    finally:
        await server.close()
        await runner.cleanup()


@pytest.mark.timeout(90)
@pytest.mark.browser
@pytest.mark.slow
async def test_web_client_joins_and_sees_itself_present() -> None:
    from tests.browser import Browser

    registry = Registry()
    async for site in serve_page(registry, registry):
        async with Browser() as browser:
            page = await browser.open(site.base_url + "/")
            ids = await page.eval("chimedPage.join('standup', 'alice', {audio: 'silence'})", 40)
            # Present once its audio reached the media server, not when the socket opened.
            state = await page.eval("chimedPage.waitFor((s) => s.roster.length > 0)", 20)
            assert state["status"] == "started"
            assert [(e["attendeeId"], e["self"]) for e in state["roster"]] == [
                (ids["attendeeId"], True)
            ]
            stopped = await page.eval("chimedPage.leave()", 20)
            assert stopped["status"] == "stopped"


@pytest.mark.timeout(90)
@pytest.mark.browser
@pytest.mark.slow
async def test_web_client_sees_authentication_rejected() -> None:
    from tests.browser import Browser

    # The page creates its meeting in a registry signaling does not know: an unknown meeting.
    async for site in serve_page(Registry(), Registry()):
        async with Browser() as browser:
            page = await browser.open(site.base_url + "/")
            error = await page.eval(
                "chimedPage.join('standup', 'alice', {audio: 'silence'})"
                ".then(() => null, (e) => e.message)",
                40,
            )
            assert error is not None
            state = await page.eval("chimedPage.state")
            assert state["status"] == "failed"
            assert state["stopStatus"]["name"] == "AudioAuthenticationRejected"


# --- wired into the embedded service ---------------------------------------------------------
async def test_embedded_service_serves_signaling_and_stops_cleanly(
    embedded: EmbeddedChime,
) -> None:
    async with aiohttp.ClientSession() as http:
        svc = Service(embedded.registry, embedded.signaling, embedded.ws_url, http)
        meeting = svc.meeting()
        alice = await join_with_media(svc, meeting, "alice")
        assert alice.sig.attendee is not None
        me = alice.sig.attendee.attendee_id
        await wait_for_info(alice.sig, lambda i: any(e.attendee_id == me for e in i))
        closed = asyncio.create_task(alice.sig.closed())  # answers the server's close
        await embedded.stop()  # ends the session: the socket closes, the peer connection too
        assert await closed == 1001
        await alice.pc.close()
