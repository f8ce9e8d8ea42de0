"""The session's two long-lived audio seams into the peer: an `InputSwitch` track (forwards
the current input device; a switch never ends what aiortc sends) and a `MixFanout` consumer
(one reader of the received mix, copying frames to every `MixTap`: the output device's and
each PCM listener's, each bounded)."""

from __future__ import annotations

import asyncio
import fractions
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.devices.audio_inputs import AudioInput
from chimed.devices.pcm import Chunk

TAP_FRAMES = 50  # 1 s of 20 ms frames per listener; a slower one loses the oldest
_T = TypeVar("_T")


class InputSwitch(MediaStreamTrack):
    """Forwards the current source; a source swapped (and stopped) under a pending recv()
    is simply replaced, and one that ends on its own is reported to `on_ended`, which
    installs a fallback. Timestamps are restamped so they run on across sources.
    read_mono() forwards the sources' raw 20 ms chunks the same way (the sender's fast path),
    and due()/take_mono() those of a source on the Pacer's clock (the sender's timer)."""

    kind = "audio"

    def __init__(
        self, source: AudioInput, on_ended: Callable[[MediaStreamTrack, str], None]
    ) -> None:
        super().__init__()
        self.source = source
        self.on_ended = on_ended
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        frame = await self._pull(lambda source: source.recv())
        if not isinstance(frame, av.AudioFrame):
            raise MediaStreamError("the audio input gave a frame that is not audio")
        frame.pts = self._pts
        frame.time_base = _time_base(frame.sample_rate)
        self._pts += frame.samples
        return frame

    async def read_mono(self) -> Chunk:
        return await self._pull(lambda source: source.read_mono())

    def due(self, now: float) -> float | None:
        """The current source's due(): None unless it runs on the Pacer's clock."""
        return self.source.due(now) if self.readyState == "live" else None

    def take_mono(self) -> Chunk:
        """The current source's take_mono(); when it fails, the fallback is installed and this
        frame is silence (the reader asks the new source's due() before the next)."""
        if self.readyState != "live":
            raise MediaStreamError
        source = self.source
        try:
            return source.take_mono()
        except Exception as exc:
            self._failed(source, exc)
            return None

    async def _pull(self, get: Callable[[AudioInput], Awaitable[_T]]) -> _T:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self.source
            try:
                return await get(source)
            except Exception as exc:  # an input that fails must not end what aiortc sends
                self._failed(source, exc)

    def _failed(self, source: AudioInput, exc: Exception) -> None:
        """Report `source` ended to on_ended (which installs a fallback) unless it was already
        replaced; raises MediaStreamError when there is nothing to go on with."""
        if self.readyState != "live":
            raise MediaStreamError from exc
        if source is self.source:
            reason = getattr(source, "error", None) or (
                "it ended" if isinstance(exc, MediaStreamError) else repr(exc)
            )
            self.on_ended(source, reason)
            if source is self.source:
                raise MediaStreamError from exc  # nothing to fall back to


@functools.lru_cache(maxsize=8)
def _time_base(sample_rate: int) -> fractions.Fraction:
    return fractions.Fraction(1, sample_rate)


class MixTap(MediaStreamTrack):
    """One listener's copy of the received mix, at most TAP_FRAMES behind."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[av.AudioFrame] = deque(maxlen=TAP_FRAMES)
        self._ready = asyncio.Event()

    def put(self, frame: av.AudioFrame) -> None:
        self._frames.append(frame)
        self._ready.set()

    async def recv(self) -> av.AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class MixFanout:
    """The session's audio consumer: reads the received mix and hands each frame to every
    tap. `on_demand(wanted)` hears when the first tap comes and the last one goes: with no
    tap nothing hears the mix, and the peer can drop it undecoded."""

    def __init__(self, on_demand: Callable[[bool], None] | None = None) -> None:
        self._taps: set[MixTap] = set()
        self._on_demand = on_demand

    def tap(self) -> MixTap:
        tap = MixTap()
        self._taps.add(tap)
        if len(self._taps) == 1 and self._on_demand is not None:
            self._on_demand(True)
        return tap

    def untap(self, tap: MixTap) -> None:
        if tap in self._taps:
            self._taps.discard(tap)
            if not self._taps and self._on_demand is not None:
                self._on_demand(False)
        tap.stop()

    async def consume(self, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()  # MediaStreamError ends it; the peer expects that
            if not isinstance(frame, av.AudioFrame):
                continue
            for tap in tuple(self._taps):
                tap.put(frame)
