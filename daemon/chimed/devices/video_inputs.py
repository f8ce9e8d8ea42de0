"""Cameras and virtual video sources: aiortc video tracks the peer connection sends.

Every source yields av.VideoFrames with a 90 kHz time base, released on the wall clock at
the source's frame rate by a Pacer (recv() never runs ahead of real time). The pts follow the
pacing schedule, so a consumer that stalls sees the gap in the timestamps too.

  PatternSource   a moving test pattern showing a label and a frame counter
  FileSource      any video file PyAV decodes, at the file's frame rate, looped or once
  FramesSource    frames fed by the caller (I420 or RGB24 bytes of one fixed size)
  CaptureSource   an FFmpeg capture device read in a thread: the X11 screen (ScreenSource,
                  x11grab) or a V4L2 camera (CameraSource)
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.devices.pcm import Pacer
from chimed.devices.video_font import GLYPH_HEIGHT, text_mask, text_width
from chimed.errors import ChimedError, InvalidArgument, NotFound
from chimed.media.video_frames import I420, RGB24, FrameFormat, format_name

CLOCK_RATE = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
MAX_FPS = 60.0
MAX_SIDE = 4096
X11_SOCKETS = "/tmp/.X11-unix"  # where local X servers listen, one socket X<n> a display

Plane = npt.NDArray[np.uint8]

# 75 % colour bars (white, yellow, cyan, green, magenta, red, blue) in BT.601 limited range.
_BARS_YUV = (
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
)
_BLACK = (16, 128, 128)
_WHITE_Y = 235


def check_size(width: int, height: int) -> None:
    """Frame sizes the sources accept: even (I420 chroma is half size), 16 to 4096."""
    for name, value in (("width", width), ("height", height)):
        if not 16 <= value <= MAX_SIDE or value % 2:
            raise InvalidArgument(
                f"{name} must be an even number from 16 to {MAX_SIDE}, got {value}"
            )


def check_fps(fps: float) -> None:
    if not 0 < fps <= MAX_FPS:
        raise InvalidArgument(f"fps must be above 0 and at most {MAX_FPS:g}, got {fps:g}")


def i420_frame(y: Plane, u: Plane, v: Plane) -> av.VideoFrame:
    """A fresh yuv420p frame holding copies of the three planes (each row-packed)."""
    height, width = y.shape
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, pixels in zip(frame.planes, (y, u, v), strict=True):
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(
            plane.height, plane.line_size
        )
        rows[:, : plane.width] = pixels
    return frame


class VideoInput(MediaStreamTrack):
    """Base of the video sources: pacing and timestamps. Subclasses supply `_next_frame()`, or
    `_next()` when getting the picture may wait."""

    kind = "video"

    def __init__(self, fps: float) -> None:
        super().__init__()
        check_fps(fps)
        self.fps = fps
        self._pacer = Pacer(frame_seconds=1 / fps, max_lag=max(0.2, 2 / fps))
        self._start: float | None = None  # due time of the first frame

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        due = self._pacer.due(time.monotonic())
        self._pacer.advance()
        if self._start is None:
            self._start = due
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.readyState != "live":  # stopped while waiting
            raise MediaStreamError
        frame = await self._next()
        frame.pts = round((due - self._start) * CLOCK_RATE)
        frame.time_base = TIME_BASE
        return frame

    async def _next(self) -> av.VideoFrame:
        """The picture to send now (stamped by recv())."""
        return self._next_frame()

    def _next_frame(self) -> av.VideoFrame:
        raise NotImplementedError


class PatternSource(VideoInput):
    """Colour bars with a box sweeping across them, and below them `label` and a frame counter.

    The bars and the label are drawn once; a frame redraws only the box (restoring the bars it
    left) and the counter's digits, then copies the canvas into a fresh frame."""

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 15.0, label: str = ""
    ) -> None:
        check_size(width, height)
        super().__init__(fps)
        self.width = width
        self.height = height
        self.label = label
        self.count = 0  # frames made so far
        self._bars_height = (height * 2 // 3) & ~1
        self._box = max(2, (min(width, self._bars_height) // 6) & ~1)
        self._box_x: int | None = None
        self._background = self._draw_background()
        self._canvas = tuple(plane.copy() for plane in self._background)
        self._scale = max(1, height // 120)
        self._digits = [text_mask(str(d), self._scale) for d in range(10)]
        self._counter_y = height - 2 * self._scale - GLYPH_HEIGHT * self._scale
        self._draw_label()

    def _draw_background(self) -> tuple[Plane, Plane, Plane]:
        w, h, bars = self.width, self.height, self._bars_height
        planes = tuple(
            np.full((rows, cols), value, dtype=np.uint8)
            for (rows, cols), value in zip(
                ((h, w), (h // 2, w // 2), (h // 2, w // 2)), _BLACK, strict=True
            )
        )
        for index, colour in enumerate(_BARS_YUV):
            left, right = index * w // len(_BARS_YUV), (index + 1) * w // len(_BARS_YUV)
            planes[0][:bars, left:right] = colour[0]
            for plane, value in zip(planes[1:], colour[1:], strict=True):
                plane[: bars // 2, left // 2 : right // 2] = value
        return planes[0], planes[1], planes[2]

    def _draw_label(self) -> None:
        if not self.label:
            return
        margin = 2 * self._scale
        room = self.width - 2 * margin
        scale = self._scale
        while scale > 1 and text_width(len(self.label), scale) > room:
            scale -= 1
        mask = text_mask(self.label, scale)[:, :room]
        top = self._bars_height + margin
        if top + mask.shape[0] > self._counter_y:
            return  # too small a picture for both lines: the counter wins
        for plane in (self._background[0], self._canvas[0]):
            region = plane[top : top + mask.shape[0], margin : margin + mask.shape[1]]
            region[mask] = _WHITE_Y

    def _next_frame(self) -> av.VideoFrame:
        return self.draw()

    def draw(self) -> av.VideoFrame:
        """The next picture now, unpaced and without a timestamp (recv() paces and stamps)."""
        self._move_box()
        self._draw_counter()
        self.count += 1
        return i420_frame(*self._canvas)

    def _move_box(self) -> None:
        size, travel = self._box, self.width - self._box
        step = max(2, self.width // 64) & ~1
        x = (self.count * step) % (2 * travel)
        x = (x if x <= travel else 2 * travel - x) & ~1
        top = (self._bars_height - size) // 2 & ~1
        y, u, v = self._canvas
        if self._box_x is not None:  # put back what the last box covered
            old = self._box_x
            y[top : top + size, old : old + size] = self._background[0][
                top : top + size, old : old + size
            ]
            for plane, back in zip((u, v), self._background[1:], strict=True):
                rows = slice(top // 2, (top + size) // 2)
                cols = slice(old // 2, (old + size) // 2)
                plane[rows, cols] = back[rows, cols]
        y[top : top + size, x : x + size] = _WHITE_Y
        for plane in (u, v):
            plane[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2] = 128
        self._box_x = x

    def _draw_counter(self) -> None:
        text = str(self.count)
        margin = 2 * self._scale
        cell = text_width(1, self._scale)
        left = self.width - margin - cell * len(text)
        top = self._counter_y
        height = GLYPH_HEIGHT * self._scale
        y = self._canvas[0]
        if left < 0:
            return
        y[top : top + height, left - cell : self.width - margin] = _BLACK[0]
        for index, digit in enumerate(text):
            mask = self._digits[int(digit)]
            region = y[top : top + height, left + index * cell : left + (index + 1) * cell]
            region[mask] = _WHITE_Y


class FileSource(VideoInput):
    """The first video stream of a file (anything FFmpeg decodes), at the stream's frame rate.

    A thread decodes a frame or two ahead of recv() (never more, so a long file costs no
    memory, and the event loop never decodes); recv() waits for it when it falls behind. At
    the end the file starts over when `loop`, else the track ends; a decode error, or a looped
    file that can no longer be opened, ends the track with `error` set."""

    AHEAD = 2  # decoded frames waiting at most

    def __init__(self, path: str | os.PathLike[str], loop: bool = False) -> None:
        self.path = os.fspath(path)
        self.loop = loop
        self.error: str | None = None
        self._container: Any
        self._frames: Any
        self._open()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 15
        self.width: int = stream.codec_context.width
        self.height: int = stream.codec_context.height
        super().__init__(min(float(rate), MAX_FPS))
        # Decode the first frame now so that a file with no decodable picture fails at open.
        try:
            first = self._decode()
        except MediaStreamError as exc:
            raise InvalidArgument(str(exc)) from None
        if first is None:
            self._close()
            raise InvalidArgument(f"cannot decode video file {self.path!r}: no video frames")
        self._ready: queue.Queue[av.VideoFrame | None] = queue.Queue(self.AHEAD)
        self._ready.put(first)
        self._stopping = threading.Event()
        thread = threading.Thread(target=self._run, name=f"decode {self.path}", daemon=True)
        thread.start()

    def _open(self) -> None:
        if not os.path.isfile(self.path):
            raise NotFound(f"video file {self.path!r} does not exist")
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError) as exc:
            raise InvalidArgument(f"cannot decode video file {self.path!r}: {exc}") from exc
        if not self._container.streams.video:
            self._close()
            raise InvalidArgument(f"video file {self.path!r} has no video stream")
        self._frames = self._container.decode(video=0)

    def _close(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def _decode(self) -> av.VideoFrame | None:
        try:
            frame: av.VideoFrame = next(self._frames)
        except StopIteration:
            return None
        except (av.FFmpegError, OSError) as exc:
            self._close()
            raise MediaStreamError(f"cannot decode video file {self.path!r}: {exc}") from exc
        return frame

    def _run(self) -> None:
        """The decoding thread: fills the queue, then None at the end (or on an error)."""
        try:
            while True:
                frame = self._decode()
                if frame is None and self.loop:
                    self._close()
                    self._open()
                    frame = self._decode()
                if frame is None or not self._put(frame):
                    break
        except (MediaStreamError, ChimedError) as exc:
            self.error = str(exc)
        finally:
            self._close()
            self._put(None)

    # Queue waits time out now and then to see a stop: no thread outlives its track for long.

    def _put(self, item: av.VideoFrame | None) -> bool:
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Full):
                self._ready.put(item, timeout=0.1)
                return True
        return False

    def _take(self) -> av.VideoFrame | None:
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Empty):
                return self._ready.get(timeout=0.1)
        return None

    async def _next(self) -> av.VideoFrame:
        try:
            frame = self._ready.get_nowait()
        except queue.Empty:  # the decoder is behind real time: this picture comes late
            frame = await asyncio.to_thread(self._take)
        if frame is None:
            self.stop()
            raise MediaStreamError(self.error or f"video file {self.path!r} ended")
        return frame

    def stop(self) -> None:
        super().stop()
        self._stopping.set()


class FramesSource(VideoInput):
    """Frames fed by the caller (`feed`), sent at `fps`: each recv() gives the newest frame fed,
    the last one again when nothing new came, black before the first."""

    def __init__(self, width: int, height: int, fps: float = 15.0) -> None:
        check_size(width, height)
        super().__init__(fps)
        self.width = width
        self.height = height
        self.fed = 0  # frames accepted so far
        y = np.full((height, width), _BLACK[0], dtype=np.uint8)
        u = np.full((height // 2, width // 2), 128, dtype=np.uint8)
        self._planes: tuple[Plane, Plane, Plane] = (y, u, u.copy())

    def feed(self, data: bytes, frame_format: FrameFormat) -> None:
        """Take one frame: I420 (planar 4:2:0) or RGB24 (packed) of exactly this source's size."""
        w, h = self.width, self.height
        if frame_format == I420:
            self._check_length(data, w * h * 3 // 2, "I420")
            pixels = np.frombuffer(data, dtype=np.uint8)
            quarter = (h // 2) * (w // 2)
            y = pixels[: w * h].reshape(h, w)
            u = pixels[w * h : w * h + quarter].reshape(h // 2, w // 2)
            v = pixels[w * h + quarter :].reshape(h // 2, w // 2)
            self._planes = (y.copy(), u.copy(), v.copy())
        elif frame_format == RGB24:
            self._check_length(data, w * h * 3, "RGB24")
            rgb = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            self._planes = _planes(frame.reformat(format="yuv420p"))
        else:
            raise InvalidArgument(
                "format must be FRAME_FORMAT_I420 or FRAME_FORMAT_RGB24, "
                f"got {format_name(frame_format)}"
            )
        self.fed += 1

    def _check_length(self, data: bytes, expected: int, name: str) -> None:
        if len(data) != expected:
            raise InvalidArgument(
                f"frame is {len(data)} bytes; {name} at {self.width}x{self.height} is {expected}"
            )

    def _next_frame(self) -> av.VideoFrame:
        return i420_frame(*self._planes)


class CaptureSource(VideoInput):
    """An FFmpeg capture device (x11grab, video4linux2), read in a thread that keeps only the
    newest picture (converted to yuv420p there), which recv() sends at `fps`. The device paces
    the thread; nothing queues. A device that fails, or is no longer `present()` (checked each
    frame: x11grab goes on delivering frames after its X server has gone), ends the track
    with `error` set."""

    def __init__(
        self,
        url: str,
        device_format: str,
        options: dict[str, str],
        fps: float,
        present: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(fps)
        self.url = url
        self.error: str | None = None
        self._present = present
        try:
            self._container: Any = av.open(url, format=device_format, options=options)
        except (av.FFmpegError, OSError) as exc:
            raise NotFound(f"cannot open {device_format} device {url!r}: {exc}") from exc
        stream = self._container.streams.video[0]
        self.width: int = stream.codec_context.width
        self.height: int = stream.codec_context.height
        self._latest: tuple[Plane, Plane, Plane] | None = None
        self._fresh = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"capture {url}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for frame in self._container.decode(video=0):
                if self._stopping.is_set():
                    break
                if not self._present():
                    self.error = f"capture from {self.url!r} failed: the device went away"
                    break
                planes = _planes(frame.reformat(format="yuv420p"))
                with self._fresh:
                    self._latest = planes
                    self._fresh.notify_all()
        except (av.FFmpegError, OSError) as exc:
            self.error = f"capture from {self.url!r} failed: {exc}"
        finally:
            self._container.close()
            with self._fresh:
                self._fresh.notify_all()

    def _next_frame(self) -> av.VideoFrame:
        with self._fresh:
            planes = self._latest
        if not self._thread.is_alive():
            self.stop()
            raise MediaStreamError(self.error or f"capture from {self.url!r} ended")
        return i420_frame(*(planes or _black(self.width, self.height)))

    def wait_first(self, timeout: float) -> bool:
        """Block until the first picture was captured (or the capture ended); True if it was."""
        with self._fresh:
            self._fresh.wait_for(
                lambda: self._latest is not None or not self._thread.is_alive(), timeout
            )
            return self._latest is not None

    def stop(self) -> None:
        super().stop()
        self._stopping.set()


def _planes(frame: av.VideoFrame) -> tuple[Plane, Plane, Plane]:
    """Row-packed copies of a yuv420p frame's planes."""
    copies = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(
            plane.height, plane.line_size
        )
        copies.append(rows[:, : plane.width].copy())
    return copies[0], copies[1], copies[2]


def _black(width: int, height: int) -> tuple[Plane, Plane, Plane]:
    chroma = np.full((height // 2, width // 2), 128, dtype=np.uint8)
    return np.full((height, width), _BLACK[0], dtype=np.uint8), chroma, chroma


class ScreenSource(CaptureSource):
    """An X11 display (`:99`), the whole screen or its top-left `size` (width, height)."""

    def __init__(
        self, display: str = ":0", fps: float = 15.0, size: tuple[int, int] | None = None
    ) -> None:
        check_fps(fps)
        options = {"framerate": f"{fps:g}", "draw_mouse": "0"}
        if size is not None:
            check_size(*size)
            options["video_size"] = f"{size[0]}x{size[1]}"
        self.display = display
        super().__init__(display, "x11grab", options, fps, functools.partial(x11_present, display))


def x11_present(display: str) -> bool:
    """Whether a local display's server socket is still there (remote displays: assumed)."""
    host, _, number = display.partition(":")
    if host:
        return True
    return os.path.exists(os.path.join(X11_SOCKETS, f"X{number.partition('.')[0]}"))


class CameraSource(CaptureSource):
    """A V4L2 camera (`/dev/video0`), at the size and rate asked when it offers them."""

    def __init__(self, path: str, fps: float = 15.0, size: tuple[int, int] | None = None) -> None:
        check_fps(fps)
        if not os.path.exists(path):
            raise NotFound(f"no camera at {path}: the device does not exist")
        if not ffmpeg_has_input("video4linux2"):
            raise NotFound(f"cannot open camera {path}: this FFmpeg has no video4linux2 input")
        options = {"framerate": f"{fps:g}"}
        if size is not None:
            check_size(*size)
            options["video_size"] = f"{size[0]}x{size[1]}"
        super().__init__(
            path, "video4linux2", options, fps, functools.partial(os.path.exists, path)
        )


def ffmpeg_has_input(name: str) -> bool:
    """Whether this PyAV's FFmpeg has the input format `name` (listed as "name,alias")."""
    return any(name in listed.split(",") for listed in av.formats_available)


class MacCameraSource(CaptureSource):
    """An AVFoundation camera (macOS) by its index, at the size and rate asked when it offers
    them. Elsewhere FFmpeg has no avfoundation input and opening is NotFound."""

    def __init__(self, index: int, fps: float = 15.0, size: tuple[int, int] | None = None) -> None:
        check_fps(fps)
        if not ffmpeg_has_input("avfoundation"):
            raise NotFound(f"cannot open camera {index}: this FFmpeg has no avfoundation input")
        # nv12 is what AVFoundation cameras deliver without a conversion in FFmpeg.
        options = {"framerate": f"{fps:g}", "pixel_format": "nv12"}
        if size is not None:
            check_size(*size)
            options["video_size"] = f"{size[0]}x{size[1]}"
        super().__init__(f"{index}:none", "avfoundation", options, fps)
