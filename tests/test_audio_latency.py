"""What keeps loopback audio prompt: the shallow receive jitter buffer, encoders that restart
from silence (no onset lost after OPUS_SILENCE), a PCM feed that releases frames as they come
and trims standing delay, and the mixer's trim of standing delay."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from av import AudioFrame
from chimed.config import MediaConfig
from chimed.devices.audio_inputs import PcmFeedInput
from chimed.embedded.mixer import TRIM_TICKS, JitterBuffer
from chimed.embedded.opus_out import OpusStream
from chimed.media import jitter
from chimed.media.ice import rtc_configuration
from chimed.media.opus import OPUS_SILENCE
from chimed.media.tracks import GateTrack

N = 960


def rtp(seq: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq % 0x10000, timestamp=seq * N)
    packet.payload = seq.to_bytes(4, "big")
    # what aiortc's receiver depayloads into the packet, which the shallow buffer passes on
    packet._data = packet.payload  # type: ignore[attr-defined]  # noqa: SLF001
    return packet


def released(buffer: jitter.ShallowJitterBuffer, seq: int) -> int | None:
    pli, frame = buffer.add(rtp(seq))
    assert not pli
    return None if frame is None else int.from_bytes(frame.data, "big")


def test_shallow_buffer_releases_in_sequence_packets_at_once_and_bounds_a_gap() -> None:
    buffer = jitter.ShallowJitterBuffer(depth=1)
    assert [released(buffer, s) for s in (10, 11, 12)] == [10, 11, 12]
    # 13 is missing: 14 waits for it (depth 1), 15 gives up on it.
    assert released(buffer, 14) is None
    assert released(buffer, 15) == 14
    assert buffer.skipped == 1
    assert released(buffer, 13) is None  # too late: dropped
    assert released(buffer, 16) == 15  # a backlog of at most `depth` packets
    assert released(buffer, 17) == 16

    at_once = jitter.ShallowJitterBuffer(depth=0)
    # Sequence numbers wrap (0x10000 goes out as 0); depth 0 never waits for a missing one.
    wrapping = (0xFFFE, 0xFFFF, 0x10000, 0x10002)
    assert [released(at_once, s) for s in wrapping] == list(wrapping)
    assert released(at_once, 5000) == 5000  # a jump this far is a restarted stream


async def test_install_swaps_an_audio_receivers_buffer_only() -> None:
    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        audio = pc.addTransceiver("audio").receiver
        video = pc.addTransceiver("video").receiver
        assert not jitter.install(audio, None)  # None: aiortc's buffer stays
        assert jitter.install(audio, 2)
        swapped = vars(audio)["_RTCRtpReceiver__jitter_buffer"]
        assert isinstance(swapped, jitter.ShallowJitterBuffer) and swapped.depth == 2
        assert not jitter.install(video, 2)
        assert not jitter.install(object(), 2)  # an aiortc without the attribute: left alone
    finally:
        await pc.close()
    with pytest.raises(ValueError):
        MediaConfig(jitter_depth=-1)


def tone(start: int, samples: int = N) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = (start + np.arange(samples)) / 48000
    return np.round(8000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)


def decoded_rms(decoder: OpusDecoder, payload: bytes, index: int) -> float:
    frame = decoder.decode(JitterFrame(payload, index * N))[0]
    assert isinstance(frame, AudioFrame)
    pcm = frame.to_ndarray().astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2)))


class _Bursts(MediaStreamTrack):
    """Unpaced 20 ms frames: 440 Hz while `loud`, digital silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.loud = True
        self.pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = tone(self.pts) if self.loud else np.zeros(N, np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, self.pts, Fraction(1, 48000)
        self.pts += N
        return frame


async def test_gate_speech_after_silence_is_heard_from_its_first_packet() -> None:
    source = _Bursts()
    gate = GateTrack(source)
    gate.opus = True
    decoder = OpusDecoder()
    try:
        index = 0
        for loud, frames in ((True, 10), (False, 20), (True, 3), (False, 5), (True, 3)):
            source.loud = loud
            for k in range(frames):
                packet = await gate.recv()
                assert isinstance(packet, av.Packet)
                payload = bytes(packet)
                level = decoded_rms(decoder, payload, index)
                index += 1
                if not loud:
                    assert payload == OPUS_SILENCE
                elif k == 0:  # the onset: a 8000-peak sine has an RMS of ~5700
                    assert level > 2000, f"onset decoded at RMS {level:.0f}"
    finally:
        gate.stop()
        source.stop()


def test_listener_encoder_after_silence_is_heard_from_its_first_packet() -> None:
    stream = OpusStream()
    decoder = OpusDecoder()
    index = 0
    for start in (0, 40 * N):  # speech, silence (OPUS_SILENCE, not encoded), speech
        for k in range(5):
            payload = stream.encode(tone(start + k * N).tobytes(), after_silence=k == 0)
            level = decoded_rms(decoder, payload, index)
            index += 1
            if k == 0:
                assert level > 2000, f"onset decoded at RMS {level:.0f}"
        for _ in range(10):
            decoded_rms(decoder, OPUS_SILENCE, index)
            index += 1


def samples_of(frame: av.AudioFrame) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1)


async def test_pcm_feed_sends_each_frame_as_it_arrives() -> None:
    feed = PcmFeedInput()
    try:
        for k in range(5):
            pending = asyncio.ensure_future(feed.recv())
            await asyncio.sleep(0)  # recv is waiting for the feeder
            assert not pending.done()
            feed.feed(tone(k * N).tobytes(), 48000, 1)
            frame = await asyncio.wait_for(pending, 1.0)
            assert np.array_equal(samples_of(frame), tone(k * N))
        assert feed.starved_frames == 0
    finally:
        feed.stop()


@pytest.mark.slow
async def test_pcm_feed_drops_delay_that_stays_buffered() -> None:
    feed = PcmFeedInput()
    try:
        for k in range(5):  # a feeder 100 ms ahead, then keeping pace
            feed.feed(tone(k * N).tobytes(), 48000, 1)
        for k in range(5, 5 + PcmFeedInput.TRIM_FRAMES):
            await feed.recv()
            feed.feed(tone(k * N).tobytes(), 48000, 1)
        assert feed.trimmed_samples == 4 * N  # the 80 ms that never drained
        assert feed.buffered_ms == 20
        assert feed.starved_frames == 0
    finally:
        feed.stop()
    with pytest.raises(MediaStreamError):
        await feed.recv()


def test_mixer_buffer_drops_delay_that_stays_buffered() -> None:
    buffer = JitterBuffer(prime=N, limit=5 * N)
    for k in range(3):
        buffer.put(tone(k * N))
    for k in range(3, 3 + TRIM_TICKS):
        assert buffer.take(N) is not None
        buffer.put(tone(k * N))
    assert buffer.trimmed == 2 * N
    assert buffer.buffered == 2 * N - 2 * N + N  # one tick left: the one just put
    assert buffer.dropped == 0
