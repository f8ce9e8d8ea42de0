"""The embedded media server forwards video as Chime's SFU does, through the real embedded
service: raw aiortc attendees (tests/video_peers.py) send a camera and subscribe to each
other's, as the official web client lays out its SDP and fills its SUBSCRIBEs."""

from __future__ import annotations

import asyncio
import functools
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpRtpfbPacket
from chime.signaling import signaling_pb2 as pb
from chimed.embedded.meetings import VIDEO_SENDER_LIMIT_TAG, Meeting
from chimed.embedded.service import EmbeddedChime
from chimed.media import shortcuts

from tests.helpers import meetings_client
from tests.video_peers import VIDEO_LABEL, VideoPeer, peer

T = pb.SdkSignalFrame
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90), pytest.mark.usefixtures("loopback_only")]


@pytest.fixture
async def peers() -> AsyncIterator[list[VideoPeer]]:
    made: list[VideoPeer] = []
    yield made
    for p in made:
        await p.close()


def meeting(embedded: EmbeddedChime) -> Meeting:
    return embedded.registry.create_meeting(f"tok-{uuid.uuid4()}", "m")


async def joined(
    embedded: EmbeddedChime, m: Meeting, user: str, peers: list[VideoPeer]
) -> tuple[VideoPeer, Any]:
    attendee = embedded.registry.create_attendee(m.meeting_id, user)
    p = peer(embedded, m, attendee)
    peers.append(p)
    return p, await p.join()


async def sender_and_receiver(
    embedded: EmbeddedChime, peers: list[VideoPeer], codec: str = "VP8"
) -> tuple[VideoPeer, VideoPeer, Any]:
    """Alice sends a 320x240 camera in `codec`; bob subscribes to it. Bob's SUBSCRIBE_ACK."""
    m = meeting(embedded)
    alice, _ = await joined(embedded, m, "alice", peers)
    bob, _ = await joined(embedded, m, "bob", peers)
    await bob.subscribe()
    alice.start_camera(320, 240, codec)
    await alice.subscribe()
    index = await bob.index(lambda i: len(i.sources) == 1)
    bob.receive(index.sources[0].stream_id)
    return alice, bob, await bob.subscribe()


# --- forwarding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_a_subscriber_decodes_the_sent_picture(
    embedded: EmbeddedChime, peers: list[VideoPeer], codec: str
) -> None:
    alice, bob, ack = await sender_and_receiver(embedded, peers, codec)
    (received,) = bob.received.values()
    assert await received.frames(10) == [(320, 240)] * 10
    # The answer section bob receives on: sendonly, msid v_<mid>, its SSRC in tracks.
    mid = received.transceiver.mid
    section = _section(ack.suback.sdp_answer, mid)
    assert "a=sendonly" in section
    msid = re.search(r"a=msid:(\S+) (\S+)", section)
    assert msid is not None and msid.group(1) == f"v_{mid}"
    ssrc = int(re.findall(r"a=ssrc:(\d+) ", section)[0])
    video_tracks = [t for t in ack.suback.tracks if t.track_label.startswith("v_")]
    assert [(t.stream_id, t.ssrc, t.track_label) for t in video_tracks] == [
        (received.stream_id, ssrc, f"v_{mid}")
    ]
    # Alice sends what her answer lists first: the codec asked for, forwarded as is.
    assert _codecs(_section(_answer(alice), alice.camera.mid))[0] == codec


