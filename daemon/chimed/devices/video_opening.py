"""Opening a video device id as a video track (the ids are in video_ids.py)."""

from __future__ import annotations

import os

from chimed.devices.video_ids import parse
from chimed.devices.video_inputs import (
    CameraSource,
    FileSource,
    FramesSource,
    MacCameraSource,
    PatternSource,
    ScreenSource,
    VideoInput,
    ffmpeg_has_input,
    x11_present,
)
from chimed.errors import NotFound


def blocks(device_id: str) -> bool:
    """Whether opening `device_id` blocks (a file decodes its first frame, a screen or camera
    connects), so that an event loop should open it in a worker thread."""
    return device_id.startswith(("virtual:file", "x11:", "v4l2:", "avf:"))


def open_video_input(device_id: str, label: str = "") -> VideoInput:
    """The video track for `device_id`; `label` is what a pattern shows (the external user id).
    Blocking for the ids that `blocks`."""
    parsed = parse(device_id)
    size = (parsed.width, parsed.height) if parsed.width and parsed.height else None
    if parsed.scheme == "x11":
        return ScreenSource(parsed.name, parsed.fps, size)
    if parsed.scheme == "v4l2":
        return CameraSource(parsed.name, parsed.fps, size)
    if parsed.scheme == "avf":
        return MacCameraSource(int(parsed.name), parsed.fps, size)
    if parsed.name == "file":
        return FileSource(parsed.path, loop=parsed.loop)
    assert size is not None
    if parsed.name == "pattern":
        return PatternSource(*size, fps=parsed.fps, label=label)
    return FramesSource(*size, fps=parsed.fps)


def check_present(device_id: str) -> None:
    """Validate `device_id` and check, without opening it, that its file, local display or
    camera is there (NotFound if not): what SwitchCamera and CreateSession check before the
    input is opened."""
    parsed = parse(device_id)
    missing = ""
    if parsed.name == "file" and not os.path.isfile(parsed.path):
        missing = f"no file {parsed.path}"
    elif parsed.scheme == "v4l2" and not os.path.exists(parsed.name):
        missing = f"no camera {parsed.name}"
    elif parsed.scheme == "avf" and not ffmpeg_has_input("avfoundation"):
        missing = "no AVFoundation here (macOS cameras only)"
    elif parsed.scheme == "x11" and not x11_present(parsed.name):
        missing = f"no X server on display {parsed.name}"
    if missing:
        raise NotFound(f"video device {device_id!r}: {missing}")
