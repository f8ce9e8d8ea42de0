"""One live meeting's audio roster: plain state, no I/O.

Each signaling session that JOINs gets a fresh audio stream id (1, 2, 3 ... per meeting; a
rejoin gets a new, higher id, which is how the web client tells a newer stream of the same
attendee from an older one). An attendee is *present* only once its media arrives. The room
answers every change with the AUDIO_STREAM_ID_INFO entries to send and to whom:

- presence: the newcomer gets the full roster (itself included), everyone else a join entry
  (attendee id set);
- mute change: an entry with `muted` set;
- leave: an entry with neither attendee id nor `muted`, `dropped` when the socket died
  without a LEAVE.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chime.signaling import signaling_pb2

StreamInfo = signaling_pb2.SdkAudioStreamIdInfo


@dataclass
class Participant:
    stream_id: int
    attendee_id: str
    external_user_id: str
    muted: bool = False
    present: bool = False

    def join_entry(self) -> StreamInfo:
        return StreamInfo(
            audio_stream_id=self.stream_id,
            attendee_id=self.attendee_id,
            external_user_id=self.external_user_id,
            muted=self.muted,
        )


@dataclass
class Announcement:
    """AUDIO_STREAM_ID_INFO entries for these recipients (by audio stream id)."""

    recipients: list[int]
    entries: list[StreamInfo] = field(default_factory=list)


class Room:
    def __init__(self, meeting_id: str) -> None:
        self.meeting_id = meeting_id
        self._next_stream_id = 1
        self.participants: dict[int, Participant] = {}  # by audio stream id, in join order

    def join(self, attendee_id: str, external_user_id: str, muted: bool = False) -> Participant:
        """A signaling session joined; not present until its media arrives."""
        participant = Participant(self._next_stream_id, attendee_id, external_user_id, muted)
        self._next_stream_id += 1
        self.participants[participant.stream_id] = participant
        return participant

    def present(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.present]

    def _others(self, stream_id: int) -> list[int]:
        return [s for s in self.participants if s != stream_id]

    def mark_present(self, stream_id: int) -> list[Announcement]:
        """The participant's first media arrived: announce it (idempotent)."""
        participant = self.participants.get(stream_id)
        if participant is None or participant.present:
            return []
        participant.present = True
        roster = [p.join_entry() for p in self.present()]
        out = [Announcement([stream_id], roster)]
        others = self._others(stream_id)
        if others:
            out.append(Announcement(others, [participant.join_entry()]))
        return out

    def set_muted(self, stream_id: int, muted: bool) -> list[Announcement]:
        participant = self.participants.get(stream_id)
        if participant is None or participant.muted == muted:
            return []
        participant.muted = muted
        if not participant.present:
            return []  # its join entry will carry the state
        entry = StreamInfo(audio_stream_id=stream_id, muted=muted)
        return [Announcement(list(self.participants), [entry])]

    def leave(self, stream_id: int, dropped: bool) -> list[Announcement]:
        """The session ended: LEAVE (dropped False) or a dead socket (dropped True)."""
        participant = self.participants.pop(stream_id, None)
        if participant is None or not participant.present:
            return []
        others = list(self.participants)
        if not others:
            return []
        entry = StreamInfo(audio_stream_id=stream_id)
        if dropped:
            entry.dropped = True
        return [Announcement(others, [entry])]
