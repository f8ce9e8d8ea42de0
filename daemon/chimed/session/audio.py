"""A session's audio devices: what it sends (input) and where the meeting mix goes (output).

The selection (device ids, defaults: silence in, null sink out, since a bot has no hardware)
lives as long as the session; the devices are opened when a start begins and released once the
session has stopped (the core's on_starting / on_stopped seams). Hardware is never opened on
the event loop (pactl, PortAudio block): a start opens virtual devices at once and hardware in
a worker thread right after, sending silence (input) and draining (output) meanwhile; a
hardware device that cannot be opened then falls back like a lost one. SetDevice opens in a
worker thread; CreateSession and SetDevice before a start check a hardware id against the
current device list only (it exists, the direction fits), without opening it. The core is
given the two long-lived seams of audio_tracks.py once: the InputSwitch it sends and the
MixFanout that reads the received mix for the output device and every PCM listener.

Device observers get the daemon's device list (DeviceMonitor) and, when a hardware device in
use vanishes, the session falls back to silence or the null sink and says so
(audio_device_lost), staying up; so does an input that fails (a file that can no longer be
decoded; a file that simply ends sends silence and stays selected). Errors: NotFound for
unknown ids, InvalidArgument for a wrong direction, bad parameters or an undecodable file,
FailedPrecondition for PCM feeds of a session that is not running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TypeAlias

from aiortc.mediastreams import MediaStreamTrack
from chime.v1 import events_pb2, session_pb2, types_pb2

from chimed.devices import listing, opening
from chimed.devices.audio_inputs import AudioInput, PcmFeedInput, SilenceInput
from chimed.devices.audio_outputs import AudioOutput, NullOutput, PcmFeedOutput
from chimed.devices.ids import wrong_direction
from chimed.errors import ChimedError, FailedPrecondition, InvalidArgument, NotFound
from chimed.session.audio_tracks import InputSwitch, MixFanout, MixTap
from chimed.session.chime_session import ChimeSession
from chimed.session.device_monitor import DeviceMonitor, Devices
from chimed.session.events import ObserverKind
from chimed.session.observers import Observer, ObserverHub

log = logging.getLogger(__name__)

Direction: TypeAlias = types_pb2.DeviceDirection.ValueType
INPUT = types_pb2.DEVICE_DIRECTION_INPUT
OUTPUT = types_pb2.DEVICE_DIRECTION_OUTPUT
DEFAULT_INPUT = "virtual:silence"
DEFAULT_OUTPUT = "virtual:null"
PCM = "virtual:pcm"
DEVICE = ObserverKind.DEVICE


def _slot(direction: Direction) -> str:
    return "input" if direction == INPUT else "output"


def _default(direction: Direction) -> str:
    return DEFAULT_INPUT if direction == INPUT else DEFAULT_OUTPUT


def _virtual_device(device_id: str, direction: Direction) -> types_pb2.MediaDevice | None:
    base = device_id.partition("?")[0]
    for device in listing.virtual_devices():
        if device.id == base and device.direction == direction:
            out = types_pb2.MediaDevice()
            out.CopyFrom(device)
            out.id = device_id
            return out
    return None


async def directions_of(
    device_id: str, monitor: DeviceMonitor | None
) -> dict[Direction, types_pb2.MediaDevice]:
    """The directions `device_id` can be used in, with its description; NotFound if none.
    Hardware ids are looked up in a fresh listing (the monitor's probe helper, else a
    one-off one), never opened."""
    found: dict[Direction, types_pb2.MediaDevice] = {}
    if device_id.startswith("virtual:"):
        for direction in (INPUT, OUTPUT):
            device = _virtual_device(device_id, direction)
            if device is not None:
                found[direction] = device
    elif device_id.startswith("hw:"):
        listed = await (monitor.list() if monitor is not None else listing.list_devices())
        for device in listed:
            if device.id == device_id:
                found[device.direction] = device
    if not found:
        raise NotFound(f"unknown audio device {device_id!r}")
    return found


def _describe(device_id: str, direction: Direction) -> types_pb2.MediaDevice:
    device = _virtual_device(device_id, direction)
    if device is not None:
        return device
    return types_pb2.MediaDevice(
        id=device_id,
        label=device_id,
        type=types_pb2.MEDIA_DEVICE_TYPE_OTHER,
        direction=direction,
        kind=types_pb2.MEDIA_KIND_AUDIO,
    )


async def release(device: AudioInput | AudioOutput | None) -> None:
    if isinstance(device, AudioOutput):
        await device.stop()
    elif device is not None:
        device.stop()


async def check_device(
    device_id: str, direction: Direction, monitor: DeviceMonitor | None = None
) -> types_pb2.MediaDevice:
    """Whether `device_id` can serve as `direction`, with its description. A hardware id is
    checked against the current device list (opening happens at start); a virtual one is
    opened and released (off the loop for files), which proves its parameters and file."""
    if device_id.startswith("hw:"):
        found = await directions_of(device_id, monitor)
        if direction not in found:
            raise wrong_direction(device_id, direction)
        return found[direction]
    await release(await opening.open_async(device_id, direction))
    return _describe(device_id, direction)


async def check_selection(
    selection: session_pb2.DeviceSelection, monitor: DeviceMonitor | None = None
) -> None:
    """CreateSession's devices, errors naming the field (InvalidArgument / NotFound)."""
    for field, direction in (
        ("audio_input_device_id", INPUT),
        ("audio_output_device_id", OUTPUT),
    ):
        device_id = getattr(selection, field)
        if not device_id:
            continue
        try:
            await check_device(device_id, direction, monitor)
        except ChimedError as e:
            raise type(e)(f"devices.{field}: {e.message}") from None


