"""Small audio tracks of the client path: silence to send when there is no input, and a gate
that sends silence in place of the input while the attendee is muted."""

from __future__ import annotations

import asyncio
import fractions
import time

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

SAMPLE_RATE = 48000
PTIME_S = 0.020
SAMPLES = int(SAMPLE_RATE * PTIME_S)
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def silent_frame(samples: int, sample_rate: int, layout: str = "stereo") -> AudioFrame:
    frame = AudioFrame(format="s16", layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = sample_rate
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame


class SilenceTrack(MediaStreamTrack):  # type: ignore[misc]
    """Real-time paced silence at 48 kHz stereo, the Opus encoder's own rate (no resampling).

    An attendee that sends no audio is never present in a Chime meeting, so this is what is
    sent when the caller gives no input."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += SAMPLES
            await asyncio.sleep(self._start + self._pts / SAMPLE_RATE - time.monotonic())
        frame = silent_frame(SAMPLES, SAMPLE_RATE)
        frame.pts = self._pts
        return frame


class GateTrack(MediaStreamTrack):  # type: ignore[misc]
    """Forwards a source track; while muted, sends silence of the same shape and timing.

    Stopping the gate leaves the source alone: its owner decides when it ends."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.source = source
        self.muted = False

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.recv()
        if not isinstance(frame, AudioFrame):
            raise MediaStreamError("the audio input gave a frame that is not audio")
        if not self.muted:
            return frame
        silent = silent_frame(frame.samples, frame.sample_rate, frame.layout.name)
        silent.pts = frame.pts
        if frame.time_base is not None:
            silent.time_base = frame.time_base
        return silent
