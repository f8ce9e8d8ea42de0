"""A session's observer hub in memory: what each stream receives and in which order, how a
stream that falls behind is ended, how streams are removed, and the watchers' bookkeeping."""

from __future__ import annotations

from typing import TypeVar

import pytest
from chime.v1 import events_pb2, session_pb2, types_pb2
from chimed.errors import ResourceExhausted, Unavailable
from chimed.session.events import ObserverKind
from chimed.session.observers import MAX_BACKLOG, Observer, ObserverHub
from google.protobuf.message import Message

K = ObserverKind
EventT = TypeVar("EventT", bound=Message)
E = events_pb2


def joined(*attendee_ids: str) -> E.AttendeesJoined:
    return E.AttendeesJoined(
        attendees=[types_pb2.AttendeeInfo(attendee_id=a) for a in attendee_ids]
    )


def message(topic: str) -> E.DataMessageReceived:
    return E.DataMessageReceived(data_message=E.DataMessage(topic=topic, data=b"x"))


async def drain(observer: Observer, event_type: type[EventT]) -> list[EventT]:
    """Every event the stream gives until it ends (it must have been ended), each checked to
    be the stream kind's envelope."""
    out: list[EventT] = []
    async for event in observer.events():
        assert isinstance(event, event_type)
        out.append(event)
    return out


def ended_cleanly(observer: Observer) -> bool:
    return observer.finished and observer.error is None


class Watcher:
    """Records the streams a watcher hears of; refuses them when told to."""

    def __init__(self, hub: ObserverHub, kind: ObserverKind, refuse: bool = False) -> None:
        self.refuse = refuse
        self.added: list[Observer] = []
        self.removed: list[Observer] = []
        hub.watch(kind, self.add, self.removed.append)

    def add(self, observer: Observer) -> None:
        if self.refuse:
            raise RuntimeError("refused")
        self.added.append(observer)


# --- what a stream receives ------------------------------------------------------------------
async def test_the_snapshot_comes_first_then_events_each_stream_numbered_on_its_own() -> None:
    hub = ObserverHub("s1")
    early = hub.add(K.REALTIME, "early")
    hub.emit(K.REALTIME, "attendees_joined", joined("a"))
    late = hub.add(
        K.REALTIME,
        "late",
        snapshot=[("attendees_joined", joined("a")), ("attendees_muted", E.AttendeesMuted())],
    )
    hub.emit(K.REALTIME, "attendees_left", E.AttendeesLeft())
    hub.emit(K.AUDIO_VIDEO, "audio_session_started", E.AudioSessionStarted())  # another kind
    hub.remove(K.REALTIME)

    early_events = await drain(early, E.RealtimeEvent)
    late_events = await drain(late, E.RealtimeEvent)
    assert [e.WhichOneof("event") for e in early_events] == ["attendees_joined", "attendees_left"]
    assert [e.WhichOneof("event") for e in late_events] == [
        "attendees_joined",
        "attendees_muted",
        "attendees_left",
    ]
    for events in (early_events, late_events):
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert all(e.session_id == "s1" for e in events)
        assert all(e.time.ToNanoseconds() > 0 for e in events)
    assert late_events[0].attendees_joined == joined("a")
    assert late_events[-1].time.ToNanoseconds() >= late_events[0].time.ToNanoseconds()


async def test_a_stream_with_topics_gets_those_topics_only() -> None:
    hub = ObserverHub("s1")
    chat = hub.add(K.DATA_MESSAGE, topics=["chat", "presence"])
    everything = hub.add(K.DATA_MESSAGE)
    sent = ["chat", "telemetry", "presence", "chat", "Chat"]
    for topic in sent:
        hub.emit(K.DATA_MESSAGE, "data_message_received", message(topic))
    hub.remove(K.DATA_MESSAGE)

    async def topics(observer: Observer) -> list[str]:
        events = await drain(observer, E.DataMessageEvent)
        return [e.data_message_received.data_message.topic for e in events]

    assert await topics(chat) == ["chat", "presence", "chat"]
    assert await topics(everything) == sent


