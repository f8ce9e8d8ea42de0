"""Fan-out of a session's events to its observer streams.

The session core emits (kind, oneof member, payload) once; each observer stream gets its own
envelope (time of the event, session id, its own sequence number). Registration and the initial
snapshot happen in one synchronous step, so a new stream never misses or reorders an event.
A stream that falls too far behind is ended with ResourceExhausted instead of growing memory.
A stream ends cleanly or with one of chimed's errors (the gRPC layer maps it to a status).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chime.v1 import events_pb2, session_pb2
from google.protobuf.message import Message

from chimed.errors import ChimedError, ResourceExhausted
from chimed.session.events import ObserverKind

# Each is built with session_id and sequence, fields every event message has.
EVENT_TYPES: dict[ObserverKind, Callable[..., Message]] = {
    ObserverKind.ACTIVE_SPEAKER: events_pb2.ActiveSpeakerEvent,
    ObserverKind.AUDIO_VIDEO: events_pb2.AudioVideoEvent,
    ObserverKind.DATA_MESSAGE: events_pb2.DataMessageEvent,
    ObserverKind.DEVICE: events_pb2.DeviceEvent,
    ObserverKind.REALTIME: events_pb2.RealtimeEvent,
    ObserverKind.TILE: events_pb2.TileEvent,
}

MAX_BACKLOG = 4096

Item = tuple[int, str, Message]  # (time ns, oneof member, payload)


@dataclass(eq=False)
class Observer:
    kind: ObserverKind
    observer_id: str
    session_id: str
    topics: frozenset[str] | None = None
    # What the stream's request asked for beyond its kind (e.g. active speaker weights).
    options: Any = None
    queue: asyncio.Queue[Item | None] = field(default_factory=asyncio.Queue)
    finished: bool = False
    error: ChimedError | None = None  # why it ended, None for a clean end
    sequence: int = 0

    def wants(self, member: str, payload: Message) -> bool:
        if self.topics is None or member != "data_message_received":
            return True
        assert isinstance(payload, events_pb2.DataMessageReceived)
        return payload.data_message.topic in self.topics

    def push(self, item: Item) -> None:
        if self.finished:
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.finish(ResourceExhausted("observer stream fell too far behind"))
            return
        self.queue.put_nowait(item)

    def finish(self, error: ChimedError | None = None) -> None:
        """End the stream after what is queued (no error), or at once with `error`."""
        if self.finished:
            return
        self.finished = True
        self.error = error
        if error is not None:
            while not self.queue.empty():
                self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def events(self) -> AsyncIterator[Message]:
        """The stream's event messages, until it is finished; raises the error it ended with."""
        event_type: Callable[..., Message] = EVENT_TYPES[self.kind]
        while True:
            item = await self.queue.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                return
            t_ns, member, payload = item
            self.sequence += 1
            event = event_type(session_id=self.session_id, sequence=self.sequence)
            event.time.FromNanoseconds(t_ns)  # type: ignore[attr-defined]
            getattr(event, member).CopyFrom(payload)
            yield event


Listener = Callable[[Observer], None]


class ObserverHub:
    """The observers of one session. Implements the core's EventSink.

    Layers that keep per-stream state (an active speaker detector per stream) `watch` a kind:
    they hear of each stream added (and may push to it with `emit_to`, or refuse it by
    raising) and of each stream gone."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._observers: dict[ObserverKind, list[Observer]] = {k: [] for k in ObserverKind}
        self._watchers: dict[ObserverKind, list[tuple[Listener, Listener]]] = {
            k: [] for k in ObserverKind
        }

    def watch(self, kind: ObserverKind, added: Listener, removed: Listener) -> None:
        self._watchers[kind].append((added, removed))

    def observers(self, kind: ObserverKind) -> list[Observer]:
        return list(self._observers[kind])

    def emit_to(self, observer: Observer, field: str, payload: Message) -> None:
        """One event for one stream only."""
        observer.push((time.time_ns(), field, payload))

    def _gone(self, observer: Observer) -> None:
        for _added, removed in self._watchers[observer.kind]:
            removed(observer)

    def emit(self, kind: ObserverKind, field: str, payload: Message) -> None:
        observers = self._observers[kind]
        if not observers:
            return
        item = (time.time_ns(), field, payload)
        for observer in observers:
            if observer.wants(field, payload):
                observer.push(item)

    def add(
        self,
        kind: ObserverKind,
        observer_id: str = "",
        snapshot: Iterable[tuple[str, Message]] = (),
        topics: Iterable[str] | None = None,
        options: Any = None,
    ) -> Observer:
        observer = Observer(
            kind,
            observer_id,
            self.session_id,
            topics=frozenset(topics) if topics is not None else None,
            options=options,
        )
        now = time.time_ns()
        for member, payload in snapshot:
            observer.push((now, member, payload))
        watchers = self._watchers[kind]
        for i, (added, _removed) in enumerate(watchers):
            try:
                added(observer)
            except BaseException:
                for _added, removed in watchers[:i]:
                    removed(observer)
                raise
        self._observers[kind].append(observer)
        return observer

    def discard(self, observer: Observer) -> None:
        """Forget a stream whose caller went away."""
        observers = self._observers[observer.kind]
        if observer in observers:
            observers.remove(observer)
            self._gone(observer)

    def remove(self, kind: ObserverKind | None = None, observer_id: str = "") -> int:
        """End streams cleanly (OK): of one kind or all, one id or every id. Returns how many."""
        removed = 0
        for k in [kind] if kind is not None else list(ObserverKind):
            keep: list[Observer] = []
            for observer in self._observers[k]:
                if not observer_id or observer.observer_id == observer_id:
                    observer.finish()
                    removed += 1
                else:
                    keep.append(observer)
            gone = [o for o in self._observers[k] if o not in keep]
            self._observers[k] = keep
            for observer in gone:
                self._gone(observer)
        return removed

    def close(self, error: ChimedError | None = None) -> None:
        """End every stream (cleanly, or with `error`), e.g. when the session is deleted or the
        daemon stops."""
        for k in ObserverKind:
            gone, self._observers[k] = self._observers[k], []
            for observer in gone:
                observer.finish(error)
                self._gone(observer)

    def counts(self) -> session_pb2.ObserverCounts:
        o = self._observers
        return session_pb2.ObserverCounts(
            active_speaker=len(o[ObserverKind.ACTIVE_SPEAKER]),
            audio_video=len(o[ObserverKind.AUDIO_VIDEO]),
            data_message=len(o[ObserverKind.DATA_MESSAGE]),
            device=len(o[ObserverKind.DEVICE]),
            realtime=len(o[ObserverKind.REALTIME]),
            tile=len(o[ObserverKind.TILE]),
        )
