"""One meeting's video sources, as INDEX lists them: plain state, no I/O.

A sender session is admitted while the meeting has fewer than its limit of video senders (Chime
allows 25 by default); the one more gets 206 (view only) and goes on receiving. An admitted
source gets a stream id unique in the meeting and keeps its session's group id (a new, larger
one per sender session: the clients keep an attendee's highest group). The INDEX each session
gets lists every source but its own, which sources are paused at their source, whether the
meeting is at capacity, and the video codecs every receiver can decode.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from chime.signaling import signaling_pb2 as pb

VIDEO_SEND_LIMIT = 25  # video senders per meeting, as Chime allows by default
DEFAULT_FRAMERATE = 15
DEFAULT_MAX_BITRATE_KBPS = 1500


@dataclass
class VideoSource:
    session: int  # the sender session (its audio stream id)
    stream_id: int
    group_id: int
    attendee_id: str
    external_user_id: str
    framerate: int = DEFAULT_FRAMERATE
    max_bitrate_kbps: int = DEFAULT_MAX_BITRATE_KBPS
    avg_bitrate_bps: int = 0
    width: int = 0
    height: int = 0
    paused_at_source: bool = False

    def descriptor(self) -> pb.SdkStreamDescriptor:
        out = pb.SdkStreamDescriptor(
            stream_id=self.stream_id,
            group_id=self.group_id,
            framerate=self.framerate,
            max_bitrate_kbps=self.max_bitrate_kbps,
            avg_bitrate_bps=self.avg_bitrate_bps,
            attendee_id=self.attendee_id,
            external_user_id=self.external_user_id,
            media_type=pb.VIDEO,
            track_label="AmazonChimeExpressVideo",
        )
        if self.width and self.height:
            out.width, out.height = self.width, self.height
        return out


@dataclass
class VideoIndex:
    limit: int = VIDEO_SEND_LIMIT
    sources: dict[int, VideoSource] = field(default_factory=dict)  # by sender session
    _groups: dict[int, int] = field(default_factory=dict)  # session -> its group id
    _receive_codecs: dict[int, frozenset[int]] = field(default_factory=dict)  # by session
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def at_capacity(self) -> bool:
        return len(self.sources) >= self.limit

    def admit(
        self, session: int, attendee_id: str, external_user_id: str, send: pb.SdkStreamDescriptor
    ) -> VideoSource | None:
        """The session's source (new, or the one it already has, updated from `send`), or
        None when the meeting is at its video sender limit (206, view only)."""
        source = self.sources.get(session)
        if source is None:
            if self.at_capacity:
                return None
            group = self._groups.get(session)
            if group is None:
                group = self._groups[session] = next(self._ids)
            source = VideoSource(session, next(self._ids), group, attendee_id, external_user_id)
            self.sources[session] = source
        if send.max_bitrate_kbps:
            source.max_bitrate_kbps = send.max_bitrate_kbps
        if send.framerate:
            source.framerate = send.framerate
        if send.width and send.height:
            source.width, source.height = send.width, send.height
        return source

    def stop(self, session: int) -> VideoSource | None:
        """The session stopped sending (or left): its source, now gone."""
        return self.sources.pop(session, None)

    def leave(self, session: int) -> VideoSource | None:
        self._receive_codecs.pop(session, None)
        self._groups.pop(session, None)
        return self.stop(session)

    def by_stream(self, stream_id: int) -> VideoSource | None:
        return next((s for s in self.sources.values() if s.stream_id == stream_id), None)

    def streams_of_groups(self, group_ids: set[int]) -> set[int]:
        return {s.stream_id for s in self.sources.values() if s.group_id in group_ids}

    def set_size(self, stream_id: int, width: int, height: int) -> bool:
        """A source's picture size, seen in its keyframes; whether it changed."""
        source = self.by_stream(stream_id)
        if source is None or (source.width, source.height) == (width, height):
            return False
        source.width, source.height = width, height
        return True

    def set_receive_codecs(self, session: int, codecs: frozenset[int]) -> bool:
        """What a session's offer can decode (sessions with no video sections count not);
        whether the meeting's intersection changed."""
        before = self.codec_intersection()
        if codecs:
            self._receive_codecs[session] = codecs
        else:
            self._receive_codecs.pop(session, None)
        return self.codec_intersection() != before

    def codec_intersection(self) -> list[int]:
        if not self._receive_codecs:
            return []
        common = frozenset.intersection(*self._receive_codecs.values())
        return sorted(common)

    def fill(
        self,
        index: pb.SdkIndexFrame,
        attendee_id: str,
        bitrate: Callable[[int], int] = lambda _stream_id: 0,
    ) -> None:
        """The INDEX content for the session of `attendee_id` (its own camera left out), with
        each source's average bitrate as `bitrate` (of its stream id) measures it."""
        index.at_capacity = self.at_capacity
        for source in self.sources.values():
            if source.attendee_id == attendee_id:
                continue
            source.avg_bitrate_bps = bitrate(source.stream_id)
            index.sources.append(source.descriptor())
            if source.paused_at_source:
                index.paused_at_source_ids.append(source.stream_id)
        index.supported_receive_codec_intersection.extend(self.codec_intersection())  # type: ignore[arg-type]
