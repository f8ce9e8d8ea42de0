"""Frame numbers written into the picture, so that latency can be read off the decoded frames.

A number (16 bits) is drawn across the top of the luma plane as two rows of 16 big blocks,
white for a one and black for a zero: the first row holds the number, the second its
complement, so a frame whose marks did not survive (a partial frame, a scaled picture too
small to read) reads as None instead of a wrong number. Blocks are 1/16 of the width and 1/12
of the height, so VP8 at any sensible bitrate, JPEG and scaling to a quarter keep them; the
reader samples the middle of each block and needs no calibration.

  stamp(frame, n)        draws n into a yuv420p frame in place (luma and neutral chroma)
  read_luma(y)           the number in a luma plane (height x width array), or None
  read_i420(data, w, h)  the same from packed I420 bytes (BindView's I420 frames)
  read_frame(frame)      the same from an av.VideoFrame (a decoder's output)
  MarkedPattern          PatternSource with the frame count stamped in, and send times
"""

from __future__ import annotations

import time

import av
import numpy as np
import numpy.typing as npt
from chimed.devices.video_inputs import PatternSource

BITS = 16
MODULO = 1 << BITS
ROWS = 12  # a block is 1/ROWS of the picture's height; the marks take the top two
WHITE, BLACK = 235, 16  # BT.601 limited range, as the pattern draws

Luma = npt.NDArray[np.uint8]


def _plane(frame: av.VideoFrame, index: int) -> npt.NDArray[np.uint8]:
    """A writable view of one plane of `frame` without its row padding."""
    plane = frame.planes[index]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _bits(n: int) -> list[int]:
    return [(n >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def stamp(frame: av.VideoFrame, n: int) -> None:
    """Draw `n % MODULO` into a yuv420p frame (in place)."""
    if frame.format.name != "yuv420p":
        raise ValueError(f"stamp needs a yuv420p frame, got {frame.format.name}")
    n %= MODULO
    y = _plane(frame, 0)
    height, width = y.shape
    block_h = height // ROWS
    for row, value in enumerate((n, ~n & (MODULO - 1))):
        top = row * block_h
        for i, bit in enumerate(_bits(value)):
            left, right = i * width // BITS, (i + 1) * width // BITS
            y[top : top + block_h, left:right] = WHITE if bit else BLACK
    for index in (1, 2):  # no colour under the marks: the blocks differ in luma alone
        _plane(frame, index)[:block_h, :] = 128


def read_luma(y: Luma) -> int | None:
    """The number stamped into this luma plane (any size the marks scale to), or None."""
    height, width = y.shape
    block_h = height / ROWS
    if block_h < 4 or width / BITS < 4:
        return None
    values = []
    for row in range(2):
        top, bottom = round((row + 0.25) * block_h), round((row + 0.75) * block_h)
        value = 0
        for i in range(BITS):
            left = round((i + 0.25) * width / BITS)
            right = round((i + 0.75) * width / BITS)
            level = float(y[top:bottom, left:right].mean())
            value = (value << 1) | (level > (WHITE + BLACK) / 2)
        values.append(value)
    number, complement = values
    return number if number ^ complement == MODULO - 1 else None


def read_i420(data: bytes, width: int, height: int) -> int | None:
    """The number in packed I420 bytes (Y plane first, no row padding)."""
    if len(data) < width * height:
        return None
    return read_luma(
        np.frombuffer(data, dtype=np.uint8, count=width * height).reshape(height, width)
    )


def read_frame(frame: av.VideoFrame) -> int | None:
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return read_luma(_plane(frame, 0))


def unwrap(n: int, near: int) -> int:
    """The whole number congruent to `n` modulo MODULO that lies nearest `near` (numbers read
    back wrap every MODULO frames; at 15 fps that is over an hour)."""
    base = near - MODULO // 2
    return base + (n - base) % MODULO


class MarkedPattern(PatternSource):
    """The test pattern with each frame's number (0, 1, ...) stamped in. `sent[n]` is the
    monotonic time frame n left recv(), i.e. was handed to the encoder."""

    def __init__(self, width: int = 640, height: int = 480, fps: float = 15.0, label: str = ""):
        super().__init__(width, height, fps, label)
        self.sent: dict[int, float] = {}

    def draw(self) -> av.VideoFrame:
        number = self.count
        frame = super().draw()
        stamp(frame, number)
        return frame

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        self.sent[self.count - 1] = time.monotonic()
        return frame


class Arrivals:
    """First arrival time of each frame number read back (numbers unwrapped in order)."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.unreadable = 0
        self._last: int | None = None

    def add(self, n: int | None, now: float) -> None:
        if n is None:
            self.unreadable += 1
            return
        if self._last is not None:
            n = unwrap(n, self._last)
        self._last = n
        self.first.setdefault(n, now)


def latencies(sent: dict[int, float], arrived: dict[int, float]) -> list[float]:
    """Seconds from each frame's send time to its first arrival, for frames seen at both ends."""
    return [arrived[n] - sent[n] for n in sorted(arrived) if n in sent]