async def test_each_recvonly_section_carries_the_stream_asked_for_on_it(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    """SUBSCRIBE [0, a, b]: the zero (camera slot) is skipped, a and b go to the recvonly
    sections in order; told apart here by their picture sizes."""
    m = meeting(embedded)
    bob, _ = await joined(embedded, m, "bob", peers)
    await bob.subscribe()
    sizes = {"alice": (320, 240), "carol": (160, 120)}
    for user, (width, height) in sizes.items():
        sender, _ = await joined(embedded, m, user, peers)
        sender.start_camera(width, height)
        await sender.subscribe()
    index = await bob.index(lambda i: len(i.sources) == 2)
    by_user = {s.external_user_id: s.stream_id for s in index.sources}
    for stream_id in sorted(by_user.values()):  # ascending, as the JS client adds them
        bob.receive(stream_id)
    ack = await bob.subscribe()
    for user, size in sizes.items():
        assert (await bob.received[by_user[user]].frames(3))[-1] == size
    labels = {
        t.stream_id: t.track_label
        for t in ack.suback.tracks
        if t.track_label != "AmazonChimeExpressAudio"
    }
    assert labels == {r.stream_id: f"v_{r.transceiver.mid}" for r in bob.received.values()}


def _section(sdp: str, mid: str | None) -> str:
    for part in sdp.split("\nm=")[1:]:
        if f"a=mid:{mid}\r" in part or part.rstrip().endswith(f"a=mid:{mid}"):
            return part
    raise AssertionError(f"no section {mid}")


def _codecs(section: str) -> list[str]:
    return re.findall(r"a=rtpmap:\d+ (\S+)/", section)


async def test_index_lists_sources_to_others_and_subscribe_ack_allocates(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    m = meeting(embedded)
    alice, first = await joined(embedded, m, "alice", peers)
    assert list(first.sources) == [] and first.at_capacity is False
    bob, _ = await joined(embedded, m, "bob", peers)
    await bob.subscribe()
    alice.start_camera()
    ack = await alice.subscribe()
    camera = _section(ack.suback.sdp_answer, alice.camera.mid)
    assert "a=recvonly" in camera
    (allocation,) = ack.suback.allocations
    assert allocation.track_label == VIDEO_LABEL
    # INDEX to the others: alice's camera with a server-assigned stream and group.
    index = await bob.index(lambda i: len(i.sources) == 1)
    (source,) = index.sources
    assert (source.stream_id, source.group_id) == (allocation.stream_id, allocation.group_id)
    assert source.attendee_id == alice.attendee_id
    assert source.external_user_id == "alice"
    assert source.media_type == pb.VIDEO
    assert source.max_bitrate_kbps == 1500 and source.framerate == 15
    # Both offered VP8 and H.264 constrained baseline: both can be decoded by everyone.
    assert list(index.supported_receive_codec_intersection) == [
        pb.VP8,
        pb.H264_CONSTRAINED_BASELINE_PROFILE,
    ]
    # Its own INDEX leaves its camera out.
    own = await alice.index()
    assert list(own.sources) == []
    # The picture size, once a keyframe shows it, updates the INDEX.
    sized = await bob.index(lambda i: len(i.sources) == 1 and i.sources[0].width > 0)
    assert (sized.sources[0].width, sized.sources[0].height) == (320, 240)
    # A stop, and the source is gone for everyone.
    alice.stop_camera()
    ack = await alice.subscribe()
    assert "a=inactive" in _section(ack.suback.sdp_answer, alice.camera.mid)
    assert list(ack.suback.allocations) == []
    assert list((await bob.index(lambda i: len(i.sources) == 0)).sources) == []


async def test_sender_limit_gives_206_and_at_capacity(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    # The limit of 1, set through the boto3-compatible control plane.
    client = meetings_client(embedded.base_url)
    created = await asyncio.to_thread(
        client.create_meeting,
        ClientRequestToken="limited",
        ExternalMeetingId="limited",
        MediaRegion="us-east-1",
        Tags=[{"Key": VIDEO_SENDER_LIMIT_TAG, "Value": "1"}],
    )
    client.close()
    m = embedded.registry.get_meeting(created["Meeting"]["MeetingId"])
    alice, _ = await joined(embedded, m, "alice", peers)
    bob, _ = await joined(embedded, m, "bob", peers)
    alice.start_camera()
    await alice.subscribe()
    index = await bob.index(lambda i: len(i.sources) == 1)
    assert index.at_capacity is True
    bob.start_camera()
    bob.receive(index.sources[0].stream_id)
    refused = await bob.subscribe(status=206)
    assert "a=inactive" in _section(refused.suback.sdp_answer, bob.camera.mid)
    assert list(refused.suback.allocations) == []
    # View only: bob goes on receiving alice.
    assert await bob.received[index.sources[0].stream_id].frames(3) == [(320, 240)] * 3


async def test_pause_and_resume_stop_and_restart_one_receiver(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    _, bob, _ = await sender_and_receiver(embedded, peers)
    (received,) = bob.received.values()
    await received.frames(3)
    pause = T(type=T.PAUSE)
    pause.pause.stream_ids.append(received.stream_id)
    await bob.send(pause)
    await _settled(received.sizes)
    count = len(received.sizes)
    await asyncio.sleep(0.5)  # half a second at 15 fps: 7 frames, had it not paused
    assert len(received.sizes) == count
    resume = T(type=T.RESUME)
    resume.pause.stream_ids.append(received.stream_id)
    await bob.send(resume)
    assert (await received.frames(count + 5))[-1] == (320, 240)


async def _settled(sizes: list[Any]) -> None:
    """Until no frame arrived for 0.3 s (what was in flight at a pause has landed)."""
    while True:
        before = len(sizes)
        await asyncio.sleep(0.3)
        if len(sizes) == before:
            return


# --- keyframes --------------------------------------------------------------------------------
@pytest.fixture
def feedback() -> Iterator[list[tuple[Any, Any]]]:
    """Every RTCP feedback packet (PLI, NACK...) an aiortc sender of this process gets, with
    the sender: (sender, packet)."""
    seen: list[tuple[Any, Any]] = []
    original = RTCRtpSender._handle_rtcp_packet

    async def spy(self: RTCRtpSender, packet: Any) -> None:
        if isinstance(packet, (RtcpPsfbPacket, RtcpRtpfbPacket)):
            seen.append((self, packet))
        await original(self, packet)

    RTCRtpSender._handle_rtcp_packet = spy  # type: ignore[method-assign]
    yield seen
    RTCRtpSender._handle_rtcp_packet = original  # type: ignore[method-assign]


def plis(feedback: list[tuple[Any, Any]]) -> list[tuple[Any, int]]:
    return [
        (sender, p.media_ssrc)
        for sender, p in feedback
        if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI
    ]


def nacks(feedback: list[tuple[Any, Any]]) -> list[tuple[Any, int, list[int]]]:
    return [
        (sender, p.media_ssrc, list(p.lost))
        for sender, p in feedback
        if isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK
    ]


async def arrived(condition: Callable[[], bool]) -> None:
    """Until `condition()` holds, for feedback that travels on its own (bounded)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_keyframe_requests_reach_the_sender(
    embedded: EmbeddedChime, peers: list[VideoPeer], feedback: list[tuple[Any, Any]]
) -> None:
    alice, bob, _ = await sender_and_receiver(embedded, peers)
    (received,) = bob.received.values()
    await received.frames(3)
    # The new subscription asked alice's camera for a keyframe, on alice's own SSRC.
    camera = alice.camera.sender
    assert (camera, camera._ssrc) in plis(feedback)
    await asyncio.sleep(0.3)  # past the server's feedback interval
    before = len(plis(feedback))
    # Bob's PLI on its section reaches alice, mapped to her SSRC.
    ssrc = _ssrc(bob, received.transceiver.mid)
    await received.transceiver.receiver._send_rtcp_pli(ssrc)
    await arrived(lambda: len(plis(feedback)) > before)
    assert plis(feedback)[before:] == [(camera, camera._ssrc)]


async def test_a_receivers_nack_reaches_the_sender(
    embedded: EmbeddedChime, peers: list[VideoPeer], feedback: list[tuple[Any, Any]]
) -> None:
    alice, bob, _ = await sender_and_receiver(embedded, peers)
    (received,) = bob.received.values()
    await received.frames(3)
    ssrc = _ssrc(bob, received.transceiver.mid)
    streams = vars(received.transceiver.receiver)["_RTCRtpReceiver__remote_streams"]
    last = streams[ssrc].max_seq
    await received.transceiver.receiver._send_rtcp_nack(ssrc, [last])
    await arrived(lambda: bool(nacks(feedback)))
    # The first run of a section keeps the source's numbers: the same one, on alice's SSRC.
    camera = alice.camera.sender
    assert nacks(feedback) == [(camera, camera._ssrc, [last])]


def _ssrc(p: VideoPeer, mid: str | None) -> int:
    """The SSRC the server's answer announces on the section `mid`."""
    return int(re.findall(r"a=ssrc:(\d+) ", _section(_answer(p), mid))[0])


def _answer(p: VideoPeer) -> str:
    description = p.pc.remoteDescription
    assert description is not None
    return description.sdp


# --- content share ----------------------------------------------------------------------------
async def test_a_content_share_attendee_is_a_source_of_its_own(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    m = meeting(embedded)
    alice = embedded.registry.create_attendee(m.meeting_id, "alice")
    bob, _ = await joined(embedded, m, "bob", peers)
    await bob.subscribe()
    share = peer(embedded, m, alice, alice.join_token + "#content")
    peers.append(share)
    await share.join()
    share.start_camera(640, 360)
    await share.subscribe()
    index = await bob.index(lambda i: len(i.sources) == 1)
    (source,) = index.sources
    assert source.attendee_id == f"{alice.attendee_id}#content"
    assert source.external_user_id == "alice"
    bob.receive(source.stream_id)
    await bob.subscribe()
    assert await bob.received[source.stream_id].frames(3) == [(640, 360)] * 3


# --- never decoded --------------------------------------------------------------------------
@pytest.fixture
def decoders() -> Iterator[list[str]]:
    """The names of the threads that made a video decoder, in this process."""
    made: list[str] = []
    module: Any = aiortc.rtcrtpreceiver  # its decoder thread calls the get_decoder it imported
    original = module.get_decoder

    def spy(codec: Any) -> Any:
        if codec.mimeType.lower().startswith("video/"):
            made.append(threading.current_thread().name)
        return original(codec)

    module.get_decoder = spy
    yield made
    module.get_decoder = original


async def test_video_forwarding_shortcuts_engage(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    """The media server's video hooks into aiortc (chimed.media.shortcuts) engage with the
    aiortc pinned, none stands aside: the test to run on an aiortc upgrade, with
    tests/test_shortcuts.py."""
    before = shortcuts.report()
    _, bob, _ = await sender_and_receiver(embedded, peers)
    (received,) = bob.received.values()
    await received.frames(1)
    after = shortcuts.report()
    for name in shortcuts.VIDEO_FORWARDING:
        assert after[name].engaged > before[name].engaged, after[name]
        assert after[name].stood_aside == before[name].stood_aside, after[name]


async def test_the_media_server_never_decodes_video(
    embedded: EmbeddedChime, peers: list[VideoPeer], decoders: list[str]
) -> None:
    """Two subscribers decode alice's camera: exactly two video decoders exist in this process,
    theirs; the server's receiver of the camera made none."""
    alice, bob, _ = await sender_and_receiver(embedded, peers)
    carol, index = await joined(embedded, alice_meeting(embedded, alice), "carol", peers)
    assert len(index.sources) == 1  # the INDEX after JOIN_ACK lists alice's camera
    carol.receive(index.sources[0].stream_id)
    await carol.subscribe()
    for p in (bob, carol):
        (received,) = p.received.values()
        await received.frames(10)
    assert len(decoders) == 2


def alice_meeting(embedded: EmbeddedChime, alice: VideoPeer) -> Meeting:
    return next(
        m
        for m in embedded.registry.meetings.values()
        if any(a.attendee_id == alice.attendee_id for a in m.attendees.values())
    )


async def test_a_sender_pausing_its_own_stream_is_paused_at_source(
    embedded: EmbeddedChime, peers: list[VideoPeer]
) -> None:
    alice, bob, _ = await sender_and_receiver(embedded, peers)
    (received,) = bob.received.values()
    for kind, listed in ((T.PAUSE, [received.stream_id]), (T.RESUME, [])):
        frame = T(type=kind)
        frame.pause.stream_ids.append(received.stream_id)
        await alice.send(frame)
        index = await bob.index(functools.partial(_paused_are, listed))
        assert [s.stream_id for s in index.sources] == [received.stream_id]


def _paused_are(listed: list[int], index: pb.SdkIndexFrame) -> bool:
    return list(index.paused_at_source_ids) == listed
