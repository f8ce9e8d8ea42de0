"""The video devices there are now, as chime.v1 MediaDevice: cameras, X11 screens, the virtual
sources (the ids are in video_ids.py)."""

from __future__ import annotations

import glob
import os
import sys

from chime.v1 import types_pb2

from chimed.devices.video_ids import VIRTUAL_SOURCES
from chimed.devices.video_inputs import X11_SOCKETS, ffmpeg_has_input


def _device(
    device_id: str, label: str, kind: types_pb2.MediaDeviceType.ValueType, virtual: bool
) -> types_pb2.MediaDevice:
    return types_pb2.MediaDevice(
        id=device_id,
        label=label,
        type=kind,
        direction=types_pb2.DEVICE_DIRECTION_INPUT,
        kind=types_pb2.MEDIA_KIND_VIDEO,
        virtual=virtual,
    )


def x11_displays(socket_dir: str = X11_SOCKETS) -> list[str]:
    """Local X displays with a server socket now (":0", ":99"...), in display order."""
    numbers = []
    for entry in glob.glob(os.path.join(socket_dir, "X*")):
        digits = os.path.basename(entry)[1:]
        if digits.isdigit():
            numbers.append(int(digits))
    return [f":{n}" for n in sorted(numbers)]


def cameras(pattern: str = "/dev/video*") -> list[str]:
    """V4L2 device nodes present now."""
    return sorted(glob.glob(pattern))


def mac_cameras() -> list[str]:
    """AVFoundation camera indexes to offer: the default camera (index 0) on macOS when FFmpeg
    has the avfoundation input (FFmpeg lists devices only into its log, so no more are
    guessed); none elsewhere."""
    return ["0"] if sys.platform == "darwin" and ffmpeg_has_input("avfoundation") else []


def video_devices() -> list[types_pb2.MediaDevice]:
    """Cameras, then X11 screens, then the virtual sources."""
    other = types_pb2.MEDIA_DEVICE_TYPE_OTHER
    external = types_pb2.MEDIA_DEVICE_TYPE_VIDEO_EXTERNAL_CAMERA
    return [
        *(_device(f"v4l2:{path}", f"Camera {path}", external, False) for path in cameras()),
        *(_device(f"avf:{i}", f"AVFoundation camera {i}", external, False) for i in mac_cameras()),
        *(_device(f"x11:{d}", f"X11 screen {d}", other, False) for d in x11_displays()),
        *(_device(f"virtual:{k}", v, other, True) for k, v in VIRTUAL_SOURCES.items()),
    ]
