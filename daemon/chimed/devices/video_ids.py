"""Video device ids: their syntax, the virtual sources and their parameters, and parsing
(video_opening.py opens them, video_listing.py lists them).

Device ids:
  virtual:pattern[?width=640&height=480&fps=15]   a moving test pattern with a label
  virtual:file?path=/x.mp4[&loop=1]               a video file (anything PyAV decodes)
  virtual:frames[?width=640&height=480&fps=15]    frames fed by the API caller
  x11:<display>[?fps=15&width=&height=]          an X11 screen, e.g. "x11::99"; width and
                                                  height (both or neither) crop to the top left
  v4l2:<path>[?fps=15&width=&height=]            a V4L2 camera, e.g. "v4l2:/dev/video0"
  avf:<index>[?fps=15&width=&height=]            an AVFoundation camera (macOS), e.g. "avf:0"
Parameter values are URL-encoded (urllib.parse.quote) when they contain '&', '=', '#' or '%'.

Errors: an unknown device (scheme or virtual source) or one that is not there (file, display,
camera) raises NotFound; a malformed display or camera path, bad or unknown parameters raise
InvalidArgument naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from chimed.devices.ids import flag_param, integer_param, number_param
from chimed.devices.video_inputs import check_fps, check_size
from chimed.errors import InvalidArgument, NotFound

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 640, 480, 15.0

VIRTUAL_SOURCES = {
    "pattern": "Test pattern (virtual:pattern?width=640&height=480&fps=15)",
    "file": "Video file (virtual:file?path=...&loop=1)",
    "frames": "Frames from the API (virtual:frames?width=640&height=480)",
}
_PARAMS = {
    "pattern": {"width", "height", "fps"},
    "file": {"path", "loop"},
    "frames": {"width", "height", "fps"},
    "x11": {"width", "height", "fps"},
    "v4l2": {"width", "height", "fps"},
    "avf": {"width", "height", "fps"},
}
_DISPLAY = re.compile(r"[A-Za-z0-9.-]*:\d+(\.\d+)?")
_CAMERA = re.compile(r"/dev/[A-Za-z0-9_./-]+")


@dataclass(frozen=True)
class VideoDeviceId:
    """A parsed video device id: `scheme` (virtual, x11, v4l2), `name` (the virtual source, the
    display or the device path) and the validated parameters."""

    scheme: str
    name: str
    width: int | None = None
    height: int | None = None
    fps: float = DEFAULT_FPS
    path: str = ""
    loop: bool = False
    params: Mapping[str, str] = field(default_factory=dict)


def parse(device_id: str) -> VideoDeviceId:
    """Parse and validate `device_id` (see the module doc); nothing is opened."""
    scheme, sep, rest = device_id.partition(":")
    if not sep or scheme not in ("virtual", "x11", "v4l2", "avf"):
        raise NotFound(
            f"unknown video device {device_id!r}: ids start with virtual:, x11:, v4l2: or avf:"
        )
    name, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise InvalidArgument(f"malformed parameters in video device id {device_id!r}") from exc
    kind = name if scheme == "virtual" else scheme
    if scheme == "virtual" and name not in VIRTUAL_SOURCES:
        raise NotFound(
            f"unknown video device {device_id!r}; virtual sources: {', '.join(VIRTUAL_SOURCES)}"
        )
    if scheme == "x11" and not _DISPLAY.fullmatch(name):
        raise InvalidArgument(f"{device_id}: the display must look like ':99' or 'host:0.0'")
    if scheme == "avf" and not name.isdigit():
        raise InvalidArgument(f"{device_id}: the camera must be an AVFoundation index like 0")
    if scheme == "v4l2" and not _CAMERA.fullmatch(name):
        raise InvalidArgument(f"{device_id}: the camera must be a device path like /dev/video0")
    unknown = sorted(set(params) - _PARAMS[kind])
    if unknown:
        raise InvalidArgument(f"{device_id}: unknown parameter(s) {', '.join(unknown)}")
    fps = number_param(device_id, params, "fps", DEFAULT_FPS)
    check_named(device_id, lambda: check_fps(fps))
    if kind == "file":
        if not params.get("path"):
            raise InvalidArgument(f"{device_id}: virtual:file needs a path parameter")
        loop = flag_param(device_id, params, "loop")
        return VideoDeviceId(scheme, name, path=params["path"], loop=loop, params=params)
    width, height = _size(device_id, params, needed=kind in ("pattern", "frames"))
    return VideoDeviceId(scheme, name, width, height, fps, params=params)


def check_named(device_id: str, check: Callable[[], None]) -> None:
    """Run a validator, prefixing its InvalidArgument message with the device id."""
    try:
        check()
    except InvalidArgument as exc:
        raise InvalidArgument(f"{device_id}: {exc.message}") from None


def _size(device_id: str, params: Mapping[str, str], needed: bool) -> tuple[int | None, int | None]:
    if not needed and ("width" in params) != ("height" in params):
        missing = "height" if "width" in params else "width"
        raise InvalidArgument(f"{device_id}: width and height go together; {missing} is missing")
    if not needed and "width" not in params:
        return None, None
    width = integer_param(device_id, params, "width", DEFAULT_WIDTH)
    height = integer_param(device_id, params, "height", DEFAULT_HEIGHT)
    check_named(device_id, lambda: check_size(width, height))
    return width, height
