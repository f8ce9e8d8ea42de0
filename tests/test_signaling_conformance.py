"""The embedded signaling server takes what the official clients send, as Chime takes it:
compressed SDP, JOIN flags, view-only video (206), metrics and pause frames, the events
endpoint, and the PING timeout. Real WebSocket clients, real aiortc peers, and the official
amazon-chime-sdk-js in headless Chromium."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame
from chime.signaling import signaling_pb2 as pb
from chimed.embedded.sdp_compression import (
    MAX_DICTIONARY_CHARS,
    SdpCodec,
    SdpCompressionError,
    compress_sdp,
    decompress_sdp,
)
from chimed.embedded.service import EmbeddedChime
from chimed.media.ice import rtc_configuration

from tests.browser import Browser, Page
from tests.test_signaling_server import Client, Service, frame, serving, wait_for_info

T = pb.SdkSignalFrame.Type
TIMEOUT = 10.0
_deflater = zlib.compressobj(wbits=-15)
RAW_NOT_UTF8 = _deflater.compress(b"v=0\xff\xfe") + _deflater.flush()
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "a=candidate:1 1 udp 1 x\r\n" * 40


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with serving() as svc:
        yield svc


def join_frame(
    flags: int | None = pb.HAS_STREAM_UPDATE, compressed: bool = False
) -> pb.SdkSignalFrame:
    f = frame(T.JOIN)
    f.join.protocol_version = 2
    if flags is not None:
        f.join.flags = flags
    if compressed:
        f.join.wants_compressed_sdp = True
    return f


async def joined(
    service: Service, meeting: object, user: str, **join: object
) -> tuple[Client, pb.SdkJoinAckFrame, pb.SdkIndexFrame]:
    attendee = service.attendee(meeting, user)  # type: ignore[arg-type]
    client = await service.connect(meeting, attendee.join_token)  # type: ignore[arg-type]
    client.attendee = attendee
    await client.send(join_frame(**join))  # type: ignore[arg-type]
    ack = (await client.expect(T.JOIN_ACK)).joinack
    index = (await client.expect(T.INDEX)).index
    return client, ack, index


class Peer:
    """An aiortc peer that subscribes the way the JS client does, optionally compressed."""

    def __init__(self, client: Client, compressed: bool, video: bool = False) -> None:
        self.client = client
        self.pc = RTCPeerConnection(rtc_configuration())
        self.pc.addTrack(AudioStreamTrack())
        if video:
            self.pc.addTrack(VideoStreamTrack())
        self.codec = SdpCodec(enabled=compressed)
        self.remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self.remote.done():
            self.remote.set_result(track)

    async def subscribe(self, video_send: bool = False) -> pb.SdkSignalFrame:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        sub = frame(T.SUBSCRIBE)
        sub.sub.duplex = pb.DUPLEX if video_send else pb.RX
        if self.codec.enabled:
            # A client priming with its previous offer (the JS client primes with nothing).
            sub.sub.compressed_sdp_offer = compress_sdp(offer, self.codec.previous_offer)
            self.codec.previous_offer = offer
        else:
            sub.sub.sdp_offer = offer
        sub.sub.audio_muted = False
        assert self.client.attendee is not None
        sub.sub.send_streams.add(
            stream_id=1,
            group_id=1,
            track_label="AmazonChimeExpressAudio",
            attendee_id=self.client.attendee.attendee_id,
            media_type=pb.AUDIO,
        )
        if video_send:
            sub.sub.send_streams.add(
                stream_id=2,
                group_id=2,
                track_label="video",
                attendee_id=self.client.attendee.attendee_id,
                media_type=pb.VIDEO,
            )
        sub.sub.receive_stream_ids.append(0)
        await self.client.send(sub)
        ack = await self.client.expect(T.SUBSCRIBE_ACK)
        if ack.suback.compressed_sdp_answer:
            answer = decompress_sdp(ack.suback.compressed_sdp_answer, self.codec.previous_answer)
        else:
            answer = ack.suback.sdp_answer
        self.codec.previous_answer = answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        return ack

    async def close(self) -> None:
        await self.client.ws.close()
        await self.pc.close()


# --- the compression scheme (plain functions) ----------------------------------------------
def test_raw_deflate_primed_with_the_previous_sdp() -> None:
    previous = SDP.replace("o=- 1 2", "o=- 1 1")
    data = compress_sdp(SDP, previous)
    assert decompress_sdp(data, previous) == SDP
    # Raw DEFLATE: no zlib header, and the dictionary is what makes it small.
    assert zlib.decompressobj(wbits=-15, zdict=previous.encode()).decompress(data) == SDP.encode()
    assert len(data) < len(compress_sdp(SDP)) // 2
    with pytest.raises(zlib.error):
        zlib.decompress(data)  # not a zlib stream
    # Inflated without its dictionary, a primed stream is corrupt or garbage, never the SDP.
    try:
        assert decompress_sdp(data) != SDP
    except SdpCompressionError:
        pass
    # A stream compressed without a dictionary inflates whatever dictionary is primed.
    assert decompress_sdp(compress_sdp(SDP), previous) == SDP


def test_dictionary_is_cut_as_the_js_client_cuts_it() -> None:
    head = "a" * MAX_DICTIONARY_CHARS
    previous = head + "TAIL-ONLY-IN-THE-LONG-DICTIONARY" * 10
    data = compress_sdp(SDP + "TAIL-ONLY-IN-THE-LONG-DICTIONARY", previous)
    # What the JS client (pako) uses is the first 31744 characters of the previous SDP.
    plain = zlib.decompressobj(wbits=-15, zdict=head.encode()).decompress(data)
    assert plain.decode() == SDP + "TAIL-ONLY-IN-THE-LONG-DICTIONARY"


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff\xff", compress_sdp(SDP)[:-4], b"", RAW_NOT_UTF8],
    ids=["garbage", "truncated", "empty", "not-utf8"],
)
def test_bad_streams_are_refused(data: bytes) -> None:
    with pytest.raises(SdpCompressionError):
        decompress_sdp(data)


def test_a_small_stream_cannot_inflate_without_bound() -> None:
    bomb = compress_sdp("a" * (4 << 20))
    assert len(bomb) < 8192
    with pytest.raises(SdpCompressionError, match="more than"):
        decompress_sdp(bomb)


# --- compressed SDP on the wire ------------------------------------------------------------
async def test_compression_is_agreed_only_when_asked(service: Service) -> None:
    meeting = service.meeting()
    plain, plain_ack, _ = await joined(service, meeting, "plain")
    assert not plain_ack.HasField("wants_compressed_sdp")
    zipped, zipped_ack, _ = await joined(service, meeting, "zipped", compressed=True)
    assert zipped_ack.wants_compressed_sdp is True
    for client in (plain, zipped):
        await client.ws.close()


async def test_compressed_subscribe_answered_compressed_and_media_flows(service: Service) -> None:
    meeting = service.meeting()
    client, _, _ = await joined(service, meeting, "alice", compressed=True)
    peer = Peer(client, compressed=True)
    ack = await peer.subscribe()
    assert ack.suback.compressed_sdp_answer and not ack.suback.sdp_answer
    assert "m=audio" in peer.codec.previous_answer
    track = await asyncio.wait_for(peer.remote, TIMEOUT)
    assert isinstance(await asyncio.wait_for(track.recv(), TIMEOUT), AudioFrame)
    assert client.attendee is not None
    me = client.attendee.attendee_id
    await wait_for_info(client, lambda i: any(e.attendee_id == me for e in i))

    # A re-offer: both sides now prime with the previous SDP of the same direction.
    peer.pc.addTransceiver("video", direction="recvonly")
    first_answer = peer.codec.previous_answer
    ack = await peer.subscribe()
    assert ack.suback.compressed_sdp_answer
    try:  # it really was primed with the first answer: useless without it
        unprimed: str | None = decompress_sdp(ack.suback.compressed_sdp_answer)
    except SdpCompressionError:
        unprimed = None
    assert unprimed != peer.codec.previous_answer
    assert peer.codec.previous_answer != first_answer
    assert "m=video" in peer.codec.previous_answer
    assert isinstance(await asyncio.wait_for(track.recv(), TIMEOUT), AudioFrame)
    assert peer.pc.connectionState == "connected"
    await peer.close()


async def test_plain_client_gets_plain_answers(service: Service) -> None:
    client, _, _ = await joined(service, service.meeting(), "plain")
    peer = Peer(client, compressed=False)
    ack = await peer.subscribe()
    assert ack.suback.sdp_answer.startswith("v=0")
    assert not ack.suback.HasField("compressed_sdp_answer")
    await peer.close()


async def test_corrupt_compressed_offer_is_a_bad_request(service: Service) -> None:
    client, _, _ = await joined(service, service.meeting(), "alice", compressed=True)
    sub = frame(T.SUBSCRIBE)
    sub.sub.compressed_sdp_offer = b"\x00not deflate at all"
    await client.send(sub)
    status = await client.expect(T.AUDIO_STATUS)
    assert status.error.status == 400  # the JS client: SignalingBadRequest
    assert await client.closed() == 4400


# --- JOIN flags and view-only video ----------------------------------------------------------
async def test_join_without_stream_updates_gets_no_presence(service: Service) -> None:
    """The C++ SDK clears HAS_STREAM_UPDATE to go without attendee presence (flags 32)."""
    meeting = service.meeting()
    quiet_client, quiet_ack, _ = await joined(
        service, meeting, "quiet", flags=pb.EXCLUDE_SELF_CONTENT_IN_INDEX
    )
    quiet = Peer(quiet_client, compressed=False)
    await quiet.subscribe()
    everyone = pb.HAS_STREAM_UPDATE | pb.SEND_BITRATES | pb.USE_SEND_SIDE_BWE | 16 | 32
    loud_client, _, _ = await joined(service, meeting, "loud", flags=everyone)
    loud = Peer(loud_client, compressed=False)
    await loud.subscribe()
    assert quiet_client.attendee is not None and loud_client.attendee is not None
    ids = {quiet_client.attendee.attendee_id, loud_client.attendee.attendee_id}
    # The one that asked sees both present, so both media arrived.
    seen: set[str] = set()
    while seen != ids:
        seen |= {e.attendee_id for e in await wait_for_info(loud_client, lambda i: True)}
    await quiet_client.ping(7)
    assert quiet_client.pending_of(T.AUDIO_STREAM_ID_INFO) == []
    assert quiet_ack.video_subscription_limit > 0  # otherwise a normal session
    await quiet.close()
    await loud.close()


async def test_video_send_beyond_capacity_is_view_only(service: Service) -> None:
    service.server.video_send_limit = 1
    meeting = service.meeting()
    first_client, _, first_index = await joined(service, meeting, "first")
    assert first_index.at_capacity is False
    first = Peer(first_client, compressed=False, video=True)
    ack = (await first.subscribe(video_send=True)).suback
    assert [a.track_label for a in ack.allocations] == ["video"]  # video send streams only

    second_client, _, second_index = await joined(service, meeting, "second")
    assert second_index.at_capacity is True  # the JS client: canStartLocalVideo false
    second = Peer(second_client, compressed=False, video=True)
    refused = await second.subscribe(video_send=True)
    assert refused.error.status == 206  # the JS client: VideoCallSwitchToViewOnly
    assert list(refused.suback.allocations) == []
    await second_client.ping(1)  # view only is not an ending
    assert second_client.pending_of(T.AUDIO_STATUS) == []
    # The sender keeps its place across re-offers; once it stops, the place is free.
    assert not (await first.subscribe(video_send=True)).HasField("error")
    await first.subscribe(video_send=False)
    admitted = await second.subscribe(video_send=True)
    assert not admitted.HasField("error")
    assert len(admitted.suback.allocations) == 1
    await first.close()
    await second.close()


# --- frames accepted as Chime accepts them ---------------------------------------------------
async def test_metrics_bitrates_and_malformed_frames_never_end_a_session(
    service: Service,
) -> None:
    client, _, _ = await joined(service, service.meeting(), "alice")
    metric = frame(T.CLIENT_METRIC)
    metric.client_metric.global_metrics.add(type=1, value=0.5)
    metric.client_metric.stream_metric_frames.add(stream_id=1, group_id=1).metrics.add(
        type=2, value=1.0
    )
    bitrates = frame(T.BITRATES)
    bitrates.bitrates.bitrates.add(source_stream_id=3, avg_bitrate_bps=1000)
    for f in (metric, bitrates):
        await client.send(f)
    header = bytes([0x05, 0x08, 0x01, 0x10])
    await client.ws.send_bytes(header + bytes([T.CLIENT_METRIC]) + b"\xb2\x01\x05\xff\xff")
    await client.ws.send_bytes(header + bytes([T.BITRATES]) + b"\x72\x03\x0a\x80")  # truncated
    await client.ws.send_bytes(header + bytes([T.SUBSCRIBE]) + b"\x32\x00")  # empty SUBSCRIBE
    pause = frame(T.PAUSE)
    pause.pause.stream_ids.extend([5, 6])
    pause.pause.group_ids.append(9)
    await client.send(pause)
    await client.ping(3)
    assert client.pending_of(T.AUDIO_STATUS) == []
    await client.send(frame(T.LEAVE))
    await client.expect(T.LEAVE_ACK)
    assert await client.closed() == 1000


# --- keep-alive --------------------------------------------------------------------------------
class Answering:
    """A signaling client that answers every PING (as the SDKs do) and queues the rest."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: asyncio.Queue[pb.SdkSignalFrame | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            msg = await self.client.ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                await self.frames.put(None)
                return
            f = pb.SdkSignalFrame()
            f.ParseFromString(msg.data[1:])
            if f.type == T.PING_PONG and f.ping_pong.type == pb.PING:
                pong = frame(T.PING_PONG)
                pong.ping_pong.type = pb.PONG
                pong.ping_pong.ping_id = f.ping_pong.ping_id
                await self.client.send(pong)
            else:
                await self.frames.put(f)

    async def info(self) -> list[pb.SdkAudioStreamIdInfo]:
        while True:
            f = await asyncio.wait_for(self.frames.get(), TIMEOUT)
            assert f is not None, "the socket closed"
            if f.type == T.AUDIO_STREAM_ID_INFO:
                return list(f.audio_stream_id_info.streams)

    async def close(self) -> None:
        await self.client.ws.close()
        await self._task


