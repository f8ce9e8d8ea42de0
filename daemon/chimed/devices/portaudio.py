"""PortAudio (sounddevice) access shared by the hardware devices and the openers (opening.py).

PortAudio enumerates devices once, in Pa_Initialize, and keeps that list until Pa_Terminate;
re-initializing while a stream is open invalidates the stream. So this process never
re-initializes while one of its streams is open (it counts them), and hot-plug is watched from
a separate helper process (probe.py) that owns no streams and may re-initialize freely.

PortAudio 19.6 (Debian's libportaudio2) reaches PulseAudio only through ALSA's pulse plugin,
as a single "pulse" device. To choose a particular sink or source, a stream is opened on that
device while PULSE_SINK / PULSE_SOURCE name the target: libpulse reads them when the plugin
creates its context inside Pa_OpenStream, so opens are serialized under one lock.

Threads: opening and closing a stream block (Pa_OpenStream connects to the sound server,
Pa_StopStream waits for the device), so the event loop hands them to worker threads. PortAudio
is not thread-safe for enumeration and (re)initialization against other calls, so every call
here that enumerates, opens, closes or re-initializes holds the one lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.errors import InvalidArgument

T = TypeVar("T")

log = logging.getLogger(__name__)

PULSE_DEVICE = "pulse"  # the ALSA pcm of alsa-plugins' pulse plugin

_lock = threading.RLock()
# Held (re-entrantly) by callers that look a device up and then open it by index, so that no
# re-initialization renumbers the devices in between.
lock = _lock


def _sd() -> Any:
    # sounddevice starts PortAudio (ALSA, its plugins: ~20 MB resident) when imported; a
    # daemon whose sessions use only virtual devices never pays for it.
    import sounddevice

    return sounddevice


# sounddevice has no public call for these; its documentation gives the private pair as the
# way to re-enumerate devices (PortAudio lists them once, in Pa_Initialize).
def terminate() -> None:
    """Pa_Terminate: PortAudio lets go of its streams and device list."""
    _sd()._terminate()  # noqa: SLF001


def initialize() -> None:
    """Pa_Initialize: PortAudio enumerates the devices anew."""
    _sd()._initialize()  # noqa: SLF001


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


def open_started(
    direction: str,
    device: int,
    channels: int,
    callback: Callable[..., None],
    env: Mapping[str, str] | None,
    label: str,
) -> Any:
    """Open and start a 48 kHz s16 stream in 20 ms blocks ("input" or "output"), counted as
    open; a PortAudio failure becomes an InvalidArgument naming the device."""
    sd = _sd()
    stream_type = sd.InputStream if direction == "input" else sd.OutputStream

    def factory() -> Any:
        stream = stream_type(
            device=device,
            samplerate=SAMPLE_RATE,
            channels=channels,
            dtype="int16",
            blocksize=FRAME_SAMPLES,
            latency="low",  # "high" lets ALSA's pulse plugin buffer for seconds
            callback=callback,
        )
        try:
            stream.start()
        except BaseException:
            stream.close()
            raise
        return stream

    try:
        return open_stream(factory, env)
    except sd.PortAudioError as exc:
        raise InvalidArgument(f"cannot open audio {direction} {label}: {exc}") from exc


def close_stream(stream: Any) -> None:
    """Stop and close a stream from open_stream (blocking); call once per stream."""
    global _open_streams
    with _lock:
        try:
            try:
                stream.stop()
            finally:
                stream.close()
        finally:
            _open_streams -= 1


_closing: set[asyncio.Future[None]] = set()


def _closed(future: asyncio.Future[None]) -> None:
    _closing.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.warning("closing an audio stream failed: %r", future.exception())


def close_stream_soon(stream: Any) -> asyncio.Future[None] | None:
    """Close `stream` in a worker thread when called on an event loop (it is not waited for:
    the lock orders it before any later open), else at once. Returns the pending close."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        close_stream(stream)
        return None
    # Never cancelled: a cancelled executor job that has not started would never close.
    future = loop.run_in_executor(None, close_stream, stream)
    _closing.add(future)
    future.add_done_callback(_closed)
    return future


async def drain_closes(timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Until the closes close_stream_soon() started have finished."""
    if _closing:
        await asyncio.wait(set(_closing), timeout=timeout)


def open_stream_count() -> int:
    with _lock:
        return _open_streams


def devices() -> list[dict[str, Any]]:
    """This process's (possibly stale) PortAudio device list, with host API names."""
    with _lock:
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
        terminate()
        initialize()
        return True


def find_device(hostapi: str, name: str, occurrence: int) -> dict[str, Any] | None:
    """The `occurrence`-th (1-based) device called `name` on `hostapi`, re-enumerating once
    (when idle) if it is not known yet."""
    with _lock:
        return _find_device(hostapi, name, occurrence)


def _find_device(hostapi: str, name: str, occurrence: int) -> dict[str, Any] | None:
    for attempt in range(2):
        matches = [d for d in devices() if d["hostapi_name"] == hostapi and d["name"] == name]
        if len(matches) >= occurrence:
            return matches[occurrence - 1]
        if attempt == 0 and not refresh_if_idle():
            break
    return None
