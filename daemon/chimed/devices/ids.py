"""Audio device ids: their syntax, the virtual devices and their parameters, and the checks
that say what is wrong with an id (opening.py opens them, listing.py lists them).

  hw:<hostapi>:<name>[#n]   a PortAudio device, e.g. "hw:ALSA:pulse", "hw:ALSA:default"; "#n"
                            (n >= 2) tells apart devices of the same name on one host API.
  hw:pulse:<name>           a PulseAudio sink (output) or source (input, monitors included),
                            e.g. "hw:pulse:alsa_output.usb-headset", played through ALSA's pulse
                            device with PULSE_SINK / PULSE_SOURCE naming it.
  virtual:silence                       input: digital silence
  virtual:tone?frequency=440&level=-20  input: a sine (Hz, dBFS peak); both optional
  virtual:file?path=/x.wav&loop=1       input: an audio file (WAV, Ogg, MP3...); loop optional
  virtual:pcm[?channels=1]              input: fed by the API caller (PcmFeedInput.feed)
  virtual:null                          output: drains and discards
  virtual:wav?path=/x.wav               output: records 48 kHz s16 WAV
  virtual:pcm[?rate=48000&channels=1]   output: an async iterator of PCM chunks
Ids are stable across re-queries (names, not PortAudio indexes). Parameter values are
URL-encoded (urllib.parse.quote) when they contain '&', '=', '#' or '%'.

Errors: an unknown id raises NotFound; a device used in the wrong direction or bad
parameters raise InvalidArgument saying which and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeAlias
from urllib.parse import parse_qsl

from chime.v1 import types_pb2

from chimed.errors import InvalidArgument, NotFound

Direction: TypeAlias = types_pb2.DeviceDirection.ValueType

INPUT = types_pb2.DEVICE_DIRECTION_INPUT
OUTPUT = types_pb2.DEVICE_DIRECTION_OUTPUT

VIRTUAL_INPUTS = {
    "silence": "Silence",
    "tone": "Tone (virtual:tone?frequency=440&level=-20)",
    "file": "Audio file (virtual:file?path=...&loop=1)",
    "pcm": "PCM feed from the API",
}
VIRTUAL_OUTPUTS = {
    "null": "Null sink",
    "wav": "WAV recorder (virtual:wav?path=...)",
    "pcm": "PCM feed to the API",
}
PARAMS = {
    (INPUT, "silence"): set(),
    (INPUT, "tone"): {"frequency", "level"},
    (INPUT, "file"): {"path", "loop"},
    (INPUT, "pcm"): {"channels"},
    (OUTPUT, "null"): set(),
    (OUTPUT, "wav"): {"path"},
    (OUTPUT, "pcm"): {"rate", "channels"},
}


def split_id(device_id: str) -> tuple[str, str, dict[str, str]]:
    """(scheme, name, parameters) of `device_id`."""
    scheme, sep, rest = device_id.partition(":")
    if not sep or scheme not in ("hw", "virtual"):
        raise NotFound(f"unknown audio device {device_id!r}")
    name, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise InvalidArgument(f"malformed parameters in device id {device_id!r}: {exc}") from exc
    return scheme, name, params


def number_param(device_id: str, params: Mapping[str, str], key: str, default: float) -> float:
    if key not in params:
        return default
    try:
        return float(params[key])
    except ValueError:
        raise InvalidArgument(f"{device_id}: {key} must be a number, got {params[key]!r}") from None


def integer_param(device_id: str, params: Mapping[str, str], key: str, default: int) -> int:
    if key not in params:
        return default
    try:
        value = float(params[key])
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise InvalidArgument(f"{device_id}: {key} must be a whole number, got {params[key]!r}")
    return int(value)


def flag_param(device_id: str, params: Mapping[str, str], key: str) -> bool:
    value = params.get(key, "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise InvalidArgument(f"{device_id}: {key} must be 0 or 1, got {params[key]!r}")


def check_virtual(
    device_id: str, name: str, params: Mapping[str, str], direction: Direction
) -> None:
    """That virtual device `name` exists, serves `direction` and takes these parameters."""
    is_input = name in VIRTUAL_INPUTS
    is_output = name in VIRTUAL_OUTPUTS
    if not is_input and not is_output:
        raise NotFound(f"unknown audio device {device_id!r}")
    if not (is_input if direction == INPUT else is_output):
        raise wrong_direction(device_id, direction)
    unknown = sorted(set(params) - PARAMS[(direction, name)])
    if unknown:
        raise InvalidArgument(f"{device_id}: unknown parameter(s) {', '.join(unknown)}")


def wrong_direction(device_id: str, direction: Direction) -> InvalidArgument:
    other = "output" if direction == INPUT else "input"
    want = "an input" if direction == INPUT else "an output"
    return InvalidArgument(f"{device_id} is an {other} device; it cannot be used as {want}")


def blocks(device_id: str) -> bool:
    """Whether opening `device_id` blocks (hardware: pactl and PortAudio; files: decoding), so
    that an event loop should open it in a worker thread (open_async)."""
    return device_id.startswith(("hw:", "virtual:file", "virtual:wav"))
