"""chimed's own RTP paths, against a plain aiortc peer on loopback.

Sending (chimed.media.rtp_send): the packets aiortc's loop would send (one SSRC, consecutive
sequence numbers, timestamps 960 apart, marker and mid set, Opus payloads that decode to the
tone), the RTCP sender reports its counters feed, and a close that ends it.
Receiving (chimed.media.rtp_receive): an unheard mix is counted where aiortc counts it (our
RTCP receiver reports reach the sender, with no loss) but not decoded; once heard it decodes
to the tone, also when a step of aiortc's handling suspends."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket
from av import AudioFrame
from chimed.devices.audio_inputs import PcmFeedInput, ToneInput
from chimed.embedded.turn_relay import TurnRelay
from chimed.media.ice import pin_host_addresses, rtc_configuration
from chimed.media.opus import OPUS_SILENCE
from chimed.media.peer import ChimePeer
from chimed.session.audio_tracks import InputSwitch

pytestmark = pytest.mark.slow


def _opus_payload_type(sdp: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:") and "opus/48000" in line.lower():
            return int(line[len("a=rtpmap:") :].split()[0])
    raise AssertionError("no Opus in the answer")


def _peak_hz(payloads: list[bytes]) -> float:
    decoder = av.CodecContext.create("libopus", "r")
    pcm = np.concatenate(
        [
            frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            for payload in payloads
            for frame in decoder.decode(av.Packet(payload))
        ]
    ).astype(float)
    return float(np.argmax(np.abs(np.fft.rfft(pcm))) * 48000 / len(pcm))


async def _remote_outbound(remote: RTCPeerConnection) -> Any:
    """The remote's view of our RTCP sender reports, once one has arrived."""
    receiver = remote.getTransceivers()[0].receiver
    for _ in range(150):
        for stats in (await receiver.getStats()).values():
            if stats.type == "remote-outbound-rtp":
                return stats
        await asyncio.sleep(0.02)
    raise AssertionError("no RTCP sender report arrived")


async def test_own_rtp_loop_sends_what_aiortcs_would_and_feeds_sender_reports() -> None:
    pin_host_addresses(["127.0.0.1"])
    tone = ToneInput(frequency_hz=440, level_dbfs=-10)
    remote = RTCPeerConnection(rtc_configuration([]))
    packets: list[RtpPacket] = []
    got = asyncio.Event()
    peer = ChimePeer(audio_input=tone)
    try:
        sender = peer._transceiver.sender
        assert peer.own_rtp  # the loop of chimed.media.rtp_send, not aiortc's
        offer = await peer.create_offer()
        await remote.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await remote.setLocalDescription(await remote.createAnswer())
        answer = remote.localDescription.sdp
        dtls = remote.getTransceivers()[0].receiver.transport
        handle = dtls._handle_rtp_data

        async def spy(data: bytes, arrival_time_ms: int) -> None:
            packets.append(RtpPacket.parse(data, dtls._rtp_header_extensions_map))
            if len(packets) >= 60:
                got.set()
            await handle(data, arrival_time_ms)

        dtls._handle_rtp_data = spy  # type: ignore[method-assign]
        await peer.apply_answer(answer)
        await asyncio.wait_for(got.wait(), 15)

        first = packets[0]
        assert first.ssrc == sender._ssrc
        assert {p.ssrc for p in packets} == {first.ssrc}
        assert {p.payload_type for p in packets} == {_opus_payload_type(answer)}
        assert all(p.marker == 1 and p.extensions.mid == "0" for p in packets)
        for before, after in itertools.pairwise(packets):
            assert after.sequence_number == (before.sequence_number + 1) % 65536
            assert after.timestamp == (before.timestamp + 960) % 2**32
        speech = [p.payload for p in packets if p.payload != OPUS_SILENCE]
        assert len(speech) >= 55 and abs(_peak_hz(speech[5:]) - 440) <= 2

        report = await _remote_outbound(remote)
        sent = len(packets)
        assert 0 < report.packetsSent <= sent + 75  # sent before the report, within ~1.5 s
        assert report.bytesSent >= 3 * report.packetsSent
        assert report.remoteTimestamp is not None
    finally:
        await asyncio.wait_for(peer.close(), 5)  # stop() waits for the loop to end
        await remote.close()
        tone.stop()
    assert sender.track is None  # the loop ended and let go of the gate, as aiortc's does


async def _stats(target: Any, kind: str, ready: Any = lambda s: True) -> Any:
    for _ in range(200):
        for stats in (await target.getStats()).values():
            if stats.type == kind and ready(stats):
                return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} statistics arrived")


def _frames_peak_hz(frames: list[AudioFrame]) -> float:
    pcm = np.concatenate(
        [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]
    ).astype(float)
    return float(np.argmax(np.abs(np.fft.rfft(pcm))) * frames[0].sample_rate / len(pcm))


