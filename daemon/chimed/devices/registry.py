"""The audio device registry: listing (as chime.v1 MediaDevice), opening by id, hot-plug watch.

Device ids:
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

Errors: an unknown id raises LookupError; a device opened in the wrong direction, bad
parameters or an undecodable file raise ValueError saying which and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from chime.v1 import types_pb2

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

Direction: TypeAlias = types_pb2.DeviceDirection.ValueType
DeviceType: TypeAlias = types_pb2.MediaDeviceType.ValueType

INPUT = types_pb2.DEVICE_DIRECTION_INPUT
OUTPUT = types_pb2.DEVICE_DIRECTION_OUTPUT

_VIRTUAL_INPUTS = {
    "silence": "Silence",
    "tone": "Tone (virtual:tone?frequency=440&level=-20)",
    "file": "Audio file (virtual:file?path=...&loop=1)",
    "pcm": "PCM feed from the API",
}
_VIRTUAL_OUTPUTS = {
    "null": "Null sink",
    "wav": "WAV recorder (virtual:wav?path=...)",
    "pcm": "PCM feed to the API",
}
_PARAMS = {
    (INPUT, "silence"): set(),
    (INPUT, "tone"): {"frequency", "level"},
    (INPUT, "file"): {"path", "loop"},
    (INPUT, "pcm"): {"channels"},
    (OUTPUT, "null"): set(),
    (OUTPUT, "wav"): {"path"},
    (OUTPUT, "pcm"): {"rate", "channels"},
}

_TYPE_HINTS = (
    (("bluez", "bluetooth"), types_pb2.MEDIA_DEVICE_TYPE_AUDIO_BLUETOOTH),
    (("headset", "headphone"), types_pb2.MEDIA_DEVICE_TYPE_AUDIO_WIRED_HEADSET),
    (("handset",), types_pb2.MEDIA_DEVICE_TYPE_AUDIO_HANDSET),
    (("speaker", "built-in", "builtin"), types_pb2.MEDIA_DEVICE_TYPE_AUDIO_BUILTIN_SPEAKER),
)


def _device_type(*names: str) -> DeviceType:
    text = " ".join(names).lower()
    for words, kind in _TYPE_HINTS:
        if any(word in text for word in words):
            return kind
    return types_pb2.MEDIA_DEVICE_TYPE_OTHER


def _device(
    device_id: str,
    label: str,
    direction: Direction,
    virtual: bool,
    kind: DeviceType | None = None,
) -> types_pb2.MediaDevice:
    return types_pb2.MediaDevice(
        id=device_id,
        label=label,
        type=kind if kind is not None else _device_type(device_id, label),
        direction=direction,
        kind=types_pb2.MEDIA_KIND_AUDIO,
        virtual=virtual,
    )


def virtual_devices() -> list[types_pb2.MediaDevice]:
    other = types_pb2.MEDIA_DEVICE_TYPE_OTHER
    return [
        *(_device(f"virtual:{k}", v, INPUT, True, other) for k, v in _VIRTUAL_INPUTS.items()),
        *(_device(f"virtual:{k}", v, OUTPUT, True, other) for k, v in _VIRTUAL_OUTPUTS.items()),
    ]


def devices_from_snapshot(snapshot: Mapping[str, Any]) -> list[types_pb2.MediaDevice]:
    """Hardware devices (inputs, then outputs) from a probe snapshot (see probe.py)."""
    inputs: list[types_pb2.MediaDevice] = []
    outputs: list[types_pb2.MediaDevice] = []
    seen: dict[tuple[str, str], int] = {}
    for dev in snapshot.get("portaudio", []):
        key = (dev["hostapi"], dev["name"])
        seen[key] = seen.get(key, 0) + 1
        suffix = f"#{seen[key]}" if seen[key] > 1 else ""
        device_id = f"hw:{dev['hostapi']}:{dev['name']}{suffix}"
        label = f"{dev['name']} ({dev['hostapi']})"
        if dev["inputs"] > 0:
            inputs.append(_device(device_id, label, INPUT, False))
        if dev["outputs"] > 0:
            outputs.append(_device(device_id, label, OUTPUT, False))
    pulse = snapshot.get("pulse") or {}
    for source in pulse.get("sources", []):
        inputs.append(_device(f"hw:pulse:{source['name']}", source["description"], INPUT, False))
    for sink in pulse.get("sinks", []):
        outputs.append(_device(f"hw:pulse:{sink['name']}", sink["description"], OUTPUT, False))
    return inputs + outputs


class DeviceProber:
    """A long-lived probe helper process (probe.py), asked for a fresh snapshot on demand.

    Each request carries a number that the helper echoes in its answer. A caller cancelled
    while waiting (a watcher being stopped) leaves its answer in the pipe; the next query
    skips answers that are not its own, so a listing never lags behind."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.requests = 0  # requests written to a helper so far

    timeout = 10.0  # seconds for one answer (PortAudio probing can hang on broken devices)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def query(self) -> dict[str, Any]:
        async with self._lock:
            for attempt in range(2):
                proc = await self._ensure()
                try:
                    answer = await asyncio.wait_for(self._exchange(proc), self.timeout)
                except (ConnectionError, TimeoutError):
                    answer = None
                if answer is not None:
                    if "error" in answer:
                        raise RuntimeError(f"device probe failed: {answer['error']}")
                    return answer
                await self._kill()  # helper died or hung: start a fresh one once
                if attempt:
                    break
            raise RuntimeError("device probe helper did not answer")

    async def _exchange(self, proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
        """Send one numbered request and read up to its answer; None if the helper ended."""
        assert proc.stdin is not None and proc.stdout is not None
        self.requests += 1
        tag = self.requests
        proc.stdin.write(f"{tag}\n".encode())
        await proc.stdin.drain()
        while True:
            line = await proc.stdout.readline()
            if not line:
                return None
            answer: dict[str, Any] = json.loads(line)
            if answer.pop("id", None) == tag:
                return answer
            # else: the answer to an earlier, cancelled request

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chimed.devices.probe",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        return self._proc

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()

    async def close(self) -> None:
        async with self._lock:
            proc = self._proc
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()  # EOF ends the helper's loop
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    pass
            await self._kill()


async def list_devices(prober: DeviceProber | None = None) -> list[types_pb2.MediaDevice]:
    """All audio devices now: hardware (freshly enumerated) then virtual ones."""
    own = prober is None
    prober = prober or DeviceProber()
    try:
        snapshot = await prober.query()
    finally:
        if own:
            await prober.close()
    return devices_from_snapshot(snapshot) + virtual_devices()


# --- opening ---------------------------------------------------------------------------------


def _split(device_id: str) -> tuple[str, str, dict[str, str]]:
    scheme, sep, rest = device_id.partition(":")
    if not sep or scheme not in ("hw", "virtual"):
        raise LookupError(f"unknown audio device {device_id!r}")
    name, _, query = rest.partition("?")
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as exc:
        raise ValueError(f"malformed parameters in device id {device_id!r}: {exc}") from exc
    return scheme, name, params


def _number(device_id: str, params: Mapping[str, str], key: str, default: float) -> float:
    if key not in params:
        return default
    try:
        return float(params[key])
    except ValueError:
        raise ValueError(f"{device_id}: {key} must be a number, got {params[key]!r}") from None


def _integer(device_id: str, params: Mapping[str, str], key: str, default: int) -> int:
    value = _number(device_id, params, key, default)
    if value != int(value):
        raise ValueError(f"{device_id}: {key} must be a whole number, got {params[key]!r}")
    return int(value)


def _flag(device_id: str, params: Mapping[str, str], key: str) -> bool:
    value = params.get(key, "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise ValueError(f"{device_id}: {key} must be 0 or 1, got {params[key]!r}")


def _virtual_check(
    device_id: str, name: str, params: Mapping[str, str], direction: Direction
) -> None:
    is_input = name in _VIRTUAL_INPUTS
    is_output = name in _VIRTUAL_OUTPUTS
    if not is_input and not is_output:
        raise LookupError(f"unknown audio device {device_id!r}")
    if direction == INPUT and not is_input:
        raise ValueError(f"{device_id} is an output device; it cannot be used as an input")
    if direction == OUTPUT and not is_output:
        raise ValueError(f"{device_id} is an input device; it cannot be used as an output")
    unknown = sorted(set(params) - _PARAMS[(direction, name)])
    if unknown:
        raise ValueError(f"{device_id}: unknown parameter(s) {', '.join(unknown)}")


def _pulse_direction(device_id: str, name: str) -> Direction:
    """Whether `name` is a PulseAudio source (INPUT) or sink (OUTPUT) right now (runs pactl)."""
    if not shutil.which("pactl"):
        raise LookupError(f"unknown audio device {device_id!r}: PulseAudio is not available")
    for kind, direction in (("sources", INPUT), ("sinks", OUTPUT)):
        result = subprocess.run(
            ["pactl", "list", "short", kind], capture_output=True, text=True, timeout=5
        )
        names = [line.split("\t")[1] for line in result.stdout.splitlines() if "\t" in line]
        if name in names:
            return direction
    raise LookupError(f"unknown audio device {device_id!r}")


def _wrong_direction(device_id: str, direction: Direction) -> ValueError:
    other = "output" if direction == INPUT else "input"
    want = "an input" if direction == INPUT else "an output"
    return ValueError(f"{device_id} is an {other} device; it cannot be used as {want}")


def _open_hardware(device_id: str, name: str, direction: Direction) -> AudioInput | AudioOutput:
    """Open a PortAudio stream for a hw: id. Blocking (pactl, PortAudio): call it from a
    worker thread. The lookup and the open share one hold of portaudio.lock, so that no
    re-initialization renumbers the devices in between."""
    hostapi, sep, rest = name.partition(":")
    if not sep or not rest:
        raise LookupError(f"unknown audio device {device_id!r}")
    if hostapi == "pulse" and _pulse_direction(device_id, rest) != direction:
        raise _wrong_direction(device_id, direction)
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
            raise LookupError(f"unknown audio device {device_id!r}: PulseAudio is not available")
        key = "PULSE_SOURCE" if direction == INPUT else "PULSE_SINK"
        return int(pulse["index"]), {key: rest}
    base, _, count = rest.rpartition("#")
    occurrence = 1
    if base and count.isdigit() and int(count) >= 2:
        rest, occurrence = base, int(count)
    found = portaudio.find_device(hostapi, rest, occurrence)
    if found is None:
        if portaudio.open_stream_count():
            raise LookupError(
                f"unknown audio device {device_id!r} (devices plugged in after audio streams "
                "were opened become usable once those streams are closed)"
            )
        raise LookupError(f"unknown audio device {device_id!r}")
    if direction == INPUT and found["max_input_channels"] <= 0:
        raise _wrong_direction(device_id, direction)
    if direction == OUTPUT and found["max_output_channels"] <= 0:
        raise _wrong_direction(device_id, direction)
    return int(found["index"]), {}


def blocks(device_id: str) -> bool:
    """Whether opening `device_id` blocks (hardware: pactl and PortAudio; files: decoding), so
    that an event loop should open it in a worker thread (open_async)."""
    return device_id.startswith(("hw:", "virtual:file", "virtual:wav"))


def open_input(device_id: str) -> AudioInput:
    """An aiortc audio track for `device_id` (see the module doc for the id syntax).
    Blocking for the ids that `blocks`."""
    scheme, name, params = _split(device_id)
    if scheme == "hw":
        audio_input = _open_hardware(device_id, name, INPUT)
        assert isinstance(audio_input, AudioInput)
        return audio_input
    _virtual_check(device_id, name, params, INPUT)
    if name == "silence":
        return SilenceInput()
    if name == "tone":
        return ToneInput(
            _number(device_id, params, "frequency", 440.0),
            _number(device_id, params, "level", -20.0),
        )
    if name == "file":
        if not params.get("path"):
            raise ValueError(f"{device_id}: virtual:file needs a path parameter")
        return FileInput(params["path"], loop=_flag(device_id, params, "loop"))
    return PcmFeedInput(channels=_integer(device_id, params, "channels", 1))


def open_output(device_id: str) -> AudioOutput:
    """An audio output (start(track) / stop()) for `device_id`. Blocking for the ids that
    `blocks`."""
    scheme, name, params = _split(device_id)
    if scheme == "hw":
        output = _open_hardware(device_id, name, OUTPUT)
        assert isinstance(output, AudioOutput)
        return output
    _virtual_check(device_id, name, params, OUTPUT)
    if name == "null":
        return NullOutput()
    if name == "wav":
        if not params.get("path"):
            raise ValueError(f"{device_id}: virtual:wav needs a path parameter")
        return WavRecorder(params["path"])
    return PcmFeedOutput(
        sample_rate=_integer(device_id, params, "rate", 48000),
        channels=_integer(device_id, params, "channels", 1),
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


# --- hot-plug --------------------------------------------------------------------------------


class DeviceWatcher:
    """Polls the device list (through the probe helper, so open streams are untouched) and
    calls `on_change(devices)` with the fresh list whenever it differs from the last one."""

    def __init__(
        self,
        on_change: Callable[[Sequence[types_pb2.MediaDevice]], None],
        interval: float = 1.0,
        prober: DeviceProber | None = None,
    ) -> None:
        self._on_change = on_change
        self._interval = interval
        self._prober = prober or DeviceProber()
        self._own_prober = prober is None
        self._task: asyncio.Task[None] | None = None
        self.devices: list[types_pb2.MediaDevice] = []

    async def start(self) -> list[types_pb2.MediaDevice]:
        """Take the first listing (returned, not reported) and begin polling."""
        self.devices = await list_devices(self._prober)
        self._task = asyncio.get_running_loop().create_task(self._poll())
        return self.devices

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                fresh = await list_devices(self._prober)
            except RuntimeError:
                continue  # a failed probe is not a device change; try again next tick
            if fresh != self.devices:
                self.devices = fresh
                self._on_change(fresh)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_prober:
            await self._prober.close()
