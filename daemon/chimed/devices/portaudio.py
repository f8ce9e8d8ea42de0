"""PortAudio (sounddevice) access shared by the hardware devices and the registry.

PortAudio enumerates devices once, in Pa_Initialize, and keeps that list until Pa_Terminate;
re-initializing while a stream is open invalidates the stream. So this process never
re-initializes while one of its streams is open (it counts them), and hot-plug is watched from
a separate helper process (probe.py) that owns no streams and may re-initialize freely.

PortAudio 19.6 (Debian's libportaudio2) reaches PulseAudio only through ALSA's pulse plugin,
as a single "pulse" device. To choose a particular sink or source, a stream is opened on that
device while PULSE_SINK / PULSE_SOURCE name the target: libpulse reads them when the plugin
creates its context inside Pa_OpenStream, so opens are serialized under one lock.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

PULSE_DEVICE = "pulse"  # the ALSA pcm of alsa-plugins' pulse plugin

_lock = threading.RLock()


def _sd() -> Any:
    # sounddevice starts PortAudio (ALSA, its plugins: ~20 MB resident) when imported; a
    # daemon whose sessions use only virtual devices never pays for it.
    import sounddevice

    return sounddevice


_open_streams = 0


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_stream(factory: Callable[[], T], env: Mapping[str, str] | None = None) -> T:
    """Open a stream with `factory` (under `env`), counting it as open until `closed`."""
    global _open_streams
    with _lock, _environment(env or {}):
        stream = factory()
        _open_streams += 1
        return stream


def close_stream(stream: Any) -> None:
    """Stop and close a stream from open_stream; safe to call once per stream."""
    global _open_streams
    try:
        stream.stop()
    finally:
        stream.close()
        with _lock:
            _open_streams -= 1


def open_stream_count() -> int:
    with _lock:
        return _open_streams


def devices() -> list[dict[str, Any]]:
    """This process's (possibly stale) PortAudio device list, with host API names."""
    sd = _sd()
    apis = sd.query_hostapis()
    out: list[dict[str, Any]] = []
    for index, info in enumerate(sd.query_devices()):
        entry = dict(info)
        entry["index"] = index
        entry["hostapi_name"] = apis[info["hostapi"]]["name"]
        out.append(entry)
    return out


def refresh_if_idle() -> bool:
    """Re-enumerate PortAudio devices in this process, only when none of our streams is open."""
    with _lock:
        if _open_streams:
            return False
        sd = _sd()
        sd._terminate()
        sd._initialize()
        return True


def find_device(hostapi: str, name: str, occurrence: int) -> dict[str, Any] | None:
    """The `occurrence`-th (1-based) device called `name` on `hostapi`, re-enumerating once
    (when idle) if it is not known yet."""
    for attempt in range(2):
        matches = [d for d in devices() if d["hostapi_name"] == hostapi and d["name"] == name]
        if len(matches) >= occurrence:
            return matches[occurrence - 1]
        if attempt == 0 and not refresh_if_idle():
            break
    return None
