"""The embedded media server's mixing and AUDIO_METADATA: plain mixer state, then end to end."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from chime.signaling import signaling_pb2 as pb
from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.embedded.audio_levels import (
    SILENT_VOLUME,
    LevelMeter,
    LossCounter,
    MetadataTracker,
    metadata_volume,
)
from chimed.embedded.meetings import Meeting
from chimed.embedded.mixer import (
    AudioMixer,
    JitterBuffer,
    frame_to_mono,
    saturate,
)
from chimed.embedded.opus_out import SharedOpus
from chimed.embedded.service import EmbeddedChime
from chimed.media.ice import rtc_configuration
from chimed.media.opus import OPUS_SILENCE, first_audio_codec

from tests.test_signaling_server import TIMEOUT, Client, Service, frame, subscribe, wait_for_info

T = pb.SdkSignalFrame.Type

N = FRAME_SAMPLES


# --- helpers -------------------------------------------------------------------------------
def tone(freq: float, amplitude: float, start: int = 0, samples: int = N) -> npt.NDArray[np.int16]:
    t = (np.arange(samples) + start) / SAMPLE_RATE
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frame_of(pcm: npt.NDArray[np.int16], stereo: bool = False) -> AudioFrame:
    if stereo:
        data = np.repeat(pcm, 2).reshape(1, -1)
        frame = AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    else:
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    return frame


def pcm_of(data: bytes | None) -> npt.NDArray[np.int16]:
    assert data is not None
    return np.frombuffer(data, dtype=np.int16)


def peak_frequencies(pcm: npt.NDArray[np.int16], count: int) -> list[float]:
    """The `count` strongest frequencies, to 1 Hz (zero-padded FFT)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm)), n=SAMPLE_RATE))
    found: list[float] = []
    for _ in range(count):
        k = int(np.argmax(spectrum))
        found.append(float(k))
        spectrum[max(0, k - 20) : k + 21] = 0
    return sorted(found)


def feed(mixer: AudioMixer, tones: dict[int, float], frames: int) -> None:
    for i in range(frames):
        for speaker, freq in tones.items():
            mixer.push(speaker, frame_of(tone(freq, 0.2, start=i * N)))


def listen(mixer: AudioMixer, listener: int, ticks: int) -> npt.NDArray[np.int16]:
    out = [mixer.pull(listener, N) for _ in range(ticks)]
    return np.concatenate([pcm_of(x) if x is not None else np.zeros(N, np.int16) for x in out])


# --- the mixer -----------------------------------------------------------------------------
def test_three_speakers_each_hears_the_other_two() -> None:
    mixer = AudioMixer()
    tones = {1: 440.0, 2: 660.0, 3: 1000.0}
    feed(mixer, tones, 5)
    heard: dict[int, list[npt.NDArray[np.int16]]] = {}
    for _ in range(5):  # every listener reads the same ticks, round-robin as tracks would
        for listener in tones:
            heard.setdefault(listener, []).append(pcm_of(mixer.pull(listener, N)))
    for listener, chunks in heard.items():
        others = sorted(f for s, f in tones.items() if s != listener)
        assert peak_frequencies(np.concatenate(chunks), 2) == others
        # never its own voice: the energy at its own frequency is far below the others'
        spectrum = np.abs(np.fft.rfft(np.concatenate(chunks).astype(np.float64), n=SAMPLE_RATE))
        assert spectrum[int(tones[listener])] < 0.01 * min(spectrum[int(f)] for f in others)


def test_mix_minus_is_exact_for_two_speakers() -> None:
    mixer = AudioMixer()
    mixer.push(1, frame_of(tone(440, 0.3)))
    mixer.push(1, frame_of(tone(440, 0.3, start=N)))
    mixer.push(2, frame_of(tone(700, 0.3), stereo=True))  # decoded Opus is stereo
    mixer.push(2, frame_of(tone(700, 0.3, start=N), stereo=True))
    assert np.array_equal(pcm_of(mixer.pull(1, N)), tone(700, 0.3))
    assert np.array_equal(pcm_of(mixer.pull(2, N)), tone(440, 0.3))
    # a listener that does not speak hears both, summed
    both = tone(440, 0.3).astype(np.int32) + tone(700, 0.3)
    assert np.array_equal(pcm_of(mixer.pull(3, N)), both.astype(np.int16))


