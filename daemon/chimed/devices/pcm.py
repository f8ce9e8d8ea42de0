"""PCM plumbing shared by the audio devices: the track format, a thread-safe sample ring,
a resampler over PyAV, and a real-time pacer.

Every input track produces what aiortc's Opus encoder takes without reframing: s16, 48 kHz,
20 ms frames (960 samples), mono or stereo, pts counted in samples (time_base 1/48000).
Samples move between modules as int16 numpy arrays shaped (samples, channels).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import TypeAlias

import av
import numpy as np
import numpy.typing as npt

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE, TIME_BASE

MIN_FEED_RATE = 8000
MAX_FEED_RATE = 192000

Samples = npt.NDArray[np.int16]
# What the inputs hand the sender every 20 ms: s16 interleaved bytes, or None for digital
# silence (the sender then sends a fixed Opus silence packet: nothing to build or encode).
Chunk: TypeAlias = bytes | None

_LAYOUTS = {1: "mono", 2: "stereo"}


def layout_name(channels: int) -> str:
    try:
        return _LAYOUTS[channels]
    except KeyError:
        raise ValueError(f"channels must be 1 or 2, got {channels}") from None


def silence(samples: int, channels: int) -> Samples:
    return np.zeros((samples, channels), dtype=np.int16)


def pcm_frame(pcm: bytes, channels: int, pts: int) -> av.AudioFrame:
    """An s16 48 kHz AudioFrame holding interleaved `pcm`, stamped with `pts`."""
    frame = av.AudioFrame(
        format="s16", layout=layout_name(channels), samples=len(pcm) // (2 * channels)
    )
    frame.planes[0].update(pcm)
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


def downmix(pcm: bytes) -> bytes:
    """Stereo s16 interleaved to mono (the mean of the two channels)."""
    both = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2).astype(np.int32)
    return ((both[:, 0] + both[:, 1]) // 2).astype(np.int16).tobytes()


class Resampler:
    """Converts audio of any rate/layout/format to s16 at `rate` with `channels`, keeping the
    filter state across calls so chunk boundaries stay seamless. A change of the input's rate or
    channel count starts a fresh filter (after flushing the old one)."""

    def __init__(self, rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[int, int] | None = None

    def _make(self) -> av.AudioResampler:
        return av.AudioResampler(format="s16", layout=layout_name(self.channels), rate=self.rate)

    def _collect(self, frames: list[av.AudioFrame]) -> Samples:
        parts = [f.to_ndarray().reshape(-1, self.channels) for f in frames]
        if not parts:
            return silence(0, self.channels)
        return np.concatenate(parts).astype(np.int16, copy=False)

    def convert_frame(self, frame: av.AudioFrame) -> Samples:
        """Resample a decoded frame (any format); frame pts is ignored."""
        key = (frame.sample_rate, len(frame.layout.channels))
        flushed = silence(0, self.channels)
        if self._resampler is None or key != self._input:
            if self._resampler is not None:
                flushed = self._collect(self._resampler.resample(None))
            self._resampler = self._make()
            self._input = key
        frame.pts = None
        out = self._collect(self._resampler.resample(frame))
        return np.concatenate([flushed, out]) if len(flushed) else out

    def convert(self, samples: Samples, rate: int) -> Samples:
        """Resample interleaved s16 samples shaped (n, channels_in) recorded at `rate`."""
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1),
            format="s16",
            layout=layout_name(samples.shape[1]),
        )
        frame.sample_rate = rate
        return self.convert_frame(frame)

    def flush(self) -> Samples:
        if self._resampler is None:
            return silence(0, self.channels)
        out = self._collect(self._resampler.resample(None))
        self._resampler = None
        self._input = None
        return out


class SampleRing:
    """A bounded FIFO of samples shared between a PortAudio callback thread and the event loop.

    Writing beyond `capacity` drops the oldest samples (counted in `dropped`): a buffer that
    grows without bound only adds latency. Reads never block; a short read is the caller's
    underrun to handle."""

    def __init__(self, capacity: int, channels: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.channels = channels
        self._buf = silence(capacity, channels)
        self._start = 0
        self._size = 0
        self._lock = threading.Lock()
        self.dropped = 0

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def clear(self) -> None:
        with self._lock:
            self._start = 0
            self._size = 0

    def write(self, samples: Samples) -> int:
        """Append samples; returns how many old samples were dropped to make room."""
        n = len(samples)
        with self._lock:
            if n >= self.capacity:
                dropped = self._size + n - self.capacity
                self._buf[:] = samples[n - self.capacity :]
                self._start = 0
                self._size = self.capacity
            else:
                dropped = max(0, self._size + n - self.capacity)
                if dropped:
                    self._start = (self._start + dropped) % self.capacity
                    self._size -= dropped
                end = (self._start + self._size) % self.capacity
                first = min(n, self.capacity - end)
                self._buf[end : end + first] = samples[:first]
                self._buf[: n - first] = samples[first:]
                self._size += n
            self.dropped += dropped
            return dropped

    def read(self, n: int) -> Samples:
        """Remove and return up to n samples (fewer when fewer are buffered)."""
        with self._lock:
            n = min(n, self._size)
            first = min(n, self.capacity - self._start)
            head = self._buf[self._start : self._start + first]
            out = np.concatenate([head, self._buf[: n - first]])
            self._start = (self._start + n) % self.capacity
            self._size -= n
            return out


class Pacer:
    """Releases frames on the wall clock: frame k is due `k * duration` after the first.

    Schedules start on a grid of whole frame durations of the monotonic clock, so all the
    inputs of a daemon wake in the same loop iteration instead of one iteration each.
    If the consumer falls more than `max_lag` behind (a suspended laptop, a stalled loop) the
    schedule restarts instead of bursting the backlog out.

    wait() is due() then advance() for a reader that sleeps in between; a reader on a timer
    (media/rtp_send.py) calls the two itself."""

    def __init__(self, frame_seconds: float = FRAME_SAMPLES / SAMPLE_RATE, max_lag: float = 0.2):
        self.frame_seconds = frame_seconds
        self.max_lag = max_lag
        self._origin: float | None = None
        self._next = 0  # the frame due next, counted from _origin

    def due(self, now: float) -> float:
        """When the next frame is due (time.monotonic()); the same until advance(), unless the
        schedule restarts on the next grid point (first frame, or `max_lag` behind)."""
        if self._origin is not None:
            due = self._origin + self._next * self.frame_seconds
            if now - due <= self.max_lag:
                return due
        self._origin = math.ceil(now / self.frame_seconds) * self.frame_seconds
        self._next = 0
        return self._origin

    def advance(self) -> None:
        """The frame due has been released."""
        self._next += 1

    async def wait(self) -> None:
        now = time.monotonic()
        due = self.due(now)
        self.advance()
        if due > now:
            await asyncio.sleep(due - now)
