"""Audio devices for real: a private PulseAudio with null sinks behind ALSA's pulse plugin,
PortAudio streams through it, virtual devices, the registry's ids and errors, hot-plug."""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import pytest
import sounddevice as sd
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from chime.v1 import types_pb2
from chimed.devices import ids, listing, opening, portaudio
from chimed.devices.audio_inputs import FileInput, PcmFeedInput, SoundDeviceInput, ToneInput
from chimed.devices.audio_outputs import PcmFeedOutput, SoundDeviceOutput, WavRecorder

from tests.pulse import PulseServer, available

pytestmark = pytest.mark.skipif(not available(), reason="pulseaudio and pactl are required")


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    server = PulseServer(tmp_path_factory.mktemp("pulse")).start()
    yield server
    try:
        assert portaudio.open_stream_count() == 0, "a test left a PortAudio stream open"
    finally:
        server.stop()


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """Dominant frequency, refined by parabolic interpolation of the Hann-windowed spectrum."""
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + offset) * rate / len(x))


def mono(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


class FiniteTrack(MediaStreamTrack):  # type: ignore[misc]
    """Yields the given s16 mono 48 kHz frames as fast as asked, then ends."""

    kind = "audio"

    def __init__(self, chunks: Sequence[np.ndarray]) -> None:
        super().__init__()
        self._chunks = list(chunks)
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if not self._chunks:
            self.stop()
            raise MediaStreamError
        chunk = self._chunks.pop(0)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += len(chunk)
        return frame


def write_wav(path: Path, rate: int, channels: int, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


# --- PulseAudio and hardware -----------------------------------------------------------------


async def test_sounddevice_and_registry_see_pulse(pulse: PulseServer) -> None:
    names = {d["name"] for d in sd.query_devices()}
    assert {"pulse", "default"} <= names
    devices = await listing.list_devices()
    by_direction = {(d.id, d.direction) for d in devices}
    assert ("hw:ALSA:pulse", types_pb2.DEVICE_DIRECTION_INPUT) in by_direction
    assert ("hw:ALSA:pulse", types_pb2.DEVICE_DIRECTION_OUTPUT) in by_direction
    assert ("hw:pulse:chimed_a", types_pb2.DEVICE_DIRECTION_OUTPUT) in by_direction
    assert ("hw:pulse:chimed_a.monitor", types_pb2.DEVICE_DIRECTION_INPUT) in by_direction
    sink = next(d for d in devices if d.id == "hw:pulse:chimed_b")
    assert (sink.label, sink.kind, sink.virtual) == ("ChimedB", types_pb2.MEDIA_KIND_AUDIO, False)
    virtual = {(d.id, d.direction) for d in devices if d.virtual}
    assert ("virtual:tone", types_pb2.DEVICE_DIRECTION_INPUT) in virtual
    assert ("virtual:wav", types_pb2.DEVICE_DIRECTION_OUTPUT) in virtual
    # Ids are stable across re-queries.
    assert [d.id for d in await listing.list_devices()] == [d.id for d in devices]


async def capture_tone(mic: SoundDeviceInput, seconds: float) -> np.ndarray:
    """Frames from `mic` once sound is flowing (10 loud frames in a row), for `seconds`."""
    async with asyncio.timeout(15):
        loud = 0
        while loud < 10:
            loud = loud + 1 if rms(mono(await mic.recv())) > 300 else 0
        frames = [mono(await mic.recv()) for _ in range(int(seconds * 50))]
    return np.concatenate(frames)


async def test_tone_round_trip_through_null_sink(pulse: PulseServer) -> None:
    """ToneInput -> hardware output into null sink A -> A's monitor -> hardware input."""
    tone = ToneInput(frequency_hz=1234.0, level_dbfs=-12.0)
    speaker = opening.open_output("hw:pulse:chimed_a")
    mic = opening.open_input("hw:pulse:chimed_a.monitor")
    other = opening.open_input("hw:pulse:chimed_b.monitor")
    assert isinstance(speaker, SoundDeviceOutput) and isinstance(mic, SoundDeviceInput)
    assert isinstance(other, SoundDeviceInput)
    try:
        speaker.start(tone)
        captured = await capture_tone(mic, 1.0)
        assert abs(peak_frequency(captured, 48000) - 1234.0) < 2.0
        expected_rms = 32767 * 10 ** (-12 / 20) / np.sqrt(2)
        assert abs(20 * np.log10(rms(captured) / expected_rms)) < 1.0
        assert mic.readyState == "live"
        # Nothing was played into sink B: its monitor carries silence.
        quiet = np.concatenate([mono(await other.recv()) for _ in range(10)])
        assert rms(quiet) < 30
    finally:
        await speaker.stop()
        mic.stop()
        other.stop()
        tone.stop()
    with pytest.raises(MediaStreamError):
        await mic.recv()


async def test_hot_plug_seen_by_watcher_while_streams_run(pulse: PulseServer) -> None:
    changes: asyncio.Queue[Sequence[types_pb2.MediaDevice]] = asyncio.Queue()
    watcher = listing.DeviceWatcher(changes.put_nowait, interval=0.5)
    tone = ToneInput(frequency_hz=500.0, level_dbfs=-12.0)
    speaker = opening.open_output("hw:pulse:chimed_a")
    mic = opening.open_input("hw:pulse:chimed_a.monitor")
    assert isinstance(mic, SoundDeviceInput)
    module = ""
    try:
        speaker.start(tone)
        first = await watcher.start()
        assert "hw:pulse:chimed_hot" not in {d.id for d in first}
        module = pulse.pactl(
            "load-module",
            "module-null-sink",
            "sink_name=chimed_hot",
            "sink_properties=device.description=HotPlugged",
        ).strip()

        async def wait_for(present: bool) -> Sequence[types_pb2.MediaDevice]:
            async with asyncio.timeout(15):
                while True:
                    devices = await changes.get()
                    if ("hw:pulse:chimed_hot" in {d.id for d in devices}) == present:
                        return devices

        plugged = await wait_for(True)
        hot = [d for d in plugged if d.id in ("hw:pulse:chimed_hot", "hw:pulse:chimed_hot.monitor")]
        assert {(d.id, d.direction) for d in hot} == {
            ("hw:pulse:chimed_hot", types_pb2.DEVICE_DIRECTION_OUTPUT),
            ("hw:pulse:chimed_hot.monitor", types_pb2.DEVICE_DIRECTION_INPUT),
        }
        # The new sink can be opened while other streams are open.
        recorder = opening.open_output("hw:pulse:chimed_hot")
        await recorder.stop()
        pulse.pactl("unload-module", module)
        module = ""
        await wait_for(False)
        # The streams opened before the hot-plug still carry the tone.
        captured = await capture_tone(mic, 0.5)
        assert abs(peak_frequency(captured, 48000) - 500.0) < 2.0
    finally:
        if module:
            pulse.pactl("unload-module", module)
        await watcher.stop()
        await speaker.stop()
        mic.stop()
        tone.stop()


# --- virtual devices -------------------------------------------------------------------------


async def test_tone_input_frames_are_paced_opus_ready() -> None:
    tone = opening.open_input("virtual:tone?frequency=440&level=-20")
    try:
        frames = [await tone.recv() for _ in range(3)]
    finally:
        tone.stop()
    assert [f.pts for f in frames] == [0, 960, 1920]
    for f in frames:
        assert (f.format.name, f.layout.name, f.sample_rate, f.samples) == (
            "s16",
            "mono",
            48000,
            960,
        )
        assert f.time_base == fractions.Fraction(1, 48000)
    peak = max(int(np.abs(mono(f)).max()) for f in frames)
    assert abs(peak - 32767 * 0.1) <= 2


async def test_tone_chunks_whole_and_fractional_hertz_mono_and_stereo() -> None:
    """read() gives the same samples as recv(); whole-hertz tones come from a table shared by
    equal tones, others are computed; read_mono() of a stereo tone is the mono tone."""
    for hz in (440.0, 440.5):
        tone = ToneInput(frequency_hz=hz, level_dbfs=-10.0)
        twin = ToneInput(frequency_hz=hz, level_dbfs=-10.0)
        stereo = ToneInput(frequency_hz=hz, level_dbfs=-10.0, channels=2)
        try:
            chunks = [await tone.read() for _ in range(60)]  # past the table's 1 s wrap
            frames = [await twin.recv() for _ in range(60)]
            downmixed = [await stereo.read_mono() for _ in range(3)]
        finally:
            for track in (tone, twin, stereo):
                track.stop()
        assert all(isinstance(c, bytes) and len(c) == 1920 for c in chunks)
        assert [bytes(f.planes[0]) for f in frames] == chunks
        assert downmixed == chunks[:3]
        samples = np.frombuffer(b"".join(c for c in chunks if c), dtype="<i2")
        assert abs(peak_frequency(samples, 48000) - hz) < 0.2
        assert abs(int(np.abs(samples).max()) - round(32767 * 10 ** (-10 / 20))) <= 1


async def test_inputs_started_apart_release_frames_together() -> None:
    """Paced inputs share one 20 ms grid, so a daemon's inputs wake in one loop iteration: two
    tones started 7 ms apart deliver each frame at the same moment."""
    first, second = ToneInput(), ToneInput()

    async def release_times(track: ToneInput) -> list[float]:
        times = []
        for _ in range(6):
            await track.read()
            times.append(time.monotonic())
        return times

    try:
        early = asyncio.create_task(release_times(first))
        await asyncio.sleep(0.007)
        late = await release_times(second)
        times = await early
    finally:
        first.stop()
        second.stop()
    # The late starter joins the grid at its next point, then both run in step.
    gaps = sorted(min(abs(t - e) for e in times) for t in late[1:])
    assert gaps[len(gaps) // 2] < 0.003, gaps


async def test_silence_and_a_starved_feed_read_as_none() -> None:
    """Digital silence reads as None (nothing to encode) and as a zero frame through recv()."""
    silence = opening.open_input("virtual:silence")
    feed = PcmFeedInput(grace_ms=0)
    try:
        assert await silence.read() is None
        frame = await silence.recv()
        assert not mono(frame).any() and frame.samples == 960
        assert await feed.read() is None and feed.starved_frames == 1
        feed.feed(np.full(3 * 960, 1000, dtype="<i2").tobytes(), 48000, 1)
        chunk = await feed.read()
        assert chunk is not None and len(chunk) == 1920
        assert np.abs(np.frombuffer(chunk, dtype="<i2")).max() > 500
    finally:
        silence.stop()
        feed.stop()


async def test_wav_recorder_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    chunks = [rng.integers(-20000, 20000, 960, dtype=np.int16) for _ in range(25)]
    path = tmp_path / "out.wav"
    recorder = opening.open_output(f"virtual:wav?path={path}")
    assert isinstance(recorder, WavRecorder)
    recorder.start(FiniteTrack(chunks))
    await asyncio.wait_for(recorder.track_ended.wait(), 10)
    await recorder.stop()
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
        assert w.getnframes() == 25 * 960
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(data, np.concatenate(chunks))


async def test_pcm_feed_resampling_round_trip() -> None:
    """16 kHz stereo in through PcmFeedInput, 22.05 kHz mono out of PcmFeedOutput."""
    feed = opening.open_input("virtual:pcm")
    out = opening.open_output("virtual:pcm?rate=22050&channels=1")
    assert isinstance(feed, PcmFeedInput) and isinstance(out, PcmFeedOutput)
    t = np.arange(int(0.8 * 16000)) / 16000
    tone = np.round(8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1)
    for start in range(0, len(stereo), 320):  # 20 ms chunks at 16 kHz
        feed.feed(stereo[start : start + 320].astype("<i2").tobytes(), 16000, 2)
    assert feed.dropped_samples == 0
    out.start(feed)
    received = []
    async with asyncio.timeout(10):
        async for chunk in out:
            received.append(np.frombuffer(chunk, dtype="<i2"))
            if sum(len(r) for r in received) >= int(0.7 * 22050):
                break
    await out.stop()
    feed.stop()
    samples = np.concatenate(received)
    assert abs(peak_frequency(samples[: int(0.7 * 22050)], 22050) - 440.0) < 2.0
    assert abs(rms(samples[2000 : int(0.7 * 22050)]) - 8000 / np.sqrt(2)) < 200
    # After stop the iterator yields what was left (the resampler's tail included), then ends.
    rest = [chunk async for chunk in out]
    assert sum(len(chunk) for chunk in rest) < 22050 * 2


def test_pcm_feed_rejects_malformed_chunks() -> None:
    feed = PcmFeedInput()
    try:
        with pytest.raises(ValueError, match=r"odd byte count \(3\)"):
            feed.feed(b"\x00\x01\x02", 48000, 1)
        with pytest.raises(ValueError, match=r"6 bytes is not a whole number of 2-channel"):
            feed.feed(bytes(6), 48000, 2)
        with pytest.raises(ValueError, match=r"sample_rate 4000 Hz is outside 8000-192000"):
            feed.feed(bytes(4), 4000, 1)
        with pytest.raises(ValueError, match=r"channels must be 1 or 2, got 3"):
            feed.feed(bytes(6), 48000, 3)
        with pytest.raises(ValueError, match=r"pcm must be bytes"):
            feed.feed("abcd", 48000, 1)  # type: ignore[arg-type]
    finally:
        feed.stop()


async def test_file_input_decodes_and_resamples_wav(tmp_path: Path) -> None:
    t = np.arange(int(0.3 * 44100)) / 44100
    tone = np.round(10000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    path = tmp_path / "tone.wav"
    write_wav(path, 44100, 2, np.stack([tone, tone], axis=1).reshape(-1))
    track = opening.open_input(f"virtual:file?path={path}")
    assert isinstance(track, FileInput)
    try:
        frames = [await track.recv() for _ in range(20)]  # 0.4 s: the file, then silence
    finally:
        track.stop()
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    samples = np.concatenate([mono(f) for f in frames])
    assert abs(peak_frequency(samples[: int(0.28 * 48000)], 48000) - 300.0) < 2.0
    assert track.finished
    assert rms(samples[int(0.31 * 48000) :]) == 0.0

    looped = FileInput(path, loop=True)
    try:
        frames = [await looped.recv() for _ in range(20)]
    finally:
        looped.stop()
    assert rms(np.concatenate([mono(f) for f in frames])[int(0.31 * 48000) :]) > 1000
    assert not looped.finished


def test_undecodable_file_and_registry_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(ValueError, match=r"cannot decode audio file .*junk\.mp3.*: .*Invalid data"):
        opening.open_input(f"virtual:file?path={junk}")
    with pytest.raises(ValueError, match=r"No such file"):
        opening.open_input(f"virtual:file?path={tmp_path / 'missing.wav'}")
    with pytest.raises(LookupError):
        opening.open_input("virtual:nothing")
    with pytest.raises(LookupError):
        opening.open_output("bogus")
    with pytest.raises(ValueError, match=r"virtual:tone is an input device"):
        opening.open_output("virtual:tone")
    with pytest.raises(ValueError, match=r"virtual:null is an output device"):
        opening.open_input("virtual:null")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) volume"):
        opening.open_input("virtual:tone?volume=3")
    with pytest.raises(ValueError, match=r"frequency must be a number"):
        opening.open_input("virtual:tone?frequency=high")
    with pytest.raises(ValueError, match=r"needs a path"):
        opening.open_output("virtual:wav")


async def test_hardware_direction_and_unknown_errors(pulse: PulseServer) -> None:
    with pytest.raises(ValueError, match=r"hw:pulse:chimed_a.monitor is an input device"):
        opening.open_output("hw:pulse:chimed_a.monitor")
    with pytest.raises(ValueError, match=r"hw:pulse:chimed_b is an output device"):
        opening.open_input("hw:pulse:chimed_b")
    with pytest.raises(LookupError):
        opening.open_input("hw:pulse:no_such_source")
    with pytest.raises(LookupError):
        opening.open_output("hw:ALSA:no_such_device")


# --- robustness ------------------------------------------------------------------------------


async def test_probe_answers_of_cancelled_queries_are_not_taken_later(pulse: PulseServer) -> None:
    """A query cancelled while its answer is on the way (a watcher being stopped) must not
    leave that answer for the next query, which would then report a stale list."""
    prober = listing.DeviceProber()
    sink = "chimed_lag"
    module = ""
    try:
        await prober.query()  # the helper is up
        for _ in range(3):
            sent = prober.requests
            task = asyncio.create_task(prober.query())
            async with asyncio.timeout(10):
                # Until the request is on its way (a yield: nothing to wait on but the task).
                while prober.requests == sent:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await prober.query()
        # Real work meanwhile (a listing through a helper of its own: a process start), during
        # which the shared helper has long answered whatever it still owed.
        await listing.list_devices()
        module = pulse.pactl("load-module", "module-null-sink", f"sink_name={sink}").strip()
        answer = await prober.query()
        assert sink in {s["name"] for s in answer["pulse"]["sinks"]}
        pulse.pactl("unload-module", module)
        module = ""
        answer = await prober.query()
        assert sink not in {s["name"] for s in answer["pulse"]["sinks"]}
    finally:
        if module:
            pulse.pactl("unload-module", module)
        await prober.close()
    assert not prober.running


async def test_hardware_opens_off_the_event_loop(pulse: PulseServer) -> None:
    """open_async opens hardware in a worker thread (the loop keeps running meanwhile) and a
    caller cancelled mid-open leaks no stream."""
    before = portaudio.open_stream_count()
    loop = asyncio.get_running_loop()
    ran: list[bool] = []
    opened = opening.open_async("hw:pulse:chimed_a", ids.OUTPUT)
    loop.call_soon(ran.append, True)
    speaker = await opened
    assert ran == [True]  # the loop ran a callback while the device was being opened
    assert isinstance(speaker, SoundDeviceOutput)
    await speaker.stop()
    assert portaudio.open_stream_count() == before

    task = asyncio.create_task(opening.open_async("hw:pulse:chimed_b.monitor", ids.INPUT))
    await asyncio.sleep(0)  # the task has handed the open to a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The thread's stream, once open, is closed (in another worker thread).
    await opening.settle()
    assert portaudio.open_stream_count() == before


async def test_file_input_ends_in_silence_or_fails_without_raising_other_errors(
    tmp_path: Path,
) -> None:
    """A file that ends (loop=0) sends silence and stays live; a looped file that can no
    longer be decoded when it comes round ends the track (MediaStreamError) with `error`."""
    t = np.arange(int(0.1 * 48000)) / 48000
    tone = np.round(10000 * np.sin(2 * np.pi * 600 * t)).astype(np.int16)
    path = tmp_path / "short.wav"
    write_wav(path, 48000, 1, tone)
    once = FileInput(path)
    try:
        samples = np.concatenate([mono(await once.recv()) for _ in range(15)])
        assert once.finished and once.readyState == "live" and once.error is None
        assert rms(samples[:4800]) > 1000 and rms(samples[4800:]) == 0.0
    finally:
        once.stop()

    looped = FileInput(path, loop=True)
    try:
        samples = np.concatenate([mono(await looped.recv()) for _ in range(3)])
        assert rms(samples) > 1000
        path.write_bytes(b"RIFF....WAVEfmt garbage now" * 20)  # replaced while playing
        with pytest.raises(MediaStreamError):
            async with asyncio.timeout(10):
                while True:
                    await looped.recv()
        assert looped.error is not None and "cannot decode audio file" in looped.error
        assert looped.readyState == "ended"
    finally:
        looped.stop()
