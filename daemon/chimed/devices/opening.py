"""Opening an audio device id (ids.py) as an input track or an output: virtual devices at
once, hardware (pactl, PortAudio) in a worker thread when called from the event loop.

Errors: an unknown id raises NotFound; a device opened in the wrong direction, bad
parameters, an undecodable file or a device that will not open raise InvalidArgument saying
which and why.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

from chimed.devices import portaudio
from chimed.devices.audio_inputs import (
    AudioInput,
    FileInput,
    PcmFeedInput,
    SilenceInput,
    SoundDeviceInput,
    ToneInput,
)
from chimed.devices.audio_outputs import (
    AudioOutput,
    NullOutput,
    PcmFeedOutput,
    SoundDeviceOutput,
    WavRecorder,
)
from chimed.devices.ids import (
    INPUT,
    OUTPUT,
    Direction,
    blocks,
    check_virtual,
    flag_param,
    integer_param,
    number_param,
    split_id,
    wrong_direction,
)
from chimed.errors import InvalidArgument, NotFound


def _pulse_direction(device_id: str, name: str) -> Direction:
    """Whether `name` is a PulseAudio source (INPUT) or sink (OUTPUT) right now (runs pactl)."""
    if not shutil.which("pactl"):
        raise NotFound(f"unknown audio device {device_id!r}: PulseAudio is not available")
    for kind, direction in (("sources", INPUT), ("sinks", OUTPUT)):
        result = subprocess.run(
            ["pactl", "list", "short", kind], capture_output=True, text=True, timeout=5
        )
        names = [line.split("\t")[1] for line in result.stdout.splitlines() if "\t" in line]
        if name in names:
            return direction
    raise NotFound(f"unknown audio device {device_id!r}")


def _open_hardware(device_id: str, name: str, direction: Direction) -> AudioInput | AudioOutput:
    """Open a PortAudio stream for a hw: id. Blocking (pactl, PortAudio): call it from a
    worker thread. The lookup and the open share one hold of portaudio.lock, so that no
    re-initialization renumbers the devices in between."""
    hostapi, sep, rest = name.partition(":")
    if not sep or not rest:
        raise NotFound(f"unknown audio device {device_id!r}")
    if hostapi == "pulse" and _pulse_direction(device_id, rest) != direction:
        raise wrong_direction(device_id, direction)
    with portaudio.lock:
        index, env = _hardware(device_id, hostapi, rest, direction)
        if direction == INPUT:
            return SoundDeviceInput(index, env=env, label=device_id)
        return SoundDeviceOutput(index, env=env, label=device_id)


def _hardware(
    device_id: str, hostapi: str, rest: str, direction: Direction
) -> tuple[int, dict[str, str]]:
    """PortAudio device index and the environment to open it with."""
    if hostapi == "pulse":
        pulse = portaudio.find_device("ALSA", portaudio.PULSE_DEVICE, 1)
        if pulse is None:
            raise NotFound(f"unknown audio device {device_id!r}: PulseAudio is not available")
        key = "PULSE_SOURCE" if direction == INPUT else "PULSE_SINK"
        return int(pulse["index"]), {key: rest}
    base, _, count = rest.rpartition("#")
    occurrence = 1
    if base and count.isdigit() and int(count) >= 2:
        rest, occurrence = base, int(count)
    found = portaudio.find_device(hostapi, rest, occurrence)
    if found is None:
        if portaudio.open_stream_count():
            raise NotFound(
                f"unknown audio device {device_id!r} (devices plugged in after audio streams "
                "were opened become usable once those streams are closed)"
            )
        raise NotFound(f"unknown audio device {device_id!r}")
    if direction == INPUT and found["max_input_channels"] <= 0:
        raise wrong_direction(device_id, direction)
    if direction == OUTPUT and found["max_output_channels"] <= 0:
        raise wrong_direction(device_id, direction)
    return int(found["index"]), {}


def open_input(device_id: str) -> AudioInput:
    """An aiortc audio track for `device_id` (see the module doc for the id syntax).
    Blocking for the ids that `blocks`."""
    scheme, name, params = split_id(device_id)
    if scheme == "hw":
        audio_input = _open_hardware(device_id, name, INPUT)
        assert isinstance(audio_input, AudioInput)
        return audio_input
    check_virtual(device_id, name, params, INPUT)
    if name == "silence":
        return SilenceInput()
    if name == "tone":
        return ToneInput(
            number_param(device_id, params, "frequency", 440.0),
            number_param(device_id, params, "level", -20.0),
        )
    if name == "file":
        if not params.get("path"):
            raise InvalidArgument(f"{device_id}: virtual:file needs a path parameter")
        return FileInput(params["path"], loop=flag_param(device_id, params, "loop"))
    return PcmFeedInput(channels=integer_param(device_id, params, "channels", 1))


def open_output(device_id: str) -> AudioOutput:
    """An audio output (start(track) / stop()) for `device_id`. Blocking for the ids that
    `blocks`."""
    scheme, name, params = split_id(device_id)
    if scheme == "hw":
        output = _open_hardware(device_id, name, OUTPUT)
        assert isinstance(output, AudioOutput)
        return output
    check_virtual(device_id, name, params, OUTPUT)
    if name == "null":
        return NullOutput()
    if name == "wav":
        if not params.get("path"):
            raise InvalidArgument(f"{device_id}: virtual:wav needs a path parameter")
        return WavRecorder(params["path"])
    return PcmFeedOutput(
        sample_rate=integer_param(device_id, params, "rate", 48000),
        channels=integer_param(device_id, params, "channels", 1),
    )


def discard(device: AudioInput | AudioOutput) -> None:
    """Release a device that was opened but never used (no await: for callbacks)."""
    if isinstance(device, AudioOutput):
        device.discard()
    else:
        device.stop()


async def open_async(device_id: str, direction: Direction) -> AudioInput | AudioOutput:
    """open_input / open_output, in a worker thread for the ids that `blocks`. Cancelling the
    caller does not leak: a device the thread still opens is released when it arrives."""
    opener: Callable[[str], AudioInput | AudioOutput] = (
        open_input if direction == INPUT else open_output
    )
    if not blocks(device_id):
        return opener(device_id)
    # Not asyncio.to_thread: its future, cancelled, would orphan the thread's result.
    future = asyncio.get_running_loop().run_in_executor(None, opener, device_id)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        _abandoned.add(future)
        future.add_done_callback(_discard_result)
        raise


_abandoned: set[asyncio.Future[AudioInput | AudioOutput]] = set()  # opens nobody waits for


def _discard_result(future: asyncio.Future[AudioInput | AudioOutput]) -> None:
    _abandoned.discard(future)
    if not future.cancelled() and future.exception() is None:
        discard(future.result())


async def settle(timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Until the opens whose callers gave up have finished, and every stream closed so far
    (theirs included) is released: at shutdown, so that no device outlives the daemon."""
    if _abandoned:
        # Their done callbacks (registered first) have queued the closes when this wakes.
        await asyncio.wait(set(_abandoned), timeout=timeout)
    await portaudio.drain_closes(timeout)
