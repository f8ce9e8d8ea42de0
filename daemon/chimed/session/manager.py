"""The daemon's sessions: creation from meeting and attendee documents, lookup, deletion and
shutdown, and what the API can do with one session (`ManagedSession`: start, stop, send a
message, observe, mute, audio devices). The gRPC layer calls only this; every rule a request
must meet is checked here or below, raising chimed's errors (chimed/errors.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chime.v1 import events_pb2, session_pb2, types_pb2
from google.protobuf.message import Message

from chimed.config import LOOPBACK_MEDIA, MediaConfig
from chimed.devices.video_listing import video_devices
from chimed.devices.video_opening import check_present
from chimed.errors import (
    AlreadyExists,
    ChimedError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    require,
)
from chimed.media.video_frames import FrameConverter, FrameFormat, RateLimiter
from chimed.meetings.convert import attendee_from_json, meeting_from_json, parse_document
from chimed.session.audio import SessionAudio, check_selection
from chimed.session.chime_session import ChimeSession, validate_data_message
from chimed.session.config import SessionConfig
from chimed.session.content_share import ContentShare
from chimed.session.device_monitor import DeviceMonitor
from chimed.session.events import ObserverKind
from chimed.session.observers import ObserverHub
from chimed.session.realtime import RealtimeAudio
from chimed.session.roster import Roster
from chimed.session.video import SessionVideo, ViewFrames
from chimed.signaling.data_limits import TOPIC_PATTERN, valid_topic

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_SESSIONS = 256
DEFAULT_TOPIC = "default"
START_WAIT_TIMEOUT_S = 30.0


@dataclass(eq=False)
class ManagedSession:
    session_id: str
    config: SessionConfig
    chime_session: ChimeSession  # the meeting connection (signaling and media)
    hub: ObserverHub
    devices: session_pb2.DeviceSelection  # kept current by `audio`
    audio: SessionAudio
    realtime: RealtimeAudio
    video: SessionVideo
    media: MediaConfig = LOOPBACK_MEDIA
    content: ContentShare | None = None  # while sharing content
    create_time_ns: int = field(default_factory=time.time_ns)

    def to_proto(self, include_join_token: bool = False) -> session_pb2.Session:
        c = self.config
        creds = session_pb2.MeetingSessionCredentials(
            attendee_id=c.attendee_id,
            external_user_id=c.external_user_id,
            join_token=c.join_token if include_join_token else "",
        )
        out = session_pb2.Session(
            session_id=self.session_id,
            state=self.chime_session.state,
            meeting_id=c.meeting_id,
            attendee_id=c.attendee_id,
            external_meeting_id=c.external_meeting_id,
            external_user_id=c.external_user_id,
            data_message_topic=c.data_message_topic,
            configuration=session_pb2.MeetingSessionConfiguration(
                meeting_id=c.meeting_id,
                external_meeting_id=c.external_meeting_id,
                credentials=creds,
                urls=session_pb2.MeetingSessionUrls(
                    audio_host_url=c.audio_host_url,
                    audio_fallback_url=c.audio_fallback_url,
                    signaling_url=c.signaling_url,
                    turn_control_url=c.turn_control_url,
                ),
                media_region=c.media_region,
            ),
            credentials=creds,
            observers=self.hub.counts(),
            muted=self.chime_session.muted,
            devices=self.devices,
        )
        out.create_time.FromNanoseconds(self.create_time_ns)
        if self.chime_session.start_time is not None:
            out.start_time.FromNanoseconds(int(self.chime_session.start_time * 1e9))
        if self.chime_session.last_status is not None:
            out.last_status.CopyFrom(self.chime_session.last_status)
        return out

    # --- what the API does with a session ------------------------------------------------
    async def start(self, wait: bool = False) -> None:
        """Join the meeting; with `wait`, until STARTED (SessionStoppedError if it stopped
        instead, DeadlineExceeded after START_WAIT_TIMEOUT_S)."""
        await self.chime_session.start()
        if wait:
            await self.chime_session.wait_started(START_WAIT_TIMEOUT_S)

    async def stop(self) -> None:
        await self.stop_content_share()
        await self.chime_session.stop()

    async def send_message(
        self, topic: str, message: Mapping[str, Any] | None, lifetime_ms: int = 0
    ) -> events_pb2.DataMessage:
        """The seed's sendMessage: `message` (a JSON object) on `topic`, the session's topic
        when empty; the session must be STARTED."""
        topic = topic or self.config.data_message_topic
        if message is None:
            raise InvalidArgument("message is missing: give a JSON object")
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        validate_data_message(topic, data, lifetime_ms, data_name="message as JSON")
        return await self.chime_session.send_message(topic, data, lifetime_ms)

    async def observe(
        self,
        kind: ObserverKind,
        observer_id: str = "",
        options: Any = None,
        topics: Sequence[str] = (),
        registered: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Message]:
        """An observer stream: the current state, then each event, until it is removed (the
        iteration ends) or the session ends it (raises why). `options` is what the stream
        asked for beyond its kind (its request: e.g. active speaker weights); a data-message
        stream hears `topics`, the session's topic when empty. `registered` is awaited once
        the stream is in place, before its first event."""
        wanted: list[str] | None = None
        if kind is ObserverKind.DATA_MESSAGE:
            wanted = list(topics) or [self.config.data_message_topic]
            for topic in wanted:
                if not valid_topic(topic):
                    raise InvalidArgument(f"topic {topic!r} must match {TOPIC_PATTERN}")
        observer = self.hub.add(kind, observer_id, self.snapshot(kind), wanted, options=options)
        try:
            if registered is not None:
                await registered()
            async for event in observer.events():
                yield event
        finally:
            self.hub.discard(observer)

    def remove_observers(self, kind: ObserverKind | None = None, observer_id: str = "") -> int:
        """End streams cleanly: of one kind or all, one id or every id. Returns how many."""
        return self.hub.remove(kind, observer_id)

    async def set_muted(self, muted: bool) -> bool:
        """Mute or unmute what the session sends; returns the muted state."""
        await self.chime_session.set_muted(muted)
        return self.chime_session.muted

    def active_devices(self) -> tuple[str, str]:
        """(input device id, output device id) in use or selected."""
        return self.audio.input_id, self.audio.output_id

    async def set_device(
        self, device_id: str, direction: types_pb2.DeviceDirection.ValueType
    ) -> types_pb2.MediaDevice:
        return await self.audio.set_device(device_id, direction)

    async def feed_pcm(self, chunks: AsyncIterator[bytes], sample_rate: int, channels: int) -> int:
        """Feed s16le PCM chunks into what the session sends; returns sample frames fed."""
        return await self.audio.feed_pcm(chunks, sample_rate, channels)

    def pcm_output(self, sample_rate: int, channels: int) -> AsyncIterator[bytes]:
        """The meeting mix as s16le chunks, until the session stops."""
        return self.audio.pcm_output(sample_rate, channels)

    # --- video (the seed's ChimeVideo and tile operations) --------------------------------
    async def start_local_video(self) -> None:
        await self.video.start_local()

    async def stop_local_video(self) -> None:
        await self.video.stop_local()

    async def start_remote_video(self) -> None:
        await self.video.start_remote()

    async def stop_remote_video(self) -> None:
        await self.video.stop_remote()

    def active_camera(self) -> types_pb2.MediaDevice:
        return self.video.active_camera()

    async def switch_camera(self, device_id: str) -> types_pb2.MediaDevice:
        return await self.video.switch_camera(device_id)

    def bind_view(
        self,
        tile_id: int,
        frame_format: FrameFormat,
        max_fps: float = 0,
        max_width: int = 0,
        max_height: int = 0,
    ) -> ViewFrames:
        """A tile's frames (the seed's bindView); bad formats and sizes fail here, before the
        first frame."""
        converter = FrameConverter(frame_format, max_width, max_height)
        limiter = RateLimiter(max_fps)
        self.video.tile(tile_id)
        return self.video.frames(tile_id, converter, limiter)

    def unbind_view(self, tile_id: int) -> None:
        self.video.unbind(tile_id)

    async def pause_tile(self, tile_id: int, paused: bool) -> types_pb2.VideoTileState:
        return await self.video.pause_tile(tile_id, paused)

    async def feed_video(
        self, width: int, height: int, frame_format: FrameFormat, frames: AsyncIterator[bytes]
    ) -> int:
        return await self.video.feed_frames(width, height, frame_format, frames)

    async def start_content_share(self, device_id: str) -> str:
        """Join "<attendee>#content" sending `device_id`; returns its attendee id."""
        require(device_id, "device_id")
        check_present(device_id)
        if self.chime_session.state != session_pb2.SESSION_STATE_STARTED:
            raise FailedPrecondition("content share needs a STARTED session (Start it first)")
        if self.content is not None:
            raise AlreadyExists(f"session {self.session_id} already shares content")
        share = ContentShare(self.config, device_id, self.media)
        self.content = share
        try:
            await share.start()
        except BaseException:
            self.content = None
            raise
        return share.attendee_id

    async def stop_content_share(self) -> None:
        """The content attendee leaves; nothing happens when none is sharing."""
        share, self.content = self.content, None
        if share is not None:
            await share.stop()

    def snapshot(self, kind: ObserverKind) -> list[tuple[str, Message]]:
        """The current state a new stream of this kind starts with."""
        state = self.chime_session.state
        out: list[tuple[str, Message]] = []
        if kind is ObserverKind.AUDIO_VIDEO:
            if state == session_pb2.SESSION_STATE_CONNECTING:
                out.append(
                    ("audio_session_started_connecting", events_pb2.AudioSessionStartedConnecting())
                )
            elif state == session_pb2.SESSION_STATE_RECONNECTING:
                out.append(
                    (
                        "audio_session_started_connecting",
                        events_pb2.AudioSessionStartedConnecting(reconnecting=True),
                    )
                )
            elif state == session_pb2.SESSION_STATE_STARTED:
                out.append(("audio_session_started", events_pb2.AudioSessionStarted()))
            out.extend(self.video.av_snapshot())
        elif kind is ObserverKind.TILE:
            out.extend(self.video.snapshot())
        elif kind is ObserverKind.REALTIME:
            present = self.chime_session.attendees()
            if present:
                out.append(("attendees_joined", events_pb2.AttendeesJoined(attendees=present)))
            muted = self.chime_session.muted_attendees()
            if muted:
                out.append(("attendees_muted", events_pb2.AttendeesMuted(attendees=muted)))
        return out


def _pick(message: Message, has: bool, text: str, key: str, name: str) -> dict[str, object] | None:
    if has and text:
        raise InvalidArgument(f"give either {name} or {name}_json, not both")
    if text:
        return parse_document(text, key, f"{name}_json")
    return None


def session_config(request: session_pb2.CreateSessionRequest) -> SessionConfig:
    """Validate the meeting and attendee of a CreateSession request into a SessionConfig."""
    meeting_doc = _pick(
        request.meeting, request.HasField("meeting"), request.meeting_json, "Meeting", "meeting"
    )
    attendee_doc = _pick(
        request.attendee,
        request.HasField("attendee"),
        request.attendee_json,
        "Attendee",
        "attendee",
    )
    if meeting_doc is not None:
        meeting = meeting_from_json(meeting_doc, "meeting_json: Meeting")
        m_where = "meeting_json: Meeting."
        names = {
            "id": "MeetingId",
            "sig": "MediaPlacement.SignalingUrl",
            "audio": "MediaPlacement.AudioHostUrl",
        }
    elif request.HasField("meeting"):
        meeting = request.meeting
        m_where = "meeting."
        names = {
            "id": "meeting_id",
            "sig": "media_placement.signaling_url",
            "audio": "media_placement.audio_host_url",
        }
    else:
        raise InvalidArgument("meeting is missing: give meeting or meeting_json")
    if attendee_doc is not None:
        attendee = attendee_from_json(attendee_doc, "attendee_json: Attendee")
        a_where = "attendee_json: Attendee."
        a_names = {"id": "AttendeeId", "token": "JoinToken"}
    elif request.HasField("attendee"):
        attendee = request.attendee
        a_where = "attendee."
        a_names = {"id": "attendee_id", "token": "join_token"}
    else:
        raise InvalidArgument("attendee is missing: give attendee or attendee_json")

    placement = meeting.media_placement
    require(meeting.meeting_id, m_where + names["id"])
    require(placement.signaling_url, m_where + names["sig"])
    require(placement.audio_host_url, m_where + names["audio"])
    if not placement.signaling_url.startswith(("ws://", "wss://")):
        raise InvalidArgument(f"{m_where}{names['sig']} must be a ws:// or wss:// URL")
    require(attendee.attendee_id, a_where + a_names["id"])
    require(attendee.join_token, a_where + a_names["token"])
    topic = request.data_message_topic or DEFAULT_TOPIC
    if not valid_topic(topic):
        raise InvalidArgument(f"data_message_topic must match {TOPIC_PATTERN}")
    return SessionConfig(
        meeting_id=meeting.meeting_id,
        external_meeting_id=meeting.external_meeting_id,
        attendee_id=attendee.attendee_id,
        external_user_id=attendee.external_user_id,
        join_token=attendee.join_token,
        signaling_url=placement.signaling_url,
        audio_host_url=placement.audio_host_url,
        audio_fallback_url=placement.audio_fallback_url,
        turn_control_url=placement.turn_control_url,
        media_region=meeting.media_region,
        data_message_topic=topic,
    )


class SessionManager:
    def __init__(
        self, devices: DeviceMonitor | None = None, *, media: MediaConfig = LOOPBACK_MEDIA
    ) -> None:
        self.sessions: dict[str, ManagedSession] = {}
        self.devices = devices or DeviceMonitor()
        self.media = media  # every session's (DaemonConfig.session_media())

    async def create(self, request: session_pb2.CreateSessionRequest) -> ManagedSession:
        config = session_config(request)
        session_id = request.session_id or uuid.uuid4().hex[:12]
        if not SESSION_ID_RE.fullmatch(session_id):
            raise InvalidArgument("session_id must be 1-64 of [A-Za-z0-9_.-]")
        await check_selection(request.devices, self.devices)
        if request.devices.video_input_device_id:
            try:
                check_present(request.devices.video_input_device_id)
            except ChimedError as e:
                raise type(e)(f"devices.video_input_device_id: {e.message}") from None
        # From here to the insertion nothing awaits, so the uniqueness checks hold.
        if session_id in self.sessions:
            raise AlreadyExists(f"session {session_id} already exists")
        for other in self.sessions.values():
            if other.config.attendee_id == config.attendee_id:
                raise AlreadyExists(
                    f"attendee {config.attendee_id} already has session {other.session_id}"
                )
        if len(self.sessions) >= MAX_SESSIONS:
            raise ResourceExhausted(f"at most {MAX_SESSIONS} sessions per daemon")
        hub = ObserverHub(session_id)
        core: ChimeSession | None = None

        def roster() -> Roster:
            assert core is not None
            return core.roster

        realtime = RealtimeAudio(hub, roster)
        core = ChimeSession(config, realtime, media=self.media)
        core.on_audio_metadata = realtime.on_audio_metadata
        selection = session_pb2.DeviceSelection()
        selection.CopyFrom(request.devices)
        audio = SessionAudio(core, hub, selection, self.devices)
        video = SessionVideo(core, hub, selection)
        managed = ManagedSession(
            session_id, config, core, hub, selection, audio, realtime, video, self.media
        )
        self.sessions[session_id] = managed
        log.info(
            "session %s created for attendee %s of meeting %s",
            session_id,
            config.attendee_id,
            config.meeting_id,
        )
        return managed

    def get(self, session_id: str) -> ManagedSession:
        require(session_id, "session_id")
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found")
        return session

    def list_sessions(self) -> list[ManagedSession]:
        return list(self.sessions.values())

    def video_devices(self) -> list[types_pb2.MediaDevice]:
        """The video inputs now: cameras, X11 screens, virtual sources."""
        return video_devices()

    async def list_devices(self) -> list[types_pb2.MediaDevice]:
        """The daemon's audio devices now (hardware freshly listed, then virtual ones)."""
        return await self.devices.list()

    async def delete(self, session_id: str) -> None:
        session = self.get(session_id)
        del self.sessions[session_id]
        try:
            await session.stop()
        finally:
            session.hub.close()  # streams end cleanly
            await session.audio.delete()
            await session.realtime.close()
            await session.video.close()
        log.info("session %s deleted", session_id)

    async def shutdown(self) -> None:
        """Leave every meeting properly and end every stream (UNAVAILABLE)."""
        sessions = list(self.sessions.values())
        self.sessions.clear()
        results = await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("session %s did not stop cleanly: %r", session.session_id, result)
            session.hub.close(Unavailable("chimed is shutting down"))
            await session.audio.delete()
            await session.realtime.close()
            await session.video.close()
        await self.devices.close()
