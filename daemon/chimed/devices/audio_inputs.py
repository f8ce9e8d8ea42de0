"""Microphones: aiortc audio tracks the peer connection sends (`set_audio_input(track)`).

Every track yields s16 48 kHz 20 ms AudioFrames (mono by default, stereo on request), with
pts counting samples from 0 (time_base 1/48000), released on the wall clock by a Pacer so
recv() never runs ahead of real time and never busy-waits. A track that fails for good ends
(MediaStreamError) with `error` saying why; its owner falls back to another input.

Beside recv() each track has read() and read_mono(): the same 20 ms as raw s16 bytes, or None
for digital silence. chimed's sender uses those, so a silent input costs no frame, no numpy
and no encoding, and a tone is a slice of a table computed once. Inputs on the Pacer's clock
(silence, tones, files) also offer due() and take_mono(): the sender then keeps the time with
a timer of its own and no task wakes per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.devices import portaudio
from chimed.devices.pcm import (
    MAX_FEED_RATE,
    MIN_FEED_RATE,
    Chunk,
    Pacer,
    Resampler,
    SampleRing,
    Samples,
    downmix,
    layout_name,
    pcm_frame,
    silence,
)
from chimed.errors import InvalidArgument

MAX_LAG_S = 0.2  # a consumer this late restarts its schedule instead of bursting


class AudioInput(MediaStreamTrack):
    """Base of the input tracks: pacing and framing. Subclasses supply 960 samples a call
    (`_next_samples`, or `_next_chunk` for bytes), or override read() to pace themselves."""

    kind = "audio"

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        layout_name(channels)  # validates
        self.channels = channels
        self.error: str | None = None  # why the track ended, when it ended by failing
        self._pacer = Pacer()
        self._pts = 0
        self._zeros = bytes(2 * FRAME_SAMPLES * channels)

    async def recv(self) -> av.AudioFrame:
        chunk = await self.read()
        frame = pcm_frame(self._zeros if chunk is None else chunk, self.channels, self._pts)
        self._pts += FRAME_SAMPLES
        return frame

    async def read(self) -> Chunk:
        """The next 20 ms as s16 interleaved bytes (None: digital silence), on time."""
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        if self.readyState != "live":  # stopped while waiting
            raise MediaStreamError
        return self._next_chunk()

    async def read_mono(self) -> Chunk:
        """read(), downmixed to mono when the track is stereo."""
        chunk = await self.read()
        return chunk if chunk is None or self.channels == 1 else downmix(chunk)

    def due(self, now: float) -> float | None:
        """When the next chunk is due, for a reader that keeps the time itself and then calls
        take_mono(); None when this input paces itself (its own read(): fed or a device)."""
        if type(self).read is not AudioInput.read or self.readyState != "live":
            return None
        return self._pacer.due(now)

    def take_mono(self) -> Chunk:
        """read_mono() without the wait, for a reader that waited until due()."""
        if self.readyState != "live":
            raise MediaStreamError
        self._pacer.advance()
        chunk = self._next_chunk()
        return chunk if chunk is None or self.channels == 1 else downmix(chunk)

    def _next_chunk(self) -> Chunk:
        return self._next_samples().tobytes()

    def _next_samples(self) -> Samples:
        raise NotImplementedError


class SilenceInput(AudioInput):
    """Digital silence: keeps the attendee present in the meeting with nothing to say."""

    def _next_chunk(self) -> Chunk:
        return None


@functools.lru_cache(maxsize=16)
def _tone_table(frequency_hz: float, amplitude: float, channels: int) -> tuple[bytes, ...]:
    """One second of a whole-hertz tone as 50 chunks: the wave repeats every second exactly,
    so sessions sending the same tone share one table and compute nothing per frame."""
    t = np.arange(SAMPLE_RATE, dtype=np.float64) * frequency_hz / SAMPLE_RATE
    wave = np.round(amplitude * np.sin(2 * math.pi * (t % 1.0))).astype(np.int16)
    pcm = np.repeat(wave.reshape(-1, 1), channels, axis=1).tobytes()
    step = 2 * FRAME_SAMPLES * channels
    return tuple(pcm[i : i + step] for i in range(0, len(pcm), step))


class ToneInput(AudioInput):
    """A continuous sine of `frequency_hz` at `level_dbfs` (peak, dB relative to full scale)."""

    def __init__(
        self, frequency_hz: float = 440.0, level_dbfs: float = -20.0, channels: int = 1
    ) -> None:
        if not 0 < frequency_hz < SAMPLE_RATE / 2:
            raise InvalidArgument(f"tone frequency must be between 0 and {SAMPLE_RATE // 2} Hz")
        if not -120 <= level_dbfs <= 0:
            raise InvalidArgument("tone level must be between -120 and 0 dBFS")
        super().__init__(channels)
        self.frequency_hz = frequency_hz
        self.level_dbfs = level_dbfs
        self._amplitude = 32767 * 10 ** (level_dbfs / 20)
        self._cycles = 0.0  # phase in cycles, kept in [0, 1) so precision never degrades
        self._table: tuple[bytes, ...] | None = None
        if float(frequency_hz).is_integer():
            self._table = _tone_table(float(frequency_hz), self._amplitude, channels)
        self._index = 0

    def _next_chunk(self) -> Chunk:
        if self._table is None:
            return self._next_samples().tobytes()
        chunk = self._table[self._index]
        self._index = (self._index + 1) % len(self._table)
        return chunk

    def _next_samples(self) -> Samples:
        step = self.frequency_hz / SAMPLE_RATE
        phase = self._cycles + step * np.arange(FRAME_SAMPLES, dtype=np.float64)
        self._cycles = (self._cycles + step * FRAME_SAMPLES) % 1.0
        wave = np.round(self._amplitude * np.sin(2 * math.pi * phase))
        mono = wave.astype(np.int16).reshape(-1, 1)
        return np.repeat(mono, self.channels, axis=1)


def _open_container(path: str) -> Any:
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise InvalidArgument(f"cannot decode audio file {path!r}: {exc}") from exc
    if not container.streams.audio:
        container.close()
        raise InvalidArgument(f"cannot decode audio file {path!r}: it has no audio stream")
    return container


class FileInput(AudioInput):
    """Plays an audio file (anything FFmpeg decodes: WAV, Ogg/Opus/Vorbis, MP3, ...), resampled
    to the track format, decoding as it goes.

    The end of the file (whatever was decodable up to EOF, so also a file truncated while
    playing) is not a failure: it loops (reopening the file) or sends silence from then on
    (`finished` becomes true, the track stays live). A decode error mid-stream, or a looped
    file that can no longer be opened, ends the track with `error` set."""

    def __init__(self, path: str | os.PathLike[str], loop: bool = False, channels: int = 1) -> None:
        super().__init__(channels)
        self.path = os.fspath(path)
        self.loop = loop
        self.finished = False
        self._resampler = Resampler(SAMPLE_RATE, channels)
        self._pending = silence(0, channels)
        self._container: Any = _open_container(self.path)
        self._frames: Iterator[av.AudioFrame] = self._container.decode(audio=0)
        self._decoded_this_pass = 0
        # Decode the first frame now so that a corrupt file fails at open, not mid-call.
        self._decode_until(1)
        if not len(self._pending) and self.finished:
            self._close()
            raise InvalidArgument(f"cannot decode audio file {self.path!r}: no audio samples")

    def _decode_until(self, wanted: int) -> None:
        parts = [self._pending]
        have = len(self._pending)
        while have < wanted and not self.finished:
            try:
                frame = next(self._frames)
            except StopIteration:
                tail = self._resampler.flush()
                parts.append(tail)
                have += len(tail)
                self._decoded_this_pass += len(tail)
                if self.loop and self._decoded_this_pass > 0:
                    self._restart()
                else:
                    self.finished = True
                continue
            except (av.FFmpegError, OSError) as exc:
                self._close()
                raise InvalidArgument(f"cannot decode audio file {self.path!r}: {exc}") from exc
            chunk = self._resampler.convert_frame(frame)
            parts.append(chunk)
            have += len(chunk)
            self._decoded_this_pass += len(chunk)
        self._pending = np.concatenate(parts)

    def _restart(self) -> None:
        self._close()
        self._container = _open_container(self.path)
        self._frames = self._container.decode(audio=0)
        self._decoded_this_pass = 0

    def _next_samples(self) -> Samples:
        try:
            self._decode_until(FRAME_SAMPLES)
        except ValueError as exc:
            self.finished = True
            self.error = str(exc)
            self.stop()
            raise MediaStreamError(self.error) from exc
        out, self._pending = self._pending[:FRAME_SAMPLES], self._pending[FRAME_SAMPLES:]
        if len(out) < FRAME_SAMPLES:
            out = np.concatenate([out, silence(FRAME_SAMPLES - len(out), self.channels)])
        return out

    def _close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def stop(self) -> None:
        self._close()
        super().stop()


class PcmFeedInput(AudioInput):
    """A microphone fed by the API caller: `feed(pcm, sample_rate, channels)` with s16le
    interleaved chunks at any rate in 8000-192000 Hz, 1 or 2 channels, resampled on arrival.

    The feeder's chunks set the pace: a whole frame goes out as soon as it is buffered (at most
    one frame ahead of a real-time schedule, which restarts from the feeder whenever its audio
    comes late), so a feeder pacing itself adds no delay here. When a frame is `grace_ms`
    overdue the track sends silence (`starved_frames`), or a partial frame padded once the
    feeder has paused for a frame. The buffer holds at most `max_buffer_ms`, dropping the oldest
    audio (`dropped_samples`); audio that stays buffered for a whole `TRIM_FRAMES` window (a
    feeder running ahead, e.g. a clock faster than ours) is dropped too (`trimmed_samples`),
    so the delay does not creep up during a long feed."""

    TRIM_FRAMES = 50  # 1 s

    def __init__(self, channels: int = 1, max_buffer_ms: int = 1000, grace_ms: int = 20) -> None:
        super().__init__(channels)
        if max_buffer_ms < 20:
            raise ValueError("max_buffer_ms must be at least 20")
        self._ring = SampleRing(SAMPLE_RATE * max_buffer_ms // 1000, channels)
        self._resampler = Resampler(SAMPLE_RATE, channels)
        self._fed_since_frame = False
        self._data = asyncio.Event()
        self._grace = grace_ms / 1000
        self._origin: float | None = None
        self._sent = 0  # frames since _origin
        self._low = -1  # fewest samples left buffered after a frame, this trim window
        self._window = 0
        self.starved_frames = 0
        self.trimmed_samples = 0

    @property
    def dropped_samples(self) -> int:
        return self._ring.dropped

    @property
    def buffered_ms(self) -> float:
        return len(self._ring) * 1000 / SAMPLE_RATE

    def feed(self, pcm: bytes, sample_rate: int, channels: int) -> None:
        """Queue one chunk; raises InvalidArgument (saying what is wrong) for a malformed chunk."""
        if not isinstance(pcm, bytes | bytearray | memoryview):
            raise InvalidArgument(f"pcm must be bytes, got {type(pcm).__name__}")
        if not MIN_FEED_RATE <= sample_rate <= MAX_FEED_RATE:
            raise InvalidArgument(
                f"sample_rate {sample_rate} Hz is outside {MIN_FEED_RATE}-{MAX_FEED_RATE} Hz"
            )
        if channels not in (1, 2):
            raise InvalidArgument(f"channels must be 1 or 2, got {channels}")
        size = len(pcm)
        if size % 2:
            raise InvalidArgument(
                f"pcm chunk has an odd byte count ({size}); s16le samples are 2 bytes"
            )
        if size % (2 * channels):
            raise InvalidArgument(
                f"pcm chunk of {size} bytes is not a whole number of {channels}-channel frames "
                f"({2 * channels} bytes each)"
            )
        if self.readyState != "live":
            raise InvalidArgument("the PCM input has been stopped")
        if not size:
            return
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16).reshape(-1, channels)
        self._ring.write(self._resampler.convert(samples, sample_rate))
        self._fed_since_frame = True
        if len(self._ring) >= FRAME_SAMPLES:
            self._data.set()

    async def read(self) -> Chunk:
        if self.readyState != "live":
            raise MediaStreamError
        period = FRAME_SAMPLES / SAMPLE_RATE
        now = time.monotonic()
        if self._origin is None or now - (self._origin + self._sent * period) > MAX_LAG_S:
            self._origin, self._sent = now, 0  # first frame, or a stalled consumer
        due = self._origin + self._sent * period
        while self.readyState == "live":
            now = time.monotonic()
            whole = len(self._ring) >= FRAME_SAMPLES
            if (whole and now >= due - period) or now >= due + self._grace:
                break
            self._data.clear()
            wake = due - period if whole else due + self._grace
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), max(0.0, wake - now))
        if self.readyState != "live":  # stopped while waiting
            raise MediaStreamError
        whole = len(self._ring) >= FRAME_SAMPLES
        if whole and now > due:  # the feeder's audio came late: follow its clock from here
            self._origin = now - self._sent * period
        self._sent += 1
        return self._next_chunk()

    def _next_chunk(self) -> Chunk:
        fed, self._fed_since_frame = self._fed_since_frame, False
        available = len(self._ring)
        out: Chunk = None
        if available >= FRAME_SAMPLES or (available and not fed):
            samples = self._ring.read(FRAME_SAMPLES)
            if len(samples) < FRAME_SAMPLES:
                pad = silence(FRAME_SAMPLES - len(samples), self.channels)
                samples = np.concatenate([samples, pad])
            out = samples.tobytes()
        else:
            self.starved_frames += 1
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop whole frames that stayed buffered through a whole window: they are delay, not
        jitter the buffer needed to absorb."""
        left = len(self._ring)
        self._low = left if self._low < 0 else min(self._low, left)
        self._window += 1
        if self._window < self.TRIM_FRAMES:
            return
        standing = self._low - self._low % FRAME_SAMPLES
        if standing > 0:
            self._ring.read(standing)
            self.trimmed_samples += standing
        self._low, self._window = -1, 0

    def stop(self) -> None:
        super().stop()
        self._data.set()  # wake a pending read() so it ends


