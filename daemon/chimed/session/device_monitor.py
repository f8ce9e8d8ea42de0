"""The daemon's one view of the audio devices: a shared probe helper for listings and a hot-plug
DeviceWatcher that runs only while someone needs it (device observers, or sessions using
hardware), telling every registered session about each fresh list. The helper process itself
ends once nothing has asked for a listing for `idle_close` seconds (a one-shot timer, no
polling); the next listing starts it again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from chime.v1 import types_pb2

from chimed.devices.listing import DeviceProber, DeviceWatcher, list_devices, virtual_devices

log = logging.getLogger(__name__)

Devices = Sequence[types_pb2.MediaDevice]


class DeviceListener(Protocol):
    def devices_listed(self, devices: Devices, changed: bool) -> None:
        """A listing: the first one of a watch (changed False) or a hot-plug change."""


class DeviceMonitor:
    def __init__(self, interval: float = 1.0, idle_close: float = 30.0) -> None:
        self.interval = interval
        self.idle_close = idle_close
        self._idle_timer: asyncio.TimerHandle | None = None
        self.prober = DeviceProber()
        self.devices: list[types_pb2.MediaDevice] | None = None  # None while not watching
        self._users: set[object] = set()
        self._listeners: set[DeviceListener] = set()
        self._task: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()

    async def list(self) -> list[types_pb2.MediaDevice]:
        """A fresh listing (hardware, then virtual)."""
        try:
            return await list_devices(self.prober)
        finally:
            self._arm_idle_close()

    def _arm_idle_close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self.idle_close, self._close_idle_prober)

    def _close_idle_prober(self) -> None:
        self._idle_timer = None
        if self._task is None and self.prober.running:
            task = asyncio.get_running_loop().create_task(self.prober.close())
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    def register(self, listener: DeviceListener) -> None:
        self._listeners.add(listener)

    def unregister(self, listener: DeviceListener) -> None:
        self._listeners.discard(listener)

    @property
    def watching(self) -> bool:
        return self._task is not None

    def use(self, user: object) -> None:
        """`user` needs hot-plug events: watch while any user does."""
        self._users.add(user)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._watch(), name="chimed-device-watch"
            )

    def unuse(self, user: object) -> None:
        self._users.discard(user)
        if not self._users and self._task is not None:
            task, self._task = self._task, None
            self.devices = None
            task.cancel()
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)
            self._arm_idle_close()

    async def _watch(self) -> None:
        watcher = DeviceWatcher(self._changed, self.interval, self.prober)
        try:
            try:
                devices = await watcher.start()
            except RuntimeError as e:
                log.warning("audio devices cannot be listed (%s); only virtual ones are", e)
                devices = virtual_devices()
            self.devices = list(devices)
            self._tell(self.devices, changed=False)
            await asyncio.Event().wait()  # until unuse() or close() cancels
        finally:
            await watcher.stop()

    def _changed(self, devices: Devices) -> None:
        self.devices = list(devices)
        self._tell(self.devices, changed=True)

    def _tell(self, devices: Devices, changed: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener.devices_listed(devices, changed)
            except Exception:
                log.exception("a device listener failed")

    async def close(self) -> None:
        self._users.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        task, self._task = self._task, None
        tasks = [*self._ending, *([task] if task is not None else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.devices = None
        await self.prober.close()
