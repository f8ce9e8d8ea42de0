"""What a view is sent: a decoded frame as I420, RGB24 or JPEG bytes, optionally scaled down,
at most so many frames a second.

  fit_within(w, h, max_w, max_h)   the size a frame is scaled to: never up, aspect kept
  FrameConverter                   av.VideoFrame -> ConvertedFrame (bytes, width, height)
  RateLimiter                      passes at most max_fps frames a second of stream time
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Any, TypeAlias

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from chime.v1 import video_pb2

from chimed.errors import InvalidArgument

FrameFormat: TypeAlias = video_pb2.FrameFormat.ValueType
I420 = video_pb2.FRAME_FORMAT_I420
RGB24 = video_pb2.FRAME_FORMAT_RGB24
JPEG = video_pb2.FRAME_FORMAT_JPEG
JPEG_QUALITY = 5  # MJPEG quantizer: 2 (best) to 31


def format_name(value: int) -> str:
    """FRAME_FORMAT_... for a known enum value, else the number (for error messages)."""
    if value in video_pb2.FrameFormat.values():
        return video_pb2.FrameFormat.Name(value)  # type: ignore[arg-type]
    return str(value)


def fit_within(width: int, height: int, max_width: int = 0, max_height: int = 0) -> tuple[int, int]:
    """The largest size within max_width x max_height (0: no limit) with the aspect ratio of
    width x height, never larger than it; even (4:2:0 chroma), at least 2x2."""
    scale = 1.0
    if max_width > 0:
        scale = min(scale, max_width / width)
    if max_height > 0:
        scale = min(scale, max_height / height)
    if scale >= 1.0:
        return width, height
    return max(2, int(width * scale) & ~1), max(2, int(height * scale) & ~1)


@dataclass(frozen=True)
class ConvertedFrame:
    data: bytes
    width: int
    height: int


class FrameConverter:
    """Converts frames to one format, scaled down to fit max_width x max_height (0: no limit).

    I420 is planar Y, U, V with no row padding; RGB24 is packed rows; JPEG is one baseline
    JPEG image (FFmpeg's MJPEG encoder, kept while the size stays the same)."""

    def __init__(self, frame_format: FrameFormat, max_width: int = 0, max_height: int = 0) -> None:
        if frame_format not in (I420, RGB24, JPEG):
            raise InvalidArgument(
                "format must be FRAME_FORMAT_I420, FRAME_FORMAT_RGB24 or FRAME_FORMAT_JPEG, "
                f"got {format_name(frame_format)}"
            )
        if max_width < 0 or max_height < 0:
            raise InvalidArgument("max_width and max_height must not be negative")
        self.format = frame_format
        self.max_width = max_width
        self.max_height = max_height
        self._jpeg: Any = None  # the MJPEG encoder for the current size
        # Its own scaler: a frame's cached one is shared by every view of the frame (and by
        # an encoder thread that reformats it), each asking for another size and format.
        self._scaler = VideoReformatter()

    def convert(self, frame: av.VideoFrame) -> ConvertedFrame:
        width, height = fit_within(frame.width, frame.height, self.max_width, self.max_height)
        if self.format == RGB24:
            rgb = self._scaler.reformat(frame, width, height, format="rgb24").to_ndarray()
            return ConvertedFrame(rgb.tobytes(), width, height)
        if self.format == I420:
            width, height = width & ~1, height & ~1  # an odd-sized source frame
            i420 = self._scaler.reformat(frame, width, height, format="yuv420p")
            return ConvertedFrame(_packed(i420), width, height)
        return ConvertedFrame(self._encode_jpeg(frame, width, height), width, height)

    def _encode_jpeg(self, frame: av.VideoFrame, width: int, height: int) -> bytes:
        encoder = self._jpeg
        if encoder is None or (encoder.width, encoder.height) != (width, height):
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height = width, height
            encoder.pix_fmt = "yuvj420p"
            encoder.time_base = fractions.Fraction(1, 90_000)
            encoder.qmin = encoder.qmax = JPEG_QUALITY  # a fixed quality, whatever the rate
            self._jpeg = encoder
        picture = self._scaler.reformat(frame, width, height, format="yuvj420p")
        if picture is frame:  # already yuvj420p at that size: the frame is not ours to stamp
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuvj420p")
        picture.pts = None
        return b"".join(bytes(packet) for packet in encoder.encode(picture))


def _packed(frame: av.VideoFrame) -> bytes:
    """A yuv420p frame's planes without row padding, Y then U then V."""
    parts = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        parts.append(rows[: plane.height, : plane.width].tobytes())
    return b"".join(parts)


class RateLimiter:
    """Passes at most `max_fps` frames per second of frame time (0: every frame).

    Frames are kept on a schedule of 1/max_fps steps rather than "at least 1/max_fps after the
    last one", so a 30 fps stream limited to 25 gives 25, not 15. A frame at most 1 ms early
    counts as on time (timestamps are rounded to the clock); a stream that pauses longer than a
    step, or whose time jumps back (a looped file), restarts the schedule."""

    TOLERANCE = 0.001

    def __init__(self, max_fps: float = 0) -> None:
        if max_fps < 0:
            raise InvalidArgument(f"max_fps must not be negative, got {max_fps:g}")
        self.max_fps = max_fps
        self._next: float | None = None

    def allow(self, seconds: float) -> bool:
        """Whether the frame at `seconds` (its timestamp) is passed on."""
        if self.max_fps == 0:
            return True
        step = 1 / self.max_fps
        early = self._next is not None and seconds < self._next - self.TOLERANCE
        if self._next is None or not self._next - step <= seconds <= self._next + step:
            self._next = seconds  # first frame, a pause or a jump back: restart the schedule
        elif early:
            return False
        self._next += step
        return True
