"""Helpers to read observer streams in tests: a pump task per stream, waits with timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

DEFAULT_TIMEOUT = 15.0


class EventStream:
    """Reads a server-streaming call in the background; tests wait for events by oneof member."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[Any] = []
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.status: grpc.StatusCode | None = None
        self.details: str | None = None
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for event in self.call:
                self.events.append(event)
                self._queue.put_nowait(event)
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            self.status = e.code()
            self.details = e.details()
        finally:
            self._done.set()
            self._queue.put_nowait(None)

    async def expect(
        self,
        member: str,
        predicate: Callable[[Any], bool] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """The next event carrying this oneof member (and matching predicate); others skipped."""

        async def find() -> Any:
            while True:
                event = await self._queue.get()
                if event is None:
                    self._queue.put_nowait(None)
                    raise AssertionError(
                        f"stream ended ({self.status}: {self.details}) before {member}; "
                        f"got {[e.WhichOneof('event') for e in self.events]}"
                    )
                if event.WhichOneof("event") == member and (
                    predicate is None or predicate(getattr(event, member))
                ):
                    return event

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"no {member} within {timeout}s; got {[e.WhichOneof('event') for e in self.events]}"
            ) from None

    async def expect_next(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The next message, whatever it is (for streams without a oneof: BindView's frames)."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise AssertionError(f"no message within {timeout}s") from None
        if event is None:
            self._queue.put_nowait(None)
            raise AssertionError(f"stream ended ({self.status}: {self.details})")
        return event

    async def registered(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Until the response headers arrive. An observer stream sends them once the observer
        is registered, so every event after this reaches the stream."""
        await asyncio.wait_for(self.call.initial_metadata(), timeout)

    async def ended(self, timeout: float = DEFAULT_TIMEOUT) -> grpc.StatusCode | None:
        await asyncio.wait_for(self._done.wait(), timeout)
        return self.status

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def attendee_ids(attendees: Any) -> set[str]:
    return {a.attendee_id for a in attendees.attendees}