async def test_client_that_stops_answering_pings_is_dropped(service: Service) -> None:
    service.server.ping_interval = 0.05
    meeting = service.meeting()
    alice_client, _, _ = await joined(service, meeting, "alice")
    alice_peer = Peer(alice_client, compressed=False)
    await alice_peer.subscribe()
    alice = Answering(alice_client)
    bob_client, _, _ = await joined(service, meeting, "bob")
    bob = Peer(bob_client, compressed=False)
    await bob.subscribe()
    assert bob_client.attendee is not None
    b_id = bob_client.attendee.attendee_id
    b_stream = 0
    while not b_stream:  # bob is present for alice
        b_stream = next((e.audio_stream_id for e in await alice.info() if e.attendee_id == b_id), 0)

    # Bob never answers: after three unanswered PINGs he is dropped, and alice is told so.
    pings = [f for f in bob_client.pending if f.type == T.PING_PONG]
    while (f := await bob_client.read()) is not None:
        if f.type == T.PING_PONG:
            pings.append(f)
    assert bob_client.ws.close_code == 4504
    assert [p.ping_pong.type for p in pings] == [pb.PING] * 3
    gone: list[pb.SdkAudioStreamIdInfo] = []
    while not any(e.audio_stream_id == b_stream for e in gone):
        gone = await alice.info()
    entry = next(e for e in gone if e.audio_stream_id == b_stream)
    assert entry.dropped is True and not entry.HasField("attendee_id")
    assert not alice_client.ws.closed  # answering keeps a session alive
    await alice.close()
    await alice_peer.pc.close()
    await bob.pc.close()


