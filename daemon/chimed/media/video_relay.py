"""One video source read once, its newest frame handed to any number of readers.

The sender of the local video, each BindView of a tile and a received stream's viewers all
read through a FrameRelay: a task reads the source as fast as it gives frames and keeps only
the newest, numbered; a reader waits for a frame newer than the last it saw. A slow reader
skips frames, a fast one waits; nothing queues. The source can be swapped live (SwitchCamera)
and removed (the relay idles until the next one), and `wake()` lets readers check whether they
should end (their view was unbound or their tile removed).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

SizeHandler = Callable[[int, int], None]
CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)


class FrameRelay:
    def __init__(
        self,
        on_size: SizeHandler | None = None,
        *,
        stop_sources: bool = True,
        restamp: bool = False,
    ) -> None:
        """`on_size(width, height)` runs on the first frame and on every change of size;
        `stop_sources`: stop a source when it is replaced or the relay closes; `restamp`:
        time frames on the relay's own 90 kHz clock, so that a swapped source (whose time
        starts again at 0) goes on where the last one stopped."""
        self.on_size = on_size
        self.stop_sources = stop_sources
        self.restamp = restamp
        self._epoch = time.monotonic()
        self.frame: av.VideoFrame | None = None
        self.sequence = 0  # frames relayed so far
        self.size: tuple[int, int] | None = None
        self.ended = False  # the current source ended (or failed)
        self._source: MediaStreamTrack | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def source(self) -> MediaStreamTrack | None:
        return self._source

    def set_source(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        """Relay `source` from now on (None: idle); returns the previous one (stopped when
        `stop_sources`)."""
        previous, self._source = self._source, source
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if previous is not None and self.stop_sources:
            previous.stop()
        self.ended = False
        if source is not None:
            self._task = asyncio.create_task(self._pump(source), name="chimed-frame-relay")
        self.wake()
        return previous

    async def _pump(self, source: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await source.recv()
                assert isinstance(frame, av.VideoFrame)
                if self.restamp:
                    frame.pts = round((time.monotonic() - self._epoch) * CLOCK_RATE)
                    frame.time_base = TIME_BASE
                self.frame = frame
                self.sequence += 1
                size = (frame.width, frame.height)
                if size != self.size:
                    self.size = size
                    if self.on_size is not None:
                        self.on_size(*size)
                self.wake()
        except MediaStreamError:
            pass
        except Exception:
            log.exception("video source failed")
        self.ended = True
        self.wake()

    def wake(self) -> None:
        """Wake every reader (a new frame, or something for them to check)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, after: int) -> av.VideoFrame | None:
        """The newest frame once one newer than frame number `after` exists; None if woken
        without one (see `wake`)."""
        if self.sequence > after and self.frame is not None:
            return self.frame
        await self._changed.wait()
        return self.frame if self.sequence > after else None

    def track(self) -> RelayTrack:
        return RelayTrack(self)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._source is not None and self.stop_sources:
            self._source.stop()
        self._source = None
        self.wake()


class RelayTrack(MediaStreamTrack):
    """A relay as a track, for an RTCRtpSender: each recv() is the next newer frame; it waits
    while the relay idles (no source), so a sender outlives a StopLocal and a StartLocal."""

    kind = "video"

    def __init__(self, relay: FrameRelay) -> None:
        super().__init__()
        self._relay = relay
        self._seen = relay.sequence

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            frame = await self._relay.wait(self._seen)
            if frame is not None:
                self._seen = self._relay.sequence
                return frame