async def test_emit_to_reaches_one_stream_only() -> None:
    hub = ObserverHub("s1")
    one, other = hub.add(K.ACTIVE_SPEAKER, "one"), hub.add(K.ACTIVE_SPEAKER, "other")
    hub.emit_to(one, "active_speaker_score_changed", E.ActiveSpeakerScoreChanged())
    hub.remove(K.ACTIVE_SPEAKER)
    assert [e.WhichOneof("event") for e in await drain(one, E.ActiveSpeakerEvent)] == [
        "active_speaker_score_changed"
    ]
    assert await drain(other, E.ActiveSpeakerEvent) == []


# --- a stream that falls behind --------------------------------------------------------------
async def test_a_full_backlog_is_delivered_whole_and_one_more_ends_the_stream() -> None:
    hub = ObserverHub("s1")
    slow = hub.add(K.REALTIME, "slow")
    for i in range(MAX_BACKLOG):
        hub.emit(K.REALTIME, "attendees_joined", joined(f"a{i}"))
    assert not slow.finished  # at the limit, nothing dropped and the stream still open
    hub.remove(K.REALTIME)
    events = await drain(slow, E.RealtimeEvent)
    assert len(events) == MAX_BACKLOG
    assert [e.attendees_joined.attendees[0].attendee_id for e in events] == [
        f"a{i}" for i in range(MAX_BACKLOG)
    ]
    assert [e.sequence for e in events] == list(range(1, MAX_BACKLOG + 1))
    assert ended_cleanly(slow)


async def test_overflow_ends_the_stream_with_resource_exhausted_not_a_silent_gap() -> None:
    hub = ObserverHub("s1")
    slow = hub.add(K.REALTIME, "slow")
    keeping_up = hub.add(K.REALTIME, "keeping-up")
    events = keeping_up.events()
    received: list[E.RealtimeEvent] = []

    async def emit(i: int) -> None:
        hub.emit(K.REALTIME, "attendees_joined", joined(f"a{i}"))
        event = await anext(events)
        assert isinstance(event, E.RealtimeEvent)
        received.append(event)

    for i in range(MAX_BACKLOG):
        await emit(i)
    assert not slow.finished
    await emit(MAX_BACKLOG)
    assert isinstance(slow.error, ResourceExhausted)
    assert "fell too far behind" in str(slow.error)
    # Ended at once: the stream says so next, not after a backlog with a gap in it.
    with pytest.raises(ResourceExhausted):
        await drain(slow, E.RealtimeEvent)
    # Removing it later does not turn its end into a clean one.
    assert hub.remove(K.REALTIME, "slow") == 1
    assert isinstance(slow.error, ResourceExhausted)
    # A stream that reads as it goes lost nothing and goes on.
    assert not keeping_up.finished
    assert [e.sequence for e in received] == list(range(1, MAX_BACKLOG + 2))


# --- removing streams ------------------------------------------------------------------------
async def test_remove_by_kind_and_id_ends_streams_cleanly_after_what_they_were_sent() -> None:
    hub = ObserverHub("s1")
    a_rt = hub.add(K.REALTIME, "a")
    b_rt = hub.add(K.REALTIME, "b")
    a_dm = hub.add(K.DATA_MESSAGE, "a")
    unnamed = hub.add(K.DATA_MESSAGE)
    hub.emit(K.REALTIME, "attendees_joined", joined("x"))

    assert hub.remove(K.REALTIME, "a") == 1  # one kind, one id
    assert ended_cleanly(a_rt)
    assert len(await drain(a_rt, E.RealtimeEvent)) == 1  # what was queued is still delivered
    assert hub.observers(K.REALTIME) == [b_rt]
    assert hub.observers(K.DATA_MESSAGE) == [a_dm, unnamed]

    assert hub.remove(None, "a") == 1  # that id, whatever its kind
    assert ended_cleanly(a_dm) and hub.observers(K.DATA_MESSAGE) == [unnamed]
    assert hub.remove(K.AUDIO_VIDEO) == 0
    assert hub.remove(K.REALTIME, "nobody") == 0
    assert hub.remove() == 2  # every stream of every kind
    assert ended_cleanly(b_rt) and ended_cleanly(unnamed)
    assert hub.counts() == session_pb2.ObserverCounts()