def test_lone_speaker_and_silence_give_none() -> None:
    mixer = AudioMixer()
    assert mixer.pull(1, N) is None  # nobody speaks
    feed(mixer, {1: 440.0}, 3)
    assert mixer.pull(1, N) is None  # only its own voice
    assert mixer.pull(2, N) is not None
    mixer.push(3, frame_of(np.zeros(N, np.int16)))
    mixer.push(3, frame_of(np.zeros(N, np.int16)))
    assert mixer.pull(1, N) is None  # a speaker sending digital silence is skipped


def test_muted_speaker_is_left_out_until_unmuted() -> None:
    mixer = AudioMixer()
    mixer.set_muted(2, True)  # before any of its audio
    feed(mixer, {1: 440.0, 2: 660.0}, 4)
    assert peak_frequencies(listen(mixer, 3, 2), 1) == [440.0]
    assert mixer.pull(1, N) is None  # its only other speaker is muted
    assert set(mixer.take_levels()) == {1}
    mixer.set_muted(2, False)
    feed(mixer, {2: 660.0}, 3)
    assert 660.0 in peak_frequencies(listen(mixer, 3, 2), 2)
    mixer.set_muted(1, True)  # muting drops what was queued too
    assert peak_frequencies(listen(mixer, 3, 1), 1) == [660.0]
    assert mixer.pull(2, N) is None


def test_listeners_share_ticks_and_lagging_listener_skips_ahead() -> None:
    mixer = AudioMixer(history=4, max_frames=16)
    for i in range(12):
        mixer.push(1, frame_of(np.full(N, 100 * (i + 1), np.int16)))

    def tick_of(listener: int) -> int:
        return int(pcm_of(mixer.pull(listener, N))[0]) // 100

    assert [tick_of(2) for _ in range(3)] == [1, 2, 3]
    assert tick_of(3) == 3  # a new listener joins at the newest tick
    assert tick_of(3) == 4  # and then drives the next one itself
    assert tick_of(2) == 4  # the other reads the same tick
    for _ in range(5):
        mixer.pull(2, N)
    assert tick_of(3) == 9  # fell out of the history: the newest