# --- the events endpoint -----------------------------------------------------------------------
async def test_event_ingestion_url_accepts_the_sdk_requests(embedded: EmbeddedChime) -> None:
    meeting = embedded.registry.create_meeting("tok-events", "events")
    url = meeting.to_json(*embedded.urls())["MediaPlacement"]["EventIngestionUrl"]  # type: ignore[index]
    assert url == f"{embedded.base_url}/events"
    body = '{"metadata": {}, "events": [{"type": "Meet", "v": 1, "payloads": []}]}'
    async with aiohttp.ClientSession() as http:
        # fetch: Bearer join token; the SDK reads a JSON body from an OK answer.
        async with http.post(url, data=body, headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 200
            assert await r.json() == {}
        # sendBeacon on page unload: the token is in the body, a text/plain one.
        async with http.post(
            f"{url}?beacon=1", data=body, headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 200
        async with http.options(url, headers={"Access-Control-Request-Method": "POST"}) as r:
            assert r.status == 204
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.post(url, data=b"x" * (257 * 1024)) as r:
            assert r.status == 413


# --- the official web client in headless Chromium ----------------------------------------------
# amazon-chime-sdk-js 3.32.0 logs this at leave when a stats round is still in flight:
# StatsCollector.stop() drops its compute-pressure monitor, which the round then reads.
SDK_RACE_AT_LEAVE = ("Cannot read properties of null (reading 'currentState')",)


async def console_line(page: Page, text: str, count: int = 1, limit: float = 20) -> None:
    """Wait until the page has logged `text` `count` times (the console arrives as events)."""
    deadline = asyncio.get_running_loop().time() + limit
    while sum(text in m.text for m in page.console) < count:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the page did not log {text!r} {count} times")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
@pytest.mark.browser
@pytest.mark.slow
async def test_official_client_joins_compressed_with_a_clean_console(
    embedded: EmbeddedChime,
) -> None:
    async with Browser() as browser:
        page = await browser.open(embedded.base_url + "/?log=info")
        ids = await page.eval("chimedPage.join('conformance', 'alice', {audio: 'silence'})", 40)
        state = await page.eval("chimedPage.waitFor((s) => s.roster.length > 0)", 20)
        assert state["status"] == "started"
        assert [e["attendeeId"] for e in state["roster"]] == [ids["attendeeId"]]
        # Its own words: the SUBSCRIBE carried compressed_sdp_offer, our answer was compressed.
        await console_line(page, "Compressed the SDP message")
        await console_line(page, "Decompressed the SDP message")
        # Starting the camera re-subscribes (DUPLEX): that answer is primed with the first.
        await page.eval("chimedPage.startCamera()", 20)
        await console_line(page, "Decompressed the SDP message", count=2)
        assert (await page.eval("chimedPage.state"))["status"] == "started"
        stopped = await page.eval("chimedPage.leave()", 20)
        assert stopped["stopStatus"]["name"] == "Left"
        # The SDK posts its meeting events (meetingEnded at once) to EventIngestionUrl.
        statuses = await page.wait_for(
            "(() => { const e = performance.getEntriesByType('resource')"
            ".filter((r) => r.name.endsWith('/events')).map((r) => r.responseStatus);"
            " return e.length ? e : null; })()",
            20,
        )
        assert set(statuses) == {200}
        errors = [m for m in page.errors() if not any(t in m.text for t in SDK_RACE_AT_LEAVE)]
        assert errors == []
        assert not [m for m in page.console if m.level == "warning" and "events" in m.text]


@pytest.mark.timeout(120)
@pytest.mark.browser
@pytest.mark.slow
async def test_official_client_at_video_capacity_goes_view_only(embedded: EmbeddedChime) -> None:
    embedded.signaling.video_send_limit = 0
    async with Browser() as browser:
        page = await browser.open(embedded.base_url + "/?log=info")
        await page.eval("chimedPage.join('view-only', 'alice', {audio: 'silence'})", 40)
        await page.eval("chimedPage.startCamera()", 20)
        # 206 on the SUBSCRIBE_ACK: the SDK drops its local tile and goes on receiving.
        await console_line(page, "handling status: VideoCallSwitchToViewOnly")
        state = await page.eval("chimedPage.waitFor((s) => s.tiles.length === 0)", 10)
        assert state["status"] == "started"
        stopped = await page.eval("chimedPage.leave()", 20)
        assert stopped["stopStatus"]["name"] == "Left"
        errors = [m for m in page.errors() if not any(t in m.text for t in SDK_RACE_AT_LEAVE)]
        assert errors == []
