"""The virtual audio devices, opened by id: paced tone and silence inputs, PCM feeds both ways,
WAV recording, audio files decoded and resampled. In process; no sound server or hardware."""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from chimed.devices import opening
from chimed.devices.audio_inputs import FileInput, PcmFeedInput, ToneInput
from chimed.devices.audio_outputs import PcmFeedOutput, WavRecorder

from tests.audio_signals import mono, peak_frequency, rms


class FiniteTrack(MediaStreamTrack):
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_undecodable_and_missing_files_are_refused_on_open(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(ValueError, match=r"cannot decode audio file .*junk\.mp3.*: .*Invalid data"):
        opening.open_input(f"virtual:file?path={junk}")
    with pytest.raises(ValueError, match=r"No such file"):
        opening.open_input(f"virtual:file?path={tmp_path / 'missing.wav'}")


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