class _Heard:
    """An audio consumer for ChimePeer that keeps the decoded frames; `enough` after `count`."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.frames: list[AudioFrame] = []
        self.enough = asyncio.Event()

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            assert isinstance(frame, AudioFrame)
            self.frames.append(frame)
            if len(self.frames) >= self.count:
                self.enough.set()


async def _connect_to_tone(peer: ChimePeer, remote: RTCPeerConnection, tone: ToneInput) -> None:
    offer = await peer.create_offer()
    await remote.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    transceiver = remote.getTransceivers()[0]
    transceiver.sender.replaceTrack(tone)
    transceiver.direction = "sendrecv"
    await remote.setLocalDescription(await remote.createAnswer())
    await peer.apply_answer(remote.localDescription.sdp)


async def test_unheard_mix_is_counted_for_receiver_reports_then_decoded_once_heard() -> None:
    pin_host_addresses(["127.0.0.1"])
    tone = ToneInput(frequency_hz=440, level_dbfs=-10)
    remote = RTCPeerConnection(rtc_configuration([]))
    heard = _Heard(50)
    peer = ChimePeer()
    try:
        assert peer.inline_receive
        await _connect_to_tone(peer, remote, tone)
        gate = peer._decode_gate
        assert gate is not None and not peer.decoding
        receiver = peer._transceiver.receiver
        inbound = await _stats(receiver, "inbound-rtp", lambda s: s.packetsReceived >= 50)
        assert gate.dropped >= 50 and not heard.frames
        # our receiver reports, made from those counts, reach the sender: no loss on loopback
        report = await _stats(
            remote.getTransceivers()[0].sender, "remote-inbound-rtp", lambda s: s.ssrc > 0
        )
        assert report.packetsLost == 0 and report.fractionLost == 0
        assert inbound.packetsLost == 0

        peer.set_audio_output(heard.consume)
        await asyncio.wait_for(heard.enough.wait(), 10)
        assert abs(_frames_peak_hz(heard.frames[10:]) - 440) <= 5
    finally:
        await peer.close()
        await remote.close()
        tone.stop()


async def test_a_receive_step_that_suspends_is_finished_in_a_task() -> None:
    pin_host_addresses(["127.0.0.1"])
    tone = ToneInput(frequency_hz=440, level_dbfs=-10)
    remote = RTCPeerConnection(rtc_configuration([]))
    heard = _Heard(30)
    suspended = 0
    peer = ChimePeer(audio_output=heard.consume)
    dtls = peer._transceiver.receiver.transport
    handle = dtls._handle_rtp_data

    async def suspending(data: bytes, arrival_time_ms: int) -> None:
        nonlocal suspended
        suspended += 1
        await asyncio.sleep(0.001)  # a step that does not finish inline
        await handle(data, arrival_time_ms)

    dtls._handle_rtp_data = suspending  # type: ignore[method-assign]
    try:
        await _connect_to_tone(peer, remote, tone)
        await asyncio.wait_for(heard.enough.wait(), 10)
        assert suspended >= 30
        assert abs(_frames_peak_hz(heard.frames[10:]) - 440) <= 5
    finally:
        await peer.close()
        await remote.close()
        tone.stop()


class _Arrivals(list[tuple[float, RtpPacket]]):
    """The packets a remote received from the peer, with their arrival times."""

    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    async def until(self, count: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self) < count:
                self.more.clear()
                await self.more.wait()


async def _connect_spied(
    peer: ChimePeer, remote: RTCPeerConnection, back: MediaStreamTrack | None = None
) -> _Arrivals:
    """Connect `peer` to `remote` (which sends `back` if given); the packets `remote` receives
    from `peer` fill the returned list."""
    arrived = _Arrivals()
    offer = await peer.create_offer()
    await remote.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    transceiver = remote.getTransceivers()[0]
    if back is not None:
        transceiver.sender.replaceTrack(back)
        transceiver.direction = "sendrecv"
    dtls = transceiver.receiver.transport
    handle = dtls._handle_rtp_data

    async def spy(data: bytes, arrival_time_ms: int) -> None:
        arrived.append((time.monotonic(), RtpPacket.parse(data, dtls._rtp_header_extensions_map)))
        arrived.more.set()
        await handle(data, arrival_time_ms)

    dtls._handle_rtp_data = spy  # type: ignore[method-assign]
    await remote.setLocalDescription(await remote.createAnswer())
    await peer.apply_answer(remote.localDescription.sdp)
    return arrived


def _one_timeline(packets: list[RtpPacket]) -> None:
    assert len({p.ssrc for p in packets}) == 1
    for before, after in itertools.pairwise(packets):
        assert after.sequence_number == (before.sequence_number + 1) % 65536
        assert after.timestamp == (before.timestamp + 960) % 2**32


async def test_clocked_and_self_paced_inputs_share_one_rtp_timeline() -> None:
    """A tone is sent on the send loop's own timer, a fed input from the loop's task; swapping
    one for the other (both ways) under a running stream keeps one timeline, no gap."""
    pin_host_addresses(["127.0.0.1"])
    first, fed, last = ToneInput(440, -10), PcmFeedInput(), ToneInput(440, -10)
    switch = InputSwitch(first, lambda source, reason: None)
    remote = RTCPeerConnection(rtc_configuration([]))
    peer = ChimePeer(audio_input=switch)
    try:
        assert peer._send_loop is not None
        arrived = await _connect_spied(peer, remote)
        await arrived.until(25)
        stream = peer._send_loop.stream
        assert stream is not None and stream.timer is not None  # waiting on the clock
        switch.source = fed
        first.stop()
        feeding = True

        async def feed() -> None:
            wave = first._table
            assert wave is not None
            i = 0
            while feeding:
                fed.feed(wave[i % len(wave)], 48000, 1)
                i += 1
                await asyncio.sleep(0.02)

        feeder = asyncio.create_task(feed())
        count = len(arrived)
        await arrived.until(count + 25)
        assert stream.timer is None  # a fed input paces itself: the task waits for it
        switch.source = last
        fed.stop()
        feeding = False
        await feeder
        count = len(arrived)
        await arrived.until(count + 25)
        assert stream.timer is not None
        _one_timeline([p for _, p in arrived])
        speech = [p.payload for _, p in arrived if p.payload != OPUS_SILENCE]
        assert len(speech) >= 60 and abs(_peak_hz(speech[5:]) - 440) <= 2
    finally:
        await asyncio.wait_for(peer.close(), 5)
        await remote.close()
        for source in (first, fed, last):
            source.stop()
    assert peer._send_loop.stream is None  # the loop ended, its timer with it


async def test_a_received_packet_releases_the_next_frame_never_more_than_one_ahead() -> None:
    """Received packets nudge the clocked stream: the frame due within one frame goes out in
    that wake-up, and however often it is nudged the stream never gets more than one frame
    ahead of its clock."""
    pin_host_addresses(["127.0.0.1"])
    tone, back = ToneInput(440, -10), ToneInput(660, -10)
    remote = RTCPeerConnection(rtc_configuration([]))
    peer = ChimePeer(audio_input=tone)
    try:
        send_loop = peer._send_loop
        assert send_loop is not None
        arrived = await _connect_spied(peer, remote, back)
        await arrived.until(10)
        stream = send_loop.stream
        assert stream is not None
        start = time.monotonic()
        sent_before = len(arrived)
        nudged = 0
        for _ in range(50):
            await asyncio.sleep(0.007)
            sequence_number = stream.sequence_number
            for _ in range(5):
                send_loop.nudge()  # what each received packet does
            released = (stream.sequence_number - sequence_number) % 65536
            # the frame due next unless a received packet released it already (and one
            # overdue, if any)
            assert released <= 2
            nudged += released
            # the frame released last was due no later than one frame from now
            pacer = tone._pacer
            assert pacer._origin is not None
            last_due = pacer._origin + (pacer._next - 1) * pacer.frame_seconds
            assert last_due <= time.monotonic() + pacer.frame_seconds + 0.001
            assert len(arrived) - sent_before <= (time.monotonic() - start) / 0.02 + 2
        assert nudged > 0
        await arrived.until(len(arrived) + 5)  # and the clock goes on after the nudges
        _one_timeline([p for _, p in arrived])
        assert len(arrived) - sent_before <= (time.monotonic() - start) / 0.02 + 2
    finally:
        await asyncio.wait_for(peer.close(), 5)
        await remote.close()
        tone.stop()
        back.stop()


async def test_through_the_relay_each_packet_is_sent_in_one_synchronous_call() -> None:
    """Relay-only ICE through the embedded TURN relay (as in every meeting): packets go out
    through direct_send (protect and the TURN channel's socket), not aiortc's _send_rtp
    coroutine, which only RTCP still takes; the DTLS transport's counters still count them."""
    pin_host_addresses(["127.0.0.1"])
    relay = TurnRelay()
    await relay.start()
    ours, theirs = relay.issue_credentials("attendee-a"), relay.issue_credentials("attendee-b")
    tone = ToneInput(440, -10)
    remote = RTCPeerConnection(
        rtc_configuration(list(theirs.uris), theirs.username, theirs.password)
    )
    peer = ChimePeer(list(ours.uris), ours.username, ours.password, audio_input=tone)
    dtls = peer._transceiver.sender.transport
    general = dtls._send_rtp
    coroutine_sends: list[bytes] = []

    async def counted(data: bytes) -> None:
        coroutine_sends.append(data)
        await general(data)

    dtls._send_rtp = counted  # type: ignore[method-assign]
    try:
        arrived = await _connect_spied(peer, remote)
        await arrived.until(100)
        sdp = peer._pc.localDescription.sdp
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" typ relay " in c for c in candidates), candidates
        rtp = [d for d in coroutine_sends if not 191 < d[1] < 224]
        assert not rtp, f"{len(rtp)} RTP packets went through _send_rtp"
        transport = next(
            s for s in (await peer._transceiver.sender.getStats()).values() if s.type == "transport"
        )
        assert transport.packetsSent >= 100
        _one_timeline([p for _, p in arrived])
    finally:
        await asyncio.wait_for(peer.close(), 5)
        await remote.close()
        tone.stop()
        await relay.stop()
    assert relay.allocations == 0
