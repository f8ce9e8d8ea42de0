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
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import WSMsgType, web
from chime.signaling import signaling_pb2 as pb

from chimed.embedded.data_messages import DataMessages
from chimed.embedded.media_server import MediaServer
from chimed.embedded.registry import Attendee, Meeting, Registry
from chimed.embedded.room import Announcement, Room
from chimed.media.ice import pin_host_addresses

log = logging.getLogger(__name__)

Frame = pb.SdkSignalFrame
T = pb.SdkSignalFrame.Type

SESSION_PROTOCOL = "_aws_wt_session"
ACCEPTED_TYPE_BYTES = (0x02, 0x05)
SEND_TYPE_BYTE = 0x05
VIDEO_SUBSCRIPTION_LIMIT = 25

# Statuses that end a session (AUDIO_STATUS / error.status), as the clients map them.
JOINED_FROM_ANOTHER_DEVICE = 301
AUTHENTICATION_REJECTED = 403
MEETING_ENDED = 410
ATTENDEE_REMOVED = 411
INTERNAL_ERROR = 500
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_MANY_MESSAGES = 4429  # a data-message hard limit broken: the server hangs up


# --- framing -------------------------------------------------------------------------------
def encode(frame: Frame) -> bytes:
    return bytes([SEND_TYPE_BYTE]) + frame.SerializePartialToString()


def decode(data: bytes) -> Frame | None:
    """One frame, or None for anything this server cannot read (skipped, never fatal)."""
    if len(data) < 1 or data[0] not in ACCEPTED_TYPE_BYTES:
        return None
    frame = Frame()
    try:
        frame.ParseFromString(data[1:])
    except Exception:
        return None
    # proto2 closed enum: an unknown type lands in unknown fields and `type` reads as JOIN.
    return frame if frame.HasField("type") else None


def new_frame(frame_type: int) -> Frame:
    return Frame(type=frame_type, timestamp_ms=int(time.time() * 1000))  # type: ignore[arg-type]


def status_frame(status: int, description: str = "") -> Frame:
    frame = new_frame(T.AUDIO_STATUS)
    frame.audio_status.audio_status = status
    if description:
        frame.error.status = status
        frame.error.description = description
    return frame


# --- hooks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TurnCredentials:
    username: str
    password: str
    ttl: int
    uris: list[str]


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


class SignalingServer:
    def __init__(
        self,
        registry: Registry,
        media: MediaServer | None = None,
        turn_credentials: TurnProvider | None = None,
        ping_interval: float = 10.0,
    ) -> None:
        self.registry = registry
        self.media = media if media is not None else MediaServer()
        # Hook for the TURN relay: replace with a provider once the relay exists.
        self.turn_credentials: TurnProvider = turn_credentials or (lambda _m, _a: None)
        self.ping_interval = ping_interval
        self._meetings: dict[str, _MeetingState] = {}
        self._sessions: set[_Session] = set()
        self._ping_ids = itertools.count(1)
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
                if frame is not None:
                    await self._on_frame(session, meeting, frame)

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
        elif kind == T.JOIN:
            self._join(session, meeting)
        elif session.stream_id is None:
            return  # everything else needs a JOIN first
        elif kind == T.SUBSCRIBE:
            await self._subscribe(session, frame.sub)
        elif kind == T.AUDIO_CONTROL:
            state = self._meetings[session.meeting_id]
            self._announce(
                state, state.room.set_muted(session.stream_id, frame.audio_control.muted)
            )
        elif kind == T.DATA_MESSAGE:
            self._data_message(session, list(frame.data_message.messages))
        elif kind == T.LEAVE:
            session.send(new_frame(T.LEAVE_ACK))
            self._end(session, status=None, close_code=CLOSE_NORMAL, dropped=False)
        # CLIENT_METRIC, BITRATES, PAUSE, RESUME and anything newer: accepted, ignored.

    def _join(self, session: _Session, meeting: Meeting) -> None:
        if session.stream_id is not None:
            return
        state = self._meetings.get(meeting.meeting_id)
        if state is None:
            state = self._meetings[meeting.meeting_id] = _MeetingState(Room(meeting.meeting_id))
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
        session.send(ack)
        index = new_frame(T.INDEX)
        index.index.at_capacity = False
        index.index.num_participants = len(state.sessions)
        session.send(index)
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
            self._announce(state, state.room.set_muted(stream_id, sub.audio_muted))
        if not sub.sdp_offer:
            return  # nothing to negotiate (compressed SDP is never agreed to in JOIN_ACK)

        def present() -> None:
            if not session.ended:
                self._announce(state, state.room.mark_present(stream_id))

        try:
            answer = await self.media.answer(session.meeting_id, stream_id, sub.sdp_offer, present)
        except Exception:
            log.exception("cannot answer the offer of %s", session.attendee.attendee_id)
            self._end(session, INTERNAL_ERROR, 4000 + INTERNAL_ERROR, description="bad offer")
            return
        ack = new_frame(T.SUBSCRIBE_ACK)
        ack.suback.duplex = sub.duplex if sub.HasField("duplex") else pb.RX
        ack.suback.sdp_answer = answer.sdp
        for send in sub.send_streams:
            is_audio = send.media_type == pb.AUDIO or send.track_label == "AmazonChimeExpressAudio"
            ack.suback.allocations.add(
                track_label=send.track_label,
                stream_id=stream_id if is_audio else send.stream_id,
                group_id=send.group_id,
            )
            if is_audio and answer.audio_ssrcs:
                ack.suback.tracks.add(
                    stream_id=stream_id, ssrc=answer.audio_ssrcs[0], track_label=send.track_label
                )
        session.send(ack)

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
                if recipient is not None:
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
                and session.attendee.attendee_id == attendee.attendee_id
            ):
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
    pin_host_addresses(["127.0.0.1"])
    server = SignalingServer(service.registry, media, turn_credentials)
    server.add_routes(service.app)
    service.add_cleanup(server.close)
    return server