class SessionAudio:
    def __init__(
        self,
        core: ChimeSession,
        hub: ObserverHub,
        selection: session_pb2.DeviceSelection,
        monitor: DeviceMonitor,
    ) -> None:
        self._core = core
        self._hub = hub
        self._monitor = monitor
        self.selection = selection
        selection.audio_input_device_id = selection.audio_input_device_id or DEFAULT_INPUT
        selection.audio_output_device_id = selection.audio_output_device_id or DEFAULT_OUTPUT
        self._input: AudioInput | None = None
        self._output: AudioOutput | None = None
        self._output_tap: MixTap | None = None
        self._listeners: set[PcmFeedOutput] = set()
        self._pending: set[Direction] = set()  # hardware selected, opening after a start
        self._feeding = False
        self._idle = SilenceInput()  # the switch's source while closed (nobody reads it then)
        self._switch = InputSwitch(self._idle, self._input_ended)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one switch (or release) at a time
        self._fanout = MixFanout(self._mix_demand)
        self._awaiting_list: set[Observer] = set()
        core.set_audio_input(self._switch)
        core.set_audio_output(None)  # until a tap wants the mix (see _mix_demand)
        core.on_starting = self.open
        core.on_stopped = self.close
        hub.watch(DEVICE, self._device_observer_added, self._device_observer_removed)
        monitor.register(self)

    def _mix_demand(self, wanted: bool) -> None:
        # A null sink and no PCM listener: the peer drops the mix without decoding it.
        self._core.set_audio_output(self._fanout.consume if wanted else None)

    @property
    def input_id(self) -> str:
        return self.selection.audio_input_device_id

    @property
    def output_id(self) -> str:
        return self.selection.audio_output_device_id

    @property
    def is_open(self) -> bool:
        return self._input is not None

    # --- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open the selected devices (the core calls this, synchronously, as a start begins):
        virtual ones at once (their errors refuse the start), hardware ones in a worker
        thread right after (see _open_pending), with silence and a null sink meanwhile."""
        if self.is_open:
            return
        pending = {d for d in (INPUT, OUTPUT) if self._selected(d).startswith("hw:")}
        audio_input = SilenceInput() if INPUT in pending else opening.open_input(self.input_id)
        try:
            output = NullOutput() if OUTPUT in pending else opening.open_output(self.output_id)
        except BaseException:
            audio_input.stop()
            raise
        self._install_output(output)
        self._install_input(audio_input)
        self._pending = pending
        if pending:
            self._spawn(self._open_pending())
        self._update_hardware_use()

    async def _open_pending(self) -> None:
        async with self._lock:
            for direction in (INPUT, OUTPUT):
                if direction not in self._pending or not self.is_open:
                    continue
                device_id = self._selected(direction)
                try:
                    device = await opening.open_async(device_id, direction)
                except Exception as e:  # pactl, PortAudio: whatever it is, fall back
                    if direction in self._pending and self.is_open:
                        self._select(direction, _default(direction))
                        self._lost(device_id, direction, f"cannot open {device_id}: {e}")
                    continue
                # The lock keeps close() out; a lost-device check may have moved on meanwhile.
                if direction not in self._pending or not self.is_open:
                    opening.discard(device)
                    continue
                if isinstance(device, AudioInput):
                    self._swap_input(device, device_id)
                else:
                    await self._remove_output()
                    self._install_output(device)
                    self._select(OUTPUT, device_id)

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Release every device, tap and PCM listener (the core calls this once stopped)."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        self._pending.clear()
        audio_input, self._input = self._input, None
        self._switch.source = self._idle
        if audio_input is not None:
            audio_input.stop()
        await self._remove_output()
        listeners, self._listeners = list(self._listeners), set()
        for listener in listeners:
            await listener.stop()  # its iterator ends: StreamOutput calls end cleanly
        self._update_hardware_use()

    async def delete(self) -> None:
        """The session is gone: release everything for good."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close()
        self._idle.stop()
        self._switch.stop()
        self._monitor.unregister(self)
        self._monitor.unuse(self)
        self._awaiting_list.clear()

    def _install_input(self, audio_input: AudioInput) -> None:
        self._input = audio_input
        self._switch.source = audio_input

    def _install_output(self, output: AudioOutput) -> None:
        self._output = output
        if not isinstance(output, NullOutput):  # the fan-out drains the mix already
            self._output_tap = self._fanout.tap()
            output.start(self._output_tap)

    async def _remove_output(self) -> None:
        output, self._output = self._output, None
        tap, self._output_tap = self._output_tap, None
        if tap is not None:
            self._fanout.untap(tap)
        if output is not None:
            await output.stop()

    def _update_hardware_use(self) -> None:
        uses = self.is_open and (
            self.input_id.startswith("hw:") or self.output_id.startswith("hw:")
        )
        if uses or self._device_observers():
            self._monitor.use(self)
        else:
            self._monitor.unuse(self)

    # --- switching ---------------------------------------------------------------------------
    async def set_device(
        self, device_id: str, direction: Direction = types_pb2.DEVICE_DIRECTION_UNSPECIFIED
    ) -> types_pb2.MediaDevice:
        """Switch the input or output (by the device's direction, or `direction` for an id
        that is both) without dropping the session; before a start it only selects."""
        if not device_id:
            raise InvalidArgument("device_id is missing")
        async with self._lock:
            return await self._set_device(device_id, direction)

    async def _set_device(self, device_id: str, direction: Direction) -> types_pb2.MediaDevice:
        found = await directions_of(device_id, self._monitor)
        if direction == types_pb2.DEVICE_DIRECTION_UNSPECIFIED:
            if len(found) > 1:
                raise InvalidArgument(
                    f"{device_id} is both an input and an output; say which with direction"
                )
            direction = next(iter(found))
        elif direction not in found:
            raise wrong_direction(device_id, direction)
        if not self.is_open and not device_id.startswith("hw:"):
            await check_device(device_id, direction)  # then only selected, for the next start
        # A start may have opened the devices during those awaits: then switch for real (a
        # stop cannot close them under us: close() waits for the lock we hold).
        if self.is_open:
            device = await opening.open_async(device_id, direction)
            if isinstance(device, AudioInput):
                self._swap_input(device, device_id)
            else:
                await self._remove_output()
                self._install_output(device)
        self._select(direction, device_id)
        self._update_hardware_use()
        return found[direction]

    def _selected(self, direction: Direction) -> str:
        return self.input_id if direction == INPUT else self.output_id

    def _select(self, direction: Direction, device_id: str) -> None:
        self._pending.discard(direction)  # whatever was opening for this slot is superseded
        if direction == INPUT:
            self.selection.audio_input_device_id = device_id
        else:
            self.selection.audio_output_device_id = device_id

    def _swap_input(self, audio_input: AudioInput, device_id: str) -> None:
        old = self._input
        self._install_input(audio_input)
        self._select(INPUT, device_id)
        if old is not None:
            old.stop()  # a recv() pending on it ends; the switch moves on to the new one

    def _input_ended(self, source: MediaStreamTrack, reason: str) -> None:
        if source is not self._input:
            return
        lost = self.input_id
        self._swap_input(SilenceInput(), DEFAULT_INPUT)
        self._lost(lost, INPUT, f"the input {lost} failed: {reason}")

    # --- PCM feeds ---------------------------------------------------------------------------
    def pcm_input(self) -> PcmFeedInput:
        """The session's input as a PCM feed (switching to one unless it is already)."""
        if not self.is_open:
            raise FailedPrecondition(
                "the session is not running; start it before streaming audio into it"
            )
        if self._feeding:
            raise FailedPrecondition("another StreamInput call is feeding this session")
        if isinstance(self._input, PcmFeedInput):
            return self._input
        feed = PcmFeedInput()
        self._swap_input(feed, PCM)
        self._update_hardware_use()
        return feed

    async def feed_pcm(self, chunks: AsyncIterator[bytes], sample_rate: int, channels: int) -> int:
        """Feed chunks of s16le PCM into the session's input; returns sample frames fed."""
        feed = self.pcm_input()
        self._feeding = True
        received = 0
        try:
            index = 0
            async for pcm in chunks:
                index += 1
                if feed is not self._input:
                    raise FailedPrecondition(
                        "the session's input is no longer the PCM feed (switched or stopped)"
                    )
                try:
                    feed.feed(pcm, sample_rate, channels)
                except InvalidArgument as e:
                    raise InvalidArgument(f"chunk {index}: {e.message}") from None
                received += len(pcm) // (2 * channels)
        finally:
            self._feeding = False
        return received

    async def pcm_output(self, sample_rate: int, channels: int) -> AsyncIterator[bytes]:
        """The meeting mix as s16le chunks at this rate and channel count, until the session
        stops (or the caller goes away)."""
        if not self.is_open:
            raise FailedPrecondition(
                "the session is not running; start it before streaming its audio out"
            )
        listener = PcmFeedOutput(sample_rate, channels)
        tap = self._fanout.tap()
        listener.start(tap)
        self._listeners.add(listener)
        try:
            async for chunk in listener:
                yield chunk
        finally:
            self._listeners.discard(listener)
            self._fanout.untap(tap)
            await listener.stop()

    # --- device observers and hot-plug -------------------------------------------------------
    def _device_observers(self) -> list[Observer]:
        return self._hub.observers(DEVICE)

    def _device_observer_added(self, observer: Observer) -> None:
        devices = self._monitor.devices
        if devices is not None:
            self._hub.emit_to(
                observer, "audio_device_changed", events_pb2.AudioDeviceChanged(devices=devices)
            )
        else:
            self._awaiting_list.add(observer)
        self._monitor.use(self)

    def _device_observer_removed(self, observer: Observer) -> None:
        # The hub has already dropped it from its list.
        self._awaiting_list.discard(observer)
        self._update_hardware_use()

    def devices_listed(self, devices: Devices, changed: bool) -> None:
        event = events_pb2.AudioDeviceChanged(devices=devices)
        if changed:
            self._awaiting_list.clear()
            self._hub.emit(DEVICE, "audio_device_changed", event)
            self._check_lost(devices)
        else:
            for observer in list(self._awaiting_list):
                self._hub.emit_to(observer, "audio_device_changed", event)
            self._awaiting_list.clear()

    def _check_lost(self, devices: Sequence[types_pb2.MediaDevice]) -> None:
        if not self.is_open:
            return
        present = {(d.id, d.direction) for d in devices}
        if self.input_id.startswith("hw:") and (self.input_id, INPUT) not in present:
            lost = self.input_id
            self._swap_input(SilenceInput(), DEFAULT_INPUT)
            self._lost(lost, INPUT, f"{lost} disappeared")
        if self.output_id.startswith("hw:") and (self.output_id, OUTPUT) not in present:
            lost = self.output_id
            self._select(OUTPUT, DEFAULT_OUTPUT)
            self._spawn(self._fall_back_output(lost))

    async def _fall_back_output(self, lost: str) -> None:
        async with self._lock:
            if self.is_open and self.output_id == DEFAULT_OUTPUT:
                await self._remove_output()
                self._install_output(NullOutput())
        self._lost(lost, OUTPUT, f"{lost} disappeared")

    def _lost(self, device_id: str, direction: Direction, reason: str) -> None:
        fallback = _default(direction)
        log.warning(
            "audio %s %s lost (%s); using %s", _slot(direction), device_id, reason, fallback
        )
        self._hub.emit(
            DEVICE,
            "audio_device_lost",
            events_pb2.AudioDeviceLost(
                device_id=device_id, fallback=_describe(fallback, direction), reason=reason
            ),
        )
        self._update_hardware_use()