def test_jitter_buffer_primes_bounds_and_never_blocks() -> None:
    buffer = JitterBuffer(prime=2 * N, limit=4 * N)
    buffer.put(np.full(N, 1, np.int16))
    assert buffer.take(N) is None  # not primed yet: waits for a second frame
    buffer.put(np.full(N, 2, np.int16))
    got = buffer.take(N)
    assert got is not None and int(got[0]) == 1
    for value in range(3, 9):
        buffer.put(np.full(N, value, np.int16))
    assert buffer.buffered == 4 * N  # bounded: the oldest were dropped
    assert buffer.dropped == 3 * N
    got = buffer.take(N)
    assert got is not None and int(got[0]) == 5
    buffer.put(N // 2)  # a run of silence
    buffer.take(N), buffer.take(N), buffer.take(N)  # 6, 7, 8
    assert buffer.take(N) is None  # silence only
    assert buffer.take(N) is None and not buffer.playing  # dry: primes again before playing


def test_odd_sized_frames_are_rebuffered_into_ticks() -> None:
    mixer = AudioMixer()
    signal = tone(440, 0.2, samples=3 * N)
    for chunk in np.array_split(signal, 7):  # frames of 411 or 412 samples
        mixer.push(1, frame_of(chunk))
    assert np.array_equal(listen(mixer, 2, 3), signal)


def test_resampled_input() -> None:
    mixer = AudioMixer()
    t = np.arange(3 * 320) / 16000
    pcm = np.rint(0.3 * 32767 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    for i in range(3):
        frame = AudioFrame.from_ndarray(pcm[i * 320 : (i + 1) * 320].reshape(1, -1), layout="mono")
        frame.sample_rate = 16000
        mixer.push(1, frame)
    heard = listen(mixer, 2, 2)
    assert peak_frequencies(heard[200:], 1) == [500.0]


def test_saturation_is_soft_and_bounded() -> None:
    loud = np.array([0, 20000, 30000, 60000, -90000, 200000], np.int32)
    out = pcm_of(saturate(loud))
    assert list(out[:2]) == [0, 20000]  # below the knee: untouched
    assert 24576 < out[2] < 30000  # squashed, not clipped flat
    assert out[2] < out[3] <= 32767
    assert -32767 <= out[4] < -out[2]
    assert out[5] <= 32767


# --- levels and AUDIO_METADATA state ---------------------------------------------------------
def test_levels_are_rms_dbfs_of_what_was_pushed() -> None:
    mixer = AudioMixer()
    mixer.push(1, frame_of(tone(440, 1.0)))
    mixer.push(2, frame_of(tone(440, 0.1)))
    levels = mixer.take_levels()
    assert math.isclose(levels[1], -3.0, abs_tol=0.1)  # a full-scale sine: RMS -3 dBFS
    assert math.isclose(levels[2], -23.0, abs_tol=0.1)
    assert mixer.take_levels() == {}  # a new window
    meter = LevelMeter()
    meter.add(0.0, N)
    assert meter.take() == -math.inf
    assert (metadata_volume(-3.2), metadata_volume(-math.inf)) == (3, SILENT_VOLUME)


def test_metadata_names_speakers_then_silences_them_once() -> None:
    tracker = MetadataTracker()
    assert tracker.window({}, {}) is None
    states = tracker.window({1: -20.0, 2: -70.0}, {1: 2, 2: 2})
    assert states is not None
    assert [(s.audio_stream_id, s.volume, s.signal_strength) for s in states] == [(1, 20, 2)]
    states = tracker.window({1: -math.inf}, {1: 1})
    assert states is not None
    assert [(s.audio_stream_id, s.volume) for s in states] == [(1, SILENT_VOLUME)]
    assert tracker.window({1: -math.inf}, {}) is None
    tracker.window({3: -10.0}, {})
    tracker.forget(3)  # left: never named again
    assert tracker.window({}, {}) is None


def test_metadata_carries_a_speaker_over_one_window_without_audio() -> None:
    tracker = MetadataTracker()
    tracker.window({1: -15.0, 2: -25.0}, {})
    states = tracker.window({2: -26.0}, {})  # nothing at all arrived from 1: a stall
    assert states is not None
    assert [(s.audio_stream_id, s.volume) for s in states] == [(1, 15), (2, 26)]
    states = tracker.window({2: -26.0}, {})  # a second window without audio: silent
    assert states is not None
    assert [(s.audio_stream_id, s.volume) for s in states] == [(1, SILENT_VOLUME), (2, 26)]
    states = tracker.window({2: -math.inf}, {})  # muted: silent at once
    assert states is not None
    assert [(s.audio_stream_id, s.volume) for s in states] == [(2, SILENT_VOLUME)]


def test_signal_strength_from_packet_loss() -> None:
    counter = LossCounter()
    assert counter.strength(1, received=100, lost=0) == 2
    assert counter.strength(1, received=190, lost=10) == 1  # 10 of 100 in this window
    assert counter.strength(1, received=200, lost=40) == 0
    assert counter.strength(1, received=250, lost=40) == 2


def test_volume_maps_into_the_web_clients_range() -> None:
    # The client shows 1 - (V - 14) / 28: a loud talker near full, silence at zero.
    state = pb.SdkAudioAttendeeState(volume=metadata_volume(-16.0))
    assert 0.9 < 1 - (state.volume - 14) / 28 <= 1.0
    assert 1 - (SILENT_VOLUME - 14) / 28 <= 0.0


# --- end to end: the embedded service, real aiortc peers ------------------------------------
class ToneTrack(MediaStreamTrack):
    """A microphone playing a sine (or silence when `freq` is None), paced at 20 ms."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.freq: float | None = None
        self.amplitude = 0.3
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += N
            delay = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.freq is None:
            pcm = np.zeros(N, np.int16)
        else:
            pcm = tone(self.freq, self.amplitude, start=self._pts)
        frame = frame_of(pcm)
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class Ear:
    """Everything a peer hears, decoded to mono; waits on arrivals, never on the clock."""

    def __init__(self) -> None:
        self.frames: list[npt.NDArray[np.int16]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def listen(self, track: MediaStreamTrack) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            self.frames.append(frame_to_mono(frame).copy())
            self._arrived.set()

    async def next_frames(self, count: int) -> npt.NDArray[np.int16]:
        """The next `count` frames heard from now on, concatenated."""
        start = len(self.frames)
        while len(self.frames) < start + count:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), TIMEOUT)
        return np.concatenate(self.frames[start : start + count])

    async def until(self, loud: bool) -> None:
        """Wait until a frame is heard that is loud (or silent) as asked."""
        while True:
            if (peak(await self.next_frames(1)) > LOUD) == loud:
                return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


LOUD = 1000  # a peak above this is sound; Opus-decoded silence stays far below


def peak(pcm: npt.NDArray[np.int16]) -> int:
    return int(np.abs(pcm.astype(np.int32)).max())


@dataclass
class Peer:
    sig: Client
    pc: RTCPeerConnection
    mic: ToneTrack
    ear: Ear
    stream_id: int = 0

    async def close(self) -> None:
        await self.ear.close()
        await self.sig.ws.close()
        await self.pc.close()


@pytest.fixture
async def chime(embedded: EmbeddedChime) -> AsyncIterator[Service]:
    async with aiohttp.ClientSession() as http:
        yield Service(embedded.registry, embedded.signaling, embedded.ws_url, http)


async def join_peer(service: Service, meeting: Meeting, user: str) -> Peer:
    sig = await service.join(meeting, user)
    pc = RTCPeerConnection(rtc_configuration())
    mic, ear = ToneTrack(), Ear()
    pc.on("track", ear.listen)
    pc.addTrack(mic)
    await subscribe(sig, pc)
    assert sig.attendee is not None
    me = sig.attendee.attendee_id
    roster = await wait_for_info(sig, lambda i: any(e.attendee_id == me for e in i))
    stream_id = next(e.audio_stream_id for e in roster if e.attendee_id == me)
    return Peer(sig, pc, mic, ear, stream_id)


async def set_muted(peer: Peer, muted: bool) -> None:
    control = frame(T.AUDIO_CONTROL)
    control.audio_control.muted = muted
    await peer.sig.send(control)


def is_mute_update(info: list[pb.SdkAudioStreamIdInfo]) -> bool:
    return info[0].HasField("muted") and not info[0].attendee_id


def frequency_of(pcm: npt.NDArray[np.int16]) -> float:
    """The dominant frequency, to a fraction of a hertz (parabolic peak interpolation)."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm)), n=4 * len(pcm)))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + offset) * SAMPLE_RATE / (4 * len(pcm)))


@pytest.mark.timeout(60)
@pytest.mark.slow
async def test_b_hears_a_tone_a_never_hears_itself_and_mute_silences_a(chime: Service) -> None:
    meeting = chime.meeting()
    a = await join_peer(chime, meeting, "alice")
    b = await join_peer(chime, meeting, "bob")
    try:
        a.mic.freq = 440.0
        await b.ear.until(loud=True)
        heard = await b.ear.next_frames(25)
        assert abs(frequency_of(heard) - 440.0) < 2.0
        assert peak(await a.ear.next_frames(25)) < LOUD  # meanwhile, A hears nothing of itself

        await set_muted(a, True)
        for peer in (a, b):  # everyone is told, the muted one too
            info = await wait_for_info(peer.sig, is_mute_update)
            assert (info[0].audio_stream_id, info[0].muted) == (a.stream_id, True)
        await b.ear.until(loud=False)  # what was in flight has played out
        assert peak(await b.ear.next_frames(25)) < LOUD  # A still plays: B hears silence

        await set_muted(a, False)
        await b.ear.until(loud=True)
        assert abs(frequency_of(await b.ear.next_frames(25)) - 440.0) < 2.0
    finally:
        await a.close()
        await b.close()


async def metadata_naming(
    client: Client, stream_id: int, match: object
) -> pb.SdkAudioAttendeeState:
    """The first AUDIO_METADATA state of `stream_id` that satisfies `match`."""
    assert callable(match)
    while True:
        states = (await client.expect(T.AUDIO_METADATA)).audio_metadata.attendee_states
        for state in states:
            if state.audio_stream_id == stream_id and match(state):
                return state


@pytest.mark.timeout(60)
@pytest.mark.slow
async def test_audio_metadata_follows_the_speakers_volume(chime: Service) -> None:
    meeting = chime.meeting()
    a = await join_peer(chime, meeting, "alice")
    b = await join_peer(chime, meeting, "bob")
    try:
        # aiortc's sender upmixes mono to stereo at -3 dB: a sine of amplitude x arrives at
        # 20 log10(x / sqrt(2)) - 3 dBFS.
        a.mic.freq, a.mic.amplitude = 440.0, 0.03  # about -34 dBFS: barely there
        quiet = await metadata_naming(b.sig, a.stream_id, lambda s: s.volume <= 38)
        assert quiet.volume >= 31
        assert quiet.signal_strength == 2  # loopback loses nothing
        a.mic.amplitude = 0.5  # about -12 dBFS: louder, so a smaller attenuation
        # (a window straddling the change reads in between)
        loud = await metadata_naming(b.sig, a.stream_id, lambda s: s.volume <= 13)
        assert loud.volume >= 10
        assert not loud.muted

        b.mic.freq = 660.0  # B keeps the frames coming while A goes quiet
        a.mic.freq = None
        gone = await metadata_naming(b.sig, a.stream_id, lambda s: s.volume > 20)
        if gone.volume < 42:  # a window straddling the change (the path adds little delay)
            gone = await metadata_naming(b.sig, a.stream_id, lambda s: True)
        assert gone.volume >= 42  # the client reads it as 0
        # From then on A is left out: the next frames name B only.
        for _ in range(3):
            states = (await b.sig.expect(T.AUDIO_METADATA)).audio_metadata.attendee_states
            assert [s.audio_stream_id for s in states] == [b.stream_id]
        # A receives the same frames, naming B.
        await metadata_naming(a.sig, b.stream_id, lambda s: s.volume < 20)
    finally:
        await a.close()
        await b.close()


@pytest.mark.timeout(60)
@pytest.mark.slow
async def test_two_speakers_hear_each_other_and_a_third_hears_both(chime: Service) -> None:
    meeting = chime.meeting()
    a, b, c = [await join_peer(chime, meeting, u) for u in ("alice", "bob", "carol")]
    try:
        a.mic.freq, b.mic.freq = 440.0, 660.0
        for peer in (a, b, c):
            await peer.ear.until(loud=True)
        # Speakers get their own encoding of everyone but themselves.
        assert abs(frequency_of(await a.ear.next_frames(25)) - 660.0) < 2.0
        assert abs(frequency_of(await b.ear.next_frames(25)) - 440.0) < 2.0
        # The listener gets the shared full mix.
        assert peak_frequencies(await c.ear.next_frames(50), 2) == [440.0, 660.0]
    finally:
        for peer in (a, b, c):
            await peer.close()


# --- Opus out ------------------------------------------------------------------------------
def test_opus_silence_and_shared_encoding_decode() -> None:
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout, decoder.format = SAMPLE_RATE, "stereo", "s16"

    def decode(payload: bytes) -> npt.NDArray[np.int16]:
        frames = decoder.decode(av.Packet(payload))
        return np.concatenate([frame_to_mono(f) for f in frames if isinstance(f, AudioFrame)])

    assert peak(decode(OPUS_SILENCE)) == 0
    shared = SharedOpus()
    chunks = [tone(440, 0.3, start=i * N).tobytes() for i in range(20)]
    heard = []
    for chunk in chunks:
        payload = shared.encode(chunk)
        assert shared.encode(chunk) is payload  # a second listener of the tick: no new encode
        heard.append(decode(payload))
    assert abs(frequency_of(np.concatenate(heard[5:])) - 440.0) < 2.0


def test_first_audio_codec_of_an_answer() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"
    )
    assert first_audio_codec(sdp) == "opus"
    assert first_audio_codec(sdp.replace("SAVPF 111 0", "SAVPF 0 111")) == "pcmu"
    assert first_audio_codec("v=0\r\n") is None
