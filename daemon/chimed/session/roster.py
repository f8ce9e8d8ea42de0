"""Who is in the meeting, from AUDIO_STREAM_ID_INFO frames: plain state, no I/O.

Mirrors the web client's reading of the frame: an entry with an attendee id maps an audio
stream to an attendee (present); an entry with `muted` set updates mute state; an entry with
neither ends that stream (a leave, or a drop when `dropped`). An attendee who rejoined has a
newer, higher stream id; the end of an older stream does not make them absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chime.signaling import signaling_pb2 as sig
from chime.v1 import events_pb2, types_pb2
from google.protobuf.message import Message

RealtimeEvent = tuple[str, Message]


@dataclass
class _Changes:
    joined: list[types_pb2.AttendeeInfo] = field(default_factory=list)
    left: list[types_pb2.AttendeeInfo] = field(default_factory=list)
    dropped: list[types_pb2.AttendeeInfo] = field(default_factory=list)
    muted: list[types_pb2.AttendeeInfo] = field(default_factory=list)
    unmuted: list[types_pb2.AttendeeInfo] = field(default_factory=list)

    def events(self) -> list[RealtimeEvent]:
        out: list[RealtimeEvent] = []
        if self.joined:
            out.append(("attendees_joined", events_pb2.AttendeesJoined(attendees=self.joined)))
        if self.muted:
            out.append(("attendees_muted", events_pb2.AttendeesMuted(attendees=self.muted)))
        if self.unmuted:
            out.append(("attendees_unmuted", events_pb2.AttendeesUnmuted(attendees=self.unmuted)))
        if self.left:
            out.append(("attendees_left", events_pb2.AttendeesLeft(attendees=self.left)))
        if self.dropped:
            out.append(("attendees_dropped", events_pb2.AttendeesDropped(attendees=self.dropped)))
        return out


class Roster:
    def __init__(self) -> None:
        self._streams: dict[int, types_pb2.AttendeeInfo] = {}  # audio stream id -> attendee
        self._present: dict[str, types_pb2.AttendeeInfo] = {}  # in order of arrival
        self._muted: set[str] = set()

    def apply(self, frame: sig.SdkAudioStreamIdInfoFrame) -> list[RealtimeEvent]:
        """Update from one frame; the REALTIME events it causes, one per kind (batched)."""
        changes = _Changes()
        for entry in frame.streams:
            stream_id = entry.audio_stream_id
            if entry.attendee_id:
                info = types_pb2.AttendeeInfo(
                    attendee_id=entry.attendee_id,
                    external_user_id=entry.external_user_id or entry.attendee_id,
                )
                self._streams[stream_id] = info
                if info.attendee_id not in self._present:
                    self._present[info.attendee_id] = info
                    changes.joined.append(info)
            if entry.HasField("muted"):
                self._set_muted(stream_id, entry.muted, changes)
            elif not entry.attendee_id:
                self._end_stream(stream_id, entry.dropped, changes)
        return changes.events()

    def _set_muted(self, stream_id: int, muted: bool, changes: _Changes) -> None:
        info = self._streams.get(stream_id)
        if info is None or info.attendee_id not in self._present:
            return
        aid = info.attendee_id
        if muted and aid not in self._muted:
            self._muted.add(aid)
            changes.muted.append(info)
        elif not muted and aid in self._muted:
            self._muted.discard(aid)
            changes.unmuted.append(info)

    def _end_stream(self, stream_id: int, dropped: bool, changes: _Changes) -> None:
        info = self._streams.pop(stream_id, None)
        if info is None:
            return
        aid = info.attendee_id
        if any(s > stream_id and i.attendee_id == aid for s, i in self._streams.items()):
            return  # a newer stream of the same attendee lives on
        if self._present.pop(aid, None) is None:
            return
        self._muted.discard(aid)
        (changes.dropped if dropped else changes.left).append(info)

    def clear(self) -> None:
        self._streams.clear()
        self._present.clear()
        self._muted.clear()

    def is_present(self, attendee_id: str) -> bool:
        return attendee_id in self._present

    def attendees(self) -> list[types_pb2.AttendeeInfo]:
        return [
            types_pb2.AttendeeInfo(attendee_id=i.attendee_id, external_user_id=i.external_user_id)
            for i in self._present.values()
        ]

    def muted_attendees(self) -> list[types_pb2.AttendeeInfo]:
        return [a for a in self.attendees() if a.attendee_id in self._muted]

    def streams(self) -> dict[int, types_pb2.AttendeeInfo]:
        """The audio streams of present attendees, by stream id."""
        return {s: i for s, i in self._streams.items() if i.attendee_id in self._present}
