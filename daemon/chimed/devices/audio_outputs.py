"""Speakers: consumers of the meeting's remote audio track (`set_audio_output(consumer)`).

An output reads a track with a recv() loop in its own task. `start(track)` attaches a track
(attaching another one later, e.g. after renegotiation, replaces it without closing the
sink); `stop()` ends the loop and closes the sink. A track that ends (MediaStreamError) leaves
the sink open for the next track. Frames of any format are resampled to the sink's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import wave
from collections import deque
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.audio_format import SAMPLE_RATE
from chimed.devices import portaudio
from chimed.devices.pcm import (
    MAX_FEED_RATE,
    MIN_FEED_RATE,
    Resampler,
    SampleRing,
    Samples,
    layout_name,
    silence,
)
from chimed.errors import InvalidArgument

log = logging.getLogger(__name__)


class AudioOutput:
    """Base of the outputs: the recv() loop and its lifecycle."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, channels: int = 1) -> None:
        layout_name(channels)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_received = 0
        self._resampler = Resampler(sample_rate, channels)
        self._task: asyncio.Task[None] | None = None
        self._track: MediaStreamTrack | None = None
        self._stopped = False
        self.track_ended = asyncio.Event()

    @property
    def track(self) -> MediaStreamTrack | None:
        return self._track

    def start(self, track: MediaStreamTrack) -> None:
        """Consume `track` (must be called from the event loop); replaces any previous track."""
        if self._stopped:
            raise RuntimeError("this audio output has been stopped")
        if track.kind != "audio":
            raise ValueError(f"an audio output needs an audio track, got {track.kind!r}")
        if self._task is not None:
            self._task.cancel()
        self._track = track
        self.track_ended.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue  # encoded packets are not ours to play
                self.frames_received += 1
                self._consume(self._resampler.convert_frame(frame))
        except MediaStreamError:
            self.track_ended.set()
        except Exception:  # a sink that fails (disk full...) stops consuming, loudly
            log.exception("audio output %s failed", type(self).__name__)
            self.track_ended.set()

    async def stop(self) -> None:
        """Stop reading and close the sink (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._aclose()

    def discard(self) -> None:
        """Release an output that was never started (no await: for callbacks)."""
        if self._task is not None:
            raise RuntimeError("discard() is for outputs never started; use stop()")
        if not self._stopped:
            self._stopped = True
            self._close()

    async def _aclose(self) -> None:
        self._close()

    def _consume(self, samples: Samples) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class NullOutput(AudioOutput):
    """Drains the track (keeps the receiver flowing) and only counts what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.samples_received = 0

    def _consume(self, samples: Samples) -> None:
        self.samples_received += len(samples)


class WavRecorder(AudioOutput):
    """Records to a 48 kHz s16 WAV file; the header's sizes are final once stop() returns."""

    def __init__(self, path: str | os.PathLike[str], channels: int = 1) -> None:
        super().__init__(SAMPLE_RATE, channels)
        self.path = os.fspath(path)
        try:
            self._file: Any = wave.open(self.path, "wb")
        except OSError as exc:
            raise InvalidArgument(f"cannot write WAV file {self.path!r}: {exc.strerror}") from exc
        self._file.setnchannels(channels)
        self._file.setsampwidth(2)
        self._file.setframerate(SAMPLE_RATE)
        self.samples_written = 0

    def _consume(self, samples: Samples) -> None:
        self._file.writeframesraw(samples.astype("<i2").tobytes())
        self.samples_written += len(samples)

    def _close(self) -> None:
        self._file.close()


class PcmFeedOutput(AudioOutput):
    """The meeting audio as an async iterator of s16le interleaved chunks (one per received
    20 ms frame) at the requested rate and channel count. A consumer slower than real time
    loses the oldest chunks beyond `max_buffer_ms` (`dropped_chunks`). Iteration ends after
    stop()."""

    def __init__(
        self, sample_rate: int = SAMPLE_RATE, channels: int = 1, max_buffer_ms: int = 1000
    ) -> None:
        if not MIN_FEED_RATE <= sample_rate <= MAX_FEED_RATE:
            raise InvalidArgument(
                f"sample_rate {sample_rate} Hz is outside {MIN_FEED_RATE}-{MAX_FEED_RATE} Hz"
            )
        super().__init__(sample_rate, channels)
        self._max_chunks = max(1, max_buffer_ms // 20)
        self._chunks: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.dropped_chunks = 0

    def _consume(self, samples: Samples) -> None:
        if not len(samples):
            return
        if len(self._chunks) >= self._max_chunks:
            self._chunks.popleft()
            self.dropped_chunks += 1
        self._chunks.append(samples.astype("<i2").tobytes())
        self._ready.set()

    def _close(self) -> None:
        tail = self._resampler.flush()
        if len(tail):
            self._chunks.append(tail.astype("<i2").tobytes())
        self._ready.set()

    def __aiter__(self) -> PcmFeedOutput:
        return self

    async def __anext__(self) -> bytes:
        while not self._chunks:
            if self._stopped:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._chunks.popleft()


class SoundDeviceOutput(AudioOutput):
    """A PortAudio playback device behind a jitter buffer.

    The recv() loop writes into a bounded ring; PortAudio's callback reads it. Playback starts
    (and restarts after running dry) once `prefill_ms` is buffered; while dry the callback plays
    silence and counts it (`underrun_samples`). Beyond `max_buffer_ms` the oldest audio is
    dropped (`dropped_samples`), so latency cannot grow."""

    def __init__(
        self,
        device: int,
        channels: int = 1,
        env: dict[str, str] | None = None,
        prefill_ms: int = 60,
        max_buffer_ms: int = 300,
        label: str = "",
    ) -> None:
        super().__init__(SAMPLE_RATE, channels)
        if not 0 <= prefill_ms < max_buffer_ms:
            raise ValueError("prefill_ms must be below max_buffer_ms")
        self.label = label or str(device)
        self._ring = SampleRing(SAMPLE_RATE * max_buffer_ms // 1000, channels)
        self._prefill = SAMPLE_RATE * prefill_ms // 1000
        self._playing = False
        self._ever_played = False
        self.underrun_samples = 0

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            if not self._playing and len(self._ring) >= max(self._prefill, 1):
                self._playing = self._ever_played = True
            got = self._ring.read(frames) if self._playing else silence(0, channels)
            outdata[: len(got)] = got
            if len(got) < frames:
                outdata[len(got) :] = 0
                if self._ever_played:
                    self.underrun_samples += frames - len(got)
                self._playing = False

        self._stream: Any = portaudio.open_started(
            "output", device, channels, callback, env, self.label
        )

    @property
    def dropped_samples(self) -> int:
        return self._ring.dropped

    @property
    def buffered_ms(self) -> float:
        return len(self._ring) * 1000 / SAMPLE_RATE

    def _consume(self, samples: Samples) -> None:
        self._ring.write(samples)

    async def _aclose(self) -> None:
        pending = self._close_stream()
        if pending is not None:
            await asyncio.shield(pending)  # closes in a worker thread even if we are cancelled

    def _close(self) -> None:
        self._close_stream()

    def _close_stream(self) -> asyncio.Future[None] | None:
        if self._stream is None:
            return None
        stream, self._stream = self._stream, None
        return portaudio.close_stream_soon(stream)
