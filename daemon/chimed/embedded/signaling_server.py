"""The embedded signaling server: Chime's control WebSocket at `/control/{meeting_id}`.

Auth is the join token, as WebSocket subprotocols `["_aws_wt_session", <token>]` (answered with
`_aws_wt_session`) or as cookie `_aws_wt_session=<token>`. A bad token or unknown meeting is
refused the way the clients can read: the upgrade succeeds, then one AUDIO_STATUS frame
carrying status 403 (both `error.status` and `audio_status`) and close code 4403. A browser
cannot see the HTTP status of a failed upgrade, and the web client maps a frame's status 403
to AudioAuthenticationRejected; every session end follows the same shape (status frame, then
close code 4000 + status, e.g. 4410 which the web client reads as "meeting ended").

Each socket gets a `_Session`: reads are handled in the handler's loop, writes go through a
queue drained by one writer task, so state changes (including the registry's synchronous
deletion listeners) only ever enqueue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import WSMsgType, web
from chime.signaling import signaling_pb2 as pb

from chimed.embedded.data_messages import DataMessages
from chimed.embedded.media_server import MediaServer, VideoPlan
from chimed.embedded.meetings import CONTENT, Attendee, Meeting, Registry
from chimed.embedded.room import Announcement, Room
from chimed.embedded.sdp_compression import SdpCodec, SdpCompressionError
from chimed.embedded.turn_server import TurnCredentials
from chimed.embedded.video_index import VIDEO_SEND_LIMIT, VideoIndex
from chimed.signaling import frames

log = logging.getLogger(__name__)

Frame = pb.SdkSignalFrame
T = pb.SdkSignalFrame.Type

SESSION_PROTOCOL = "_aws_wt_session"
VIDEO_SUBSCRIPTION_LIMIT = 25

# Statuses that end a session (AUDIO_STATUS / error.status), as the clients map them.
JOINED_FROM_ANOTHER_DEVICE = 301
AUTHENTICATION_REJECTED = 403
MEETING_ENDED = 410
ATTENDEE_REMOVED = 411
INTERNAL_ERROR = 500
BAD_REQUEST = 400
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_MANY_MESSAGES = 4429  # a data-message hard limit broken: the server hangs up
# A client that stopped answering PINGs is dropped; a 45xx close makes a live JS client
# reconnect (its MonitorTask treats 4500-4599 as a server-side failure, not an ending).
CLOSE_PONG_TIMEOUT = 4504
MISSED_PONGS_LIMIT = 3
VIEW_ONLY = 206  # error.status: video send refused at capacity, receiving goes on


# --- framing (signaling/frames.py) ---------------------------------------------------------
def encode(frame: Frame) -> bytes:
    return frames.encode(frame, partial=True)


def decode(data: bytes) -> Frame | None:
    """One frame, or None for anything this server cannot read (skipped, never fatal)."""
    try:
        return frames.decode(data)
    except frames.FrameError:
        return None


def new_frame(frame_type: int) -> Frame:
    return Frame(type=frame_type, timestamp_ms=frames.now_ms())  # type: ignore[arg-type]


def status_frame(status: int, description: str = "") -> Frame:
    frame = new_frame(T.AUDIO_STATUS)
    frame.audio_status.audio_status = status
    if description:
        frame.error.status = status
        frame.error.description = description
    return frame


# --- hooks -------------------------------------------------------------------------------
# (meeting id, attendee id) -> credentials for JOIN_ACK, or None to send none.
TurnProvider = Callable[[str, str], TurnCredentials | None]


class ServiceLike(Protocol):
    """What `install` needs of the embedded service (chimed.embedded.service.EmbeddedChime)."""

    app: web.Application
    registry: Registry

    def add_cleanup(self, coro_fn: Callable[[], object]) -> None: ...


# --- per-socket and per-meeting state ------------------------------------------------------
@dataclass(eq=False)
class _Session:
    ws: web.WebSocketResponse
    meeting_id: str
    attendee: Attendee
    stream_id: int | None = None  # set by JOIN
    # JOIN flag HAS_STREAM_UPDATE: presence (AUDIO_STREAM_ID_INFO) is sent only to those asking.
    stream_updates: bool = True
    codec: SdpCodec = field(default_factory=SdpCodec)  # compressed SDP, agreed at JOIN
    announced: set[int] = field(default_factory=set)  # its video stream ids INDEX has listed
    unanswered_pings: int = 0
    ended: bool = False
    reading: bool = False  # the reader waits in receive()
    outbox: asyncio.Queue[bytes | int] = field(default_factory=asyncio.Queue)  # int: close code
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, frame: Frame) -> None:
        if not self.ended:
            self.outbox.put_nowait(encode(frame))


@dataclass
class _MeetingState:
    room: Room
    data: DataMessages = field(default_factory=DataMessages)
    sessions: dict[int, _Session] = field(default_factory=dict)  # joined, by audio stream id
    video: VideoIndex = field(default_factory=VideoIndex)


class SignalingServer:
    def __init__(
        self,
        registry: Registry,
        media: MediaServer | None = None,
        turn_credentials: TurnProvider | None = None,
        ping_interval: float = 10.0,
        missed_pongs_limit: int = MISSED_PONGS_LIMIT,
        video_send_limit: int = VIDEO_SEND_LIMIT,
    ) -> None:
        """`video_send_limit`: video senders per meeting, unless the meeting's tag
        `chimed:video-sender-limit` sets its own."""
        self.registry = registry
        self.media = media if media is not None else MediaServer()
        # Hook for the TURN relay: replace with a provider once the relay exists.
        self.turn_credentials: TurnProvider = turn_credentials or (lambda _m, _a: None)
        self.ping_interval = ping_interval
        self.missed_pongs_limit = missed_pongs_limit  # PINGs unanswered before a drop
        self.video_send_limit = video_send_limit
        self._meetings: dict[str, _MeetingState] = {}
        self._sessions: set[_Session] = set()
        self._ping_ids = itertools.count(1)
        self.media.on_audio_metadata = self._audio_metadata
        self.media.video.on_size = self._video_size
        registry.on_meeting_deleted(self._meeting_deleted)
        registry.on_attendee_deleted(self._attendee_deleted)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/control/{meeting_id}", self.handle)

    # --- the socket ------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        meeting_id = request.match_info["meeting_id"]
        ws = web.WebSocketResponse(protocols=(SESSION_PROTOCOL,), max_msg_size=1 << 20)
        await ws.prepare(request)
        found = self.registry.authenticate(meeting_id, join_token(request) or "")
        if found is None:
            await ws.send_bytes(
                encode(status_frame(AUTHENTICATION_REJECTED, "authentication rejected"))
            )
            await ws.close(code=4000 + AUTHENTICATION_REJECTED)
            return ws
        session = _Session(ws, meeting_id, found[1])
        self._sessions.add(session)
        reader = asyncio.create_task(self._read(session, found[0]))
        writer = asyncio.create_task(self._write(session, reader))
        pinger = asyncio.create_task(self._ping(session))
        try:
            await asyncio.wait([reader])  # not `await reader`: the writer may cancel it
            if not reader.cancelled() and reader.exception() is not None:
                log.error("signaling session failed", exc_info=reader.exception())
            if not session.ended:  # the socket died without a LEAVE (or the reader failed)
                self._end(session, status=None, close_code=CLOSE_NORMAL, dropped=True)
            await asyncio.wait([writer])
        finally:
            for task in (pinger, reader, writer):
                task.cancel()
            await asyncio.gather(pinger, reader, writer, return_exceptions=True)
            if not session.ended:
                self._end(session, status=None, close_code=CLOSE_GOING_AWAY, dropped=True)
            if session.stream_id is not None:
                await self.media.close_peer(meeting_id, session.stream_id)
            self._sessions.discard(session)
            session.closed.set()
        return ws

    async def _read(self, session: _Session, meeting: Meeting) -> None:
        while not session.ended:
            session.reading = True
            try:
                msg = await session.ws.receive()
            finally:
                session.reading = False
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                return
            if msg.type == WSMsgType.BINARY:
                frame = decode(msg.data)
                if frame is None:
                    continue
                try:
                    await self._on_frame(session, meeting, frame)
                except Exception:  # one frame the server cannot handle never ends the session
                    log.exception("cannot handle a %s frame", T.Name(frame.type))

    async def _write(self, session: _Session, reader: asyncio.Task[None]) -> None:
        """Drain the outbox; an int is the close code, the last item.

        aiohttp drops the transport without a close handshake when one task closes while
        another waits in receive(), so an idle reader is cancelled before the close.
        """
        while True:
            item = await session.outbox.get()
            if isinstance(item, int):
                if session.reading:
                    reader.cancel()
                await asyncio.wait([reader])
                with contextlib.suppress(Exception):
                    await session.ws.close(code=item)
                return
            try:
                await session.ws.send_bytes(item)
            except Exception:  # the peer is gone; the reader will notice
                log.debug("send failed", exc_info=True)

    async def _ping(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            if session.unanswered_pings >= self.missed_pongs_limit:
                log.info("%s stopped answering PINGs: dropped", session.attendee.attendee_id)
                self._end(session, status=None, close_code=CLOSE_PONG_TIMEOUT, dropped=True)
                return
            session.unanswered_pings += 1
            frame = new_frame(T.PING_PONG)
            frame.ping_pong.type = pb.PING
            frame.ping_pong.ping_id = next(self._ping_ids) & 0xFFFFFFFF
            session.send(frame)

    # --- frames ----------------------------------------------------------------------------
    async def _on_frame(self, session: _Session, meeting: Meeting, frame: Frame) -> None:
        kind = frame.type
        if kind == T.PING_PONG:
            if frame.ping_pong.type == pb.PING:
                pong = new_frame(T.PING_PONG)
                pong.ping_pong.type = pb.PONG
                pong.ping_pong.ping_id = frame.ping_pong.ping_id
                session.send(pong)
            elif frame.ping_pong.type == pb.PONG:
                session.unanswered_pings = 0
        elif kind == T.JOIN:
            self._join(session, meeting, frame.join)
        elif session.stream_id is None:
            return  # everything else needs a JOIN first
        elif kind == T.SUBSCRIBE:
            await self._subscribe(session, frame.sub)
        elif kind == T.AUDIO_CONTROL:
            self._set_muted(session, frame.audio_control.muted)
        elif kind == T.DATA_MESSAGE:
            self._data_message(session, list(frame.data_message.messages))
        elif kind == T.LEAVE:
            session.send(new_frame(T.LEAVE_ACK))
            self._end(session, status=None, close_code=CLOSE_NORMAL, dropped=False)
        elif kind in (T.PAUSE, T.RESUME):
            self._pause(session, frame.pause, paused=kind == T.PAUSE)
        # CLIENT_METRIC, BITRATES and anything newer: accepted, ignored.

    def _join(self, session: _Session, meeting: Meeting, join: pb.SdkJoinFrame) -> None:
        if session.stream_id is not None:
            return
        # Every flag is accepted. HAS_STREAM_UPDATE asks for presence (the C++ SDK clears it
        # to go without); a JOIN that carries no flags at all is taken as the SDKs' default.
        session.stream_updates = not join.HasField("flags") or bool(
            join.flags & pb.HAS_STREAM_UPDATE
        )
        session.codec.enabled = join.wants_compressed_sdp
        state = self._meetings.get(meeting.meeting_id)
        if state is None:
            state = self._meetings[meeting.meeting_id] = _MeetingState(Room(meeting.meeting_id))
            state.video.limit = meeting.video_sender_limit(self.video_send_limit)
        attendee = session.attendee
        previous = next(
            (s for s in state.sessions.values() if s.attendee.attendee_id == attendee.attendee_id),
            None,
        )
        if previous is not None:
            self._end(previous, JOINED_FROM_ANOTHER_DEVICE, 4000 + JOINED_FROM_ANOTHER_DEVICE)
        participant = state.room.join(attendee.attendee_id, attendee.external_user_id)
        session.stream_id = participant.stream_id
        state.sessions[participant.stream_id] = session

        ack = new_frame(T.JOIN_ACK)
        ack.joinack.video_subscription_limit = VIDEO_SUBSCRIPTION_LIMIT
        turn = self.turn_credentials(meeting.meeting_id, attendee.attendee_id)
        if turn is not None:
            creds = ack.joinack.turn_credentials
            creds.username, creds.password, creds.ttl = turn.username, turn.password, turn.ttl
            creds.uris.extend(turn.uris)
        if session.codec.enabled:
            ack.joinack.wants_compressed_sdp = True
        session.send(ack)
        session.send(self._index(state, session))
        replay = state.data.replay(time.time_ns())
        if replay:
            frame = new_frame(T.DATA_MESSAGE)
            frame.data_message.messages.extend(replay)
            session.send(frame)

    async def _subscribe(self, session: _Session, sub: pb.SdkSubscribeFrame) -> None:
        assert session.stream_id is not None
        state = self._meetings[session.meeting_id]
        stream_id = session.stream_id
        if sub.HasField("audio_muted"):
            self._set_muted(session, sub.audio_muted)
        try:
            offer = session.codec.offer(sub.sdp_offer, sub.compressed_sdp_offer)
        except SdpCompressionError as e:
            log.warning("bad compressed offer from %s: %s", session.attendee.attendee_id, e)
            self._end(session, BAD_REQUEST, 4000 + BAD_REQUEST, description="bad compressed SDP")
            return
        if not offer:
            return  # nothing to negotiate
        audio_send = next((s for s in sub.send_streams if _is_audio(s)), None)
        video_send = next((s for s in sub.send_streams if not _is_audio(s)), None)
        source = stopped = None
        view_only = False
        if sub.duplex in (pb.TX, pb.DUPLEX) and video_send is not None:
            attendee = session.attendee
            source = state.video.admit(
                stream_id, attendee.attendee_id, attendee.external_user_id, video_send
            )
            view_only = source is None
        else:
            stopped = state.video.stop(stream_id)
        plan = VideoPlan(
            source.stream_id if source is not None else None, tuple(sub.receive_stream_ids)
        )

        def present() -> None:
            if not session.ended:
                self._announce(state, state.room.mark_present(stream_id))

        try:
            answer = await self.media.answer(session.meeting_id, stream_id, offer, present, plan)
        except Exception:
            log.exception("cannot answer the offer of %s", session.attendee.attendee_id)
            self._end(session, INTERNAL_ERROR, 4000 + INTERNAL_ERROR, description="bad offer")
            return
        if session.ended:
            return
        participant = state.room.participants.get(stream_id)
        if participant is not None:  # a mute from before the media existed
            self.media.set_muted(session.meeting_id, stream_id, participant.muted)
        ack = new_frame(T.SUBSCRIBE_ACK)
        ack.suback.duplex = sub.duplex if sub.HasField("duplex") else pb.RX
        compressed = session.codec.answer(answer.sdp)
        if compressed is not None:
            ack.suback.compressed_sdp_answer = compressed
        else:
            ack.suback.sdp_answer = answer.sdp
        if view_only:  # the answer stands; only the video send is refused
            ack.error.status = VIEW_ONLY
            ack.error.description = "video at capacity: view only"
        if source is not None and video_send is not None:
            ack.suback.allocations.add(
                track_label=video_send.track_label,
                stream_id=source.stream_id,
                group_id=source.group_id,
            )
        if audio_send is not None and answer.audio_ssrcs:
            ack.suback.tracks.add(
                stream_id=stream_id, ssrc=answer.audio_ssrcs[0], track_label=audio_send.track_label
            )
        for track in answer.video_tracks:
            ack.suback.tracks.add(
                stream_id=track.stream_id, ssrc=track.ssrc, track_label=f"v_{track.mid}"
            )
        session.send(ack)
        codecs_changed = state.video.set_receive_codecs(stream_id, answer.receive_codecs)
        started = source is not None and source.stream_id not in session.announced
        if source is not None:
            session.announced.add(source.stream_id)
        if started or stopped is not None or codecs_changed:
            self._send_indexes(state)

    def _pause(self, session: _Session, pause: pb.SdkPauseResumeFrame, paused: bool) -> None:
        """PAUSE / RESUME: a receiver stops or restarts receiving those streams (its own
        stream named: its source is paused at source, which everyone's INDEX shows)."""
        assert session.stream_id is not None
        state = self._meetings[session.meeting_id]
        streams = set(pause.stream_ids) | state.video.streams_of_groups(set(pause.group_ids))
        own = state.video.sources.get(session.stream_id)
        if own is not None and own.stream_id in streams:
            streams.discard(own.stream_id)
            if own.paused_at_source != paused:
                own.paused_at_source = paused
                self._send_indexes(state)
        self.media.video.pause(session.meeting_id, session.stream_id, streams, paused)

    def _video_size(self, meeting_id: str, stream_id: int, width: int, height: int) -> None:
        state = self._meetings.get(meeting_id)
        if state is not None and state.video.set_size(stream_id, width, height):
            self._send_indexes(state)

    def _index(self, state: _MeetingState, session: _Session) -> Frame:
        """The INDEX for one session: every other video source, capacity, codecs."""
        index = new_frame(T.INDEX)
        index.index.num_participants = len(state.sessions)
        bitrate = functools.partial(self.media.video.bitrate, session.meeting_id)
        state.video.fill(index.index, session.attendee.attendee_id, bitrate)
        return index

    def _send_indexes(self, state: _MeetingState) -> None:
        for session in state.sessions.values():
            session.send(self._index(state, session))

    def _set_muted(self, session: _Session, muted: bool) -> None:
        """AUDIO_CONTROL or SUBSCRIBE's audio_muted: silence the mix and tell everyone."""
        assert session.stream_id is not None
        state = self._meetings[session.meeting_id]
        self.media.set_muted(session.meeting_id, session.stream_id, muted)
        self._announce(state, state.room.set_muted(session.stream_id, muted))

    def _audio_metadata(self, meeting_id: str, states: list[pb.SdkAudioAttendeeState]) -> None:
        """The media server's AUDIO_METADATA for a meeting: the same frame to every attendee."""
        state = self._meetings.get(meeting_id)
        if state is None or not state.sessions:
            return
        frame = new_frame(T.AUDIO_METADATA)
        frame.audio_metadata.attendee_states.extend(states)
        for session in state.sessions.values():
            session.send(frame)

    def _data_message(self, session: _Session, messages: list[pb.SdkDataMessagePayload]) -> None:
        state = self._meetings[session.meeting_id]
        attendee = session.attendee
        result = state.data.ingest(
            attendee.attendee_id, attendee.external_user_id, messages, time.time_ns()
        )
        if result.deliver:
            frame = new_frame(T.DATA_MESSAGE)
            frame.data_message.messages.extend(result.deliver)
            for other in state.sessions.values():
                if other is not session:
                    other.send(frame)
        if result.bounce:
            frame = new_frame(T.DATA_MESSAGE)
            frame.data_message.messages.extend(result.bounce)
            session.send(frame)
        if result.hang_up:
            self._end(session, status=None, close_code=CLOSE_TOO_MANY_MESSAGES, dropped=True)

    # --- endings ---------------------------------------------------------------------------
    def _announce(self, state: _MeetingState, announcements: list[Announcement]) -> None:
        for announcement in announcements:
            frame = new_frame(T.AUDIO_STREAM_ID_INFO)
            frame.audio_stream_id_info.streams.extend(announcement.entries)
            for stream_id in announcement.recipients:
                recipient = state.sessions.get(stream_id)
                if recipient is not None and recipient.stream_updates:
                    recipient.send(frame)

    def _end(
        self,
        session: _Session,
        status: int | None,
        close_code: int,
        dropped: bool = False,
        description: str = "",
    ) -> None:
        """End a session now (synchronously): leave the room, queue the status and close."""
        if session.ended:
            return
        if status is not None:
            session.send(status_frame(status, description))
        session.ended = True
        session.outbox.put_nowait(close_code)
        state = self._meetings.get(session.meeting_id)
        if state is not None and session.stream_id is not None:
            if state.sessions.get(session.stream_id) is session:
                del state.sessions[session.stream_id]
                self._announce(state, state.room.leave(session.stream_id, dropped))
                if state.video.leave(session.stream_id) is not None:
                    self._send_indexes(state)

    def _meeting_deleted(self, meeting: Meeting) -> None:
        state = self._meetings.pop(meeting.meeting_id, None)
        if state is not None:
            state.sessions.clear()  # everyone goes: no leave announcements among them
        for session in list(self._sessions):
            if session.meeting_id == meeting.meeting_id:
                self._end(session, MEETING_ENDED, 4000 + MEETING_ENDED)

    def _attendee_deleted(self, meeting: Meeting, attendee: Attendee) -> None:
        for session in list(self._sessions):
            if (
                session.meeting_id == meeting.meeting_id
                and session.attendee.attendee_id.removesuffix(CONTENT) == attendee.attendee_id
            ):  # its content share goes with it
                self._end(session, ATTENDEE_REMOVED, 4000 + ATTENDEE_REMOVED)

    async def close(self) -> None:
        """Service stop: close every socket, then every peer connection."""
        sessions = list(self._sessions)
        for session in sessions:
            self._end(session, status=None, close_code=CLOSE_GOING_AWAY)
        if sessions:  # a client that never answers the close costs one bound, not one each
            waiters = [asyncio.create_task(s.closed.wait()) for s in sessions]
            await asyncio.wait(waiters, timeout=5)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        await self.media.close()
        self._meetings.clear()


def _is_audio(send: pb.SdkStreamDescriptor) -> bool:
    return send.media_type == pb.AUDIO or send.track_label == "AmazonChimeExpressAudio"


def join_token(request: web.Request) -> str | None:
    """The join token from the subprotocols (web client) or the cookie (C++ client)."""
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if len(offered) >= 2 and offered[0] == SESSION_PROTOCOL and offered[1]:
        return offered[1]
    return request.cookies.get(SESSION_PROTOCOL)


def install(
    service: ServiceLike,
    media: MediaServer | None = None,
    turn_credentials: TurnProvider | None = None,
) -> SignalingServer:
    """Wire the signaling and media servers into the embedded service (routes and cleanup)."""
    server = SignalingServer(service.registry, media, turn_credentials)
    server.add_routes(service.app)
    service.add_cleanup(server.close)
    return server
