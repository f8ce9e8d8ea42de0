"""The client path's per-session savings: the gate hands the sender Opus packets (silence
unencoded, speech through its own mono encoder), and a peer with no audio consumer drops the
received mix before decoding; real aiortc peer connections on loopback."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription, clock
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from chimed.media import fastpath
from chimed.media.ice import pin_host_addresses, rtc_configuration
from chimed.media.opus import OPUS_SILENCE, first_audio_codec
from chimed.media.peer import ChimePeer
from chimed.media.tracks import GateTrack


class _Source(MediaStreamTrack):
    """Unpaced frames: a 440 Hz tone, or zeros while `silent`, at any rate/layout/size."""

    kind = "audio"

    def __init__(self, rate: int = 48000, samples: int = 960, layout: str = "mono") -> None:
        super().__init__()
        self.rate, self.samples, self.layout = rate, samples, layout
        self.silent = False
        self.pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        channels = 2 if self.layout == "stereo" else 1
        t = (self.pts + np.arange(self.samples)) / self.rate
        wave = np.zeros(self.samples) if self.silent else 8000 * np.sin(2 * math.pi * 440 * t)
        pcm = np.repeat(wave.astype("<i2"), channels)
        frame = AudioFrame(format="s16", layout=self.layout, samples=self.samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.pts, Fraction(1, self.rate)
        self.pts += self.samples
        return frame


def _decoded_peak(payloads: list[bytes]) -> int:
    decoder = av.CodecContext.create("libopus", "r")
    peak = 0
    for payload in payloads:
        for frame in decoder.decode(av.Packet(payload)):
            peak = max(peak, int(np.abs(frame.to_ndarray()).max()))
    return peak


async def _packet(gate: GateTrack) -> av.Packet[Any]:
    packet = await gate.recv()
    assert isinstance(packet, av.Packet)
    return packet


async def test_gate_sends_opus_packets_silence_unencoded_on_one_clock() -> None:
    source = _Source()
    gate = GateTrack(source)
    gate.opus = True
    speech = [await _packet(gate) for _ in range(10)]
    assert [p.pts for p in speech] == [960 * i for i in range(10)]
    assert all(bytes(p) != OPUS_SILENCE for p in speech)
    assert _decoded_peak([bytes(p) for p in speech]) > 4000
    source.silent = True
    quiet = await _packet(gate)
    assert (bytes(quiet), quiet.pts) == (OPUS_SILENCE, 9600)
    source.silent = False
    gate.muted = True
    muted = await _packet(gate)
    assert (bytes(muted), muted.pts) == (OPUS_SILENCE, 10560)
    gate.muted = False
    assert bytes(await _packet(gate)) != OPUS_SILENCE
    gate.stop()
    source.stop()


async def test_gate_encodes_other_rates_and_layouts_in_20ms_packets() -> None:
    source = _Source(rate=44100, samples=441, layout="stereo")  # 10 ms frames
    gate = GateTrack(source)
    gate.opus = True
    packets = [await _packet(gate) for _ in range(8)]
    assert [p.pts for p in packets] == [960 * i for i in range(8)]
    assert _decoded_peak([bytes(p) for p in packets]) > 4000
    gate.stop()
    source.stop()


class _Chunks(MediaStreamTrack):
    """A source with read_mono(): raw 20 ms chunks (tone bytes, None or zeros), unpaced."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.next: str = "tone"
        self.reads = 0
        t = np.arange(960) / 48000
        self.tone = (8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()

    async def read_mono(self) -> bytes | None:
        self.reads += 1
        return {"tone": self.tone, "none": None, "zeros": bytes(1920)}[self.next]

    async def recv(self) -> AudioFrame:
        raise AssertionError("the gate reads chunks, not frames, from a chunk source")


async def test_gate_reads_raw_chunks_silence_unencoded_on_one_clock() -> None:
    source = _Chunks()
    gate = GateTrack(source)
    gate.opus = True
    speech = [await _packet(gate) for _ in range(5)]
    assert all(bytes(p) != OPUS_SILENCE for p in speech)
    assert _decoded_peak([bytes(p) for p in speech]) > 4000
    source.next = "none"
    assert bytes(await _packet(gate)) == OPUS_SILENCE
    source.next = "zeros"
    assert bytes(await _packet(gate)) == OPUS_SILENCE
    source.next = "tone"
    gate.muted = True
    assert bytes(await _packet(gate)) == OPUS_SILENCE
    gate.muted = False
    after = await _packet(gate)
    assert bytes(after) != OPUS_SILENCE and after.pts == 8 * 960
    assert source.reads == 9  # one chunk per packet
    gate.stop()
    source.stop()


def test_fast_clocks_match_aiortcs() -> None:
    """chimed.media.fastpath's clocks give what aiortc's datetime arithmetic gives."""
    expected_ntp = clock.datetime_to_ntp(clock.current_datetime())
    ntp = fastpath.current_ntp_time()
    assert 0 <= ntp - expected_ntp < (1 << 32) // 20  # same instant, within 50 ms
    expected_ms = int((clock.current_datetime() - clock.NTP_EPOCH).total_seconds() * 1000)
    assert 0 <= fastpath.current_ms() - expected_ms < 50


async def _wait(predicate: object, timeout: float = 10.0) -> None:
    """Poll a counter that has no event of its own, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_peer_without_consumer_drops_the_mix_undecoded_and_decodes_once_asked() -> None:
    pin_host_addresses(["127.0.0.1"])
    tone = _Source()
    remote = RTCPeerConnection(rtc_configuration([]))
    heard = asyncio.Event()
    frames: list[Any] = []

    async def consumer(track: MediaStreamTrack) -> None:
        while True:
            frames.append(await track.recv())
            heard.set()

    peer = ChimePeer()
    try:
        offer = await peer.create_offer()
        await remote.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        remote.getTransceivers()[0].sender.replaceTrack(tone)
        remote.getTransceivers()[0].direction = "sendrecv"
        await remote.setLocalDescription(await remote.createAnswer())
        answer = remote.localDescription.sdp
        assert first_audio_codec(answer) == "opus"
        await peer.apply_answer(answer)
        assert not peer.decoding
        await _wait(lambda: peer.undecoded >= 10)
        assert not frames
        peer.set_audio_output(consumer)
        assert peer.decoding
        await asyncio.wait_for(heard.wait(), 10)
        assert isinstance(frames[0], AudioFrame)
        peer.set_audio_output(None)
        assert not peer.decoding
    finally:
        await peer.close()
        await remote.close()
        tone.stop()