async def test_close_with_an_error_ends_every_stream_at_once_with_it() -> None:
    hub = ObserverHub("s1")
    streams = [hub.add(kind) for kind in ObserverKind]
    hub.emit(K.REALTIME, "attendees_joined", joined("x"))
    stopping = Unavailable("chimed is shutting down")
    hub.close(stopping)
    for stream in streams:
        assert stream.finished and stream.error is stopping
    realtime = next(s for s in streams if s.kind is K.REALTIME)
    with pytest.raises(Unavailable):  # an error end drops what was queued
        await drain(realtime, E.RealtimeEvent)
    assert all(hub.observers(kind) == [] for kind in ObserverKind)


async def test_close_without_an_error_ends_streams_cleanly_after_what_they_were_sent() -> None:
    hub = ObserverHub("s1")
    realtime = hub.add(K.REALTIME)
    hub.emit(K.REALTIME, "attendees_joined", joined("x"))
    hub.close()  # the session was deleted
    assert ended_cleanly(realtime)
    assert len(await drain(realtime, E.RealtimeEvent)) == 1
    assert all(hub.observers(kind) == [] for kind in ObserverKind)


def test_counts_per_kind() -> None:
    hub = ObserverHub("s1")
    hub.add(K.REALTIME)
    hub.add(K.REALTIME)
    gone = hub.add(K.TILE)
    hub.add(K.DEVICE)
    hub.discard(gone)
    hub.discard(gone)  # a second discard of the same stream changes nothing
    counts = hub.counts()
    assert (counts.realtime, counts.tile, counts.device, counts.data_message) == (2, 0, 1, 0)


# --- watchers --------------------------------------------------------------------------------
def test_watchers_hear_of_streams_of_their_kind_added_and_gone() -> None:
    hub = ObserverHub("s1")
    speaker = Watcher(hub, K.ACTIVE_SPEAKER)
    other = Watcher(hub, K.REALTIME)
    first = hub.add(K.ACTIVE_SPEAKER, "first")
    second = hub.add(K.ACTIVE_SPEAKER, "second")
    assert speaker.added == [first, second] and speaker.removed == []
    hub.remove(K.ACTIVE_SPEAKER, "first")
    hub.discard(second)
    third = hub.add(K.ACTIVE_SPEAKER, "third")
    hub.close(Unavailable("chimed is shutting down"))
    assert speaker.removed == [first, second, third]
    assert other.added == other.removed == []


def test_a_watcher_refusing_a_stream_rolls_back_the_watchers_before_it() -> None:
    hub = ObserverHub("s1")
    first = Watcher(hub, K.ACTIVE_SPEAKER)
    refusing = Watcher(hub, K.ACTIVE_SPEAKER, refuse=True)
    last = Watcher(hub, K.ACTIVE_SPEAKER)
    with pytest.raises(RuntimeError, match="refused"):
        hub.add(K.ACTIVE_SPEAKER, "x")
    # The watcher before the refusal heard the stream come and go; the one after never heard
    # of it; the hub does not hold it.
    assert len(first.added) == 1 and first.removed == first.added
    assert refusing.removed == [] and last.added == last.removed == []
    assert hub.observers(K.ACTIVE_SPEAKER) == [] and hub.counts().active_speaker == 0

    refusing.refuse = False
    kept = hub.add(K.ACTIVE_SPEAKER, "y")
    assert (first.added[-1], refusing.added, last.added) == (kept, [kept], [kept])
    assert hub.observers(K.ACTIVE_SPEAKER) == [kept]


def test_a_refusal_by_the_first_watcher_leaves_nothing_to_roll_back() -> None:
    hub = ObserverHub("s1")
    refusing = Watcher(hub, K.ACTIVE_SPEAKER, refuse=True)
    after = Watcher(hub, K.ACTIVE_SPEAKER)
    with pytest.raises(RuntimeError):
        hub.add(K.ACTIVE_SPEAKER)
    assert refusing.removed == [] and after.added == after.removed == []
    assert hub.observers(K.ACTIVE_SPEAKER) == []