class SoundDeviceInput(AudioInput):
    """A PortAudio capture device. The stream callback (PortAudio's thread) writes into a
    bounded ring and wakes read(), so the device clock paces the track; if the device is more
    than `grace_ms` late for a frame, read() sends silence instead (`underrun_frames`) and the
    track keeps going. The device is opened at 48 kHz; ALSA's plug/pulse layers convert."""

    def __init__(
        self,
        device: int,
        channels: int = 1,
        env: dict[str, str] | None = None,
        max_buffer_ms: int = 200,
        grace_ms: int = 100,
        label: str = "",
    ) -> None:
        super().__init__(channels)
        self.label = label or str(device)
        self._ring = SampleRing(SAMPLE_RATE * max_buffer_ms // 1000, channels)
        self._grace = grace_ms / 1000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._data = asyncio.Event()
        self._origin = 0.0
        self._frames = 0
        self.underrun_frames = 0
        self.status_flags = 0

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            if status:
                self.status_flags += 1
            self._ring.write(indata)
            loop = self._loop
            if loop is not None and len(self._ring) >= FRAME_SAMPLES:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(self._data.set)

        self._stream: Any = portaudio.open_started(
            "input", device, channels, callback, env, self.label
        )

    async def read(self) -> Chunk:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            # Drop what piled up before the first pull: it would only be latency.
            excess = len(self._ring) - FRAME_SAMPLES
            if excess > 0:
                self._ring.read(excess)
        due = self._origin + self._frames * FRAME_SAMPLES / SAMPLE_RATE
        if self._frames == 0 or now - due > self._grace + 0.2:
            self._origin, self._frames, due = now, 0, now  # (re)start the schedule
        deadline = due + self._grace
        while len(self._ring) < FRAME_SAMPLES and self.readyState == "live":
            self._data.clear()
            if len(self._ring) >= FRAME_SAMPLES:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), remaining)
        if self.readyState != "live":
            raise MediaStreamError
        self._frames += 1
        out = self._ring.read(FRAME_SAMPLES)
        if len(out) < FRAME_SAMPLES:
            self.underrun_frames += 1
            out = np.concatenate([out, silence(FRAME_SAMPLES - len(out), self.channels)])
        return out.tobytes()

    def stop(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            portaudio.close_stream_soon(stream)  # off the loop: Pa_StopStream waits
        super().stop()
        self._data.set()  # wake a pending read() so it ends
