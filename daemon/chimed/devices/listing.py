"""The audio device list (as chime.v1 MediaDevice): hardware enumerated by the probe helper
process (probe.py, through `DeviceProber`), the virtual devices, and the hot-plug watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from chime.v1 import types_pb2

from chimed.devices.ids import INPUT, OUTPUT, VIRTUAL_INPUTS, VIRTUAL_OUTPUTS, Direction

DeviceType: TypeAlias = types_pb2.MediaDeviceType.ValueType

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
        *(_device(f"virtual:{k}", v, INPUT, True, other) for k, v in VIRTUAL_INPUTS.items()),
        *(_device(f"virtual:{k}", v, OUTPUT, True, other) for k, v in VIRTUAL_OUTPUTS.items()),
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
