"""ChimeSession: one attendee in one meeting, joined the way the official clients join.

The asyncio glue (tasks, futures, sockets) is kept thin; what the frames mean lives in plain
code: signaling/messages.py builds what is sent, roster.py reads AUDIO_STREAM_ID_INFO,
status.py maps Chime statuses, and the frame handlers below only route.

Lifecycle: CREATED -> start() -> CONNECTING -> (media connected and self present) STARTED ->
stop() or the service -> STOPPING -> STOPPED (last_status says why); start() again rejoins.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from aiortc.mediastreams import MediaStreamTrack
from chime.signaling import signaling_pb2 as sig
from chime.v1 import events_pb2, session_pb2, types_pb2
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from chimed.config import LOOPBACK_MEDIA, MediaConfig
from chimed.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from chimed.media.peer import AudioConsumer, ChimePeer, VideoSizeHandler, VideoTrackHandler
from chimed.session import status as st
from chimed.session.config import SessionConfig
from chimed.session.events import EventSink, ObserverKind
from chimed.session.roster import Roster
from chimed.signaling import messages
from chimed.signaling.client import SignalingClient, SignalingError, SignalingRejected
from chimed.signaling.data_limits import MAX_DATA_BYTES, TOPIC_PATTERN, valid_topic

log = logging.getLogger(__name__)

Frame = sig.SdkSignalFrame
State: TypeAlias = session_pb2.SessionState.ValueType

CREATED = session_pb2.SESSION_STATE_CREATED
CONNECTING = session_pb2.SESSION_STATE_CONNECTING
STARTED = session_pb2.SESSION_STATE_STARTED
STOPPING = session_pb2.SESSION_STATE_STOPPING
STOPPED = session_pb2.SESSION_STATE_STOPPED

MAX_LIFETIME_MS = 0xFFFFFFFF
JOIN_TIMEOUT_S = 15.0
LEAVE_ACK_TIMEOUT_S = 2.0


class SessionStateError(FailedPrecondition):
    """The session is not in a state that allows the call."""


class SessionStoppedError(SessionStateError):
    """The session stopped (or never started); `status` says why."""

    def __init__(self, status: types_pb2.SessionStatus) -> None:
        detail = f": {status.detail}" if status.detail else ""
        super().__init__(f"session stopped with {st.code_name(status)}{detail}")
        self.status = status


def state_name(state: State) -> str:
    return session_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_")


def validate_data_message(
    topic: str, data: bytes, lifetime_ms: int, data_name: str = "data"
) -> None:
    """The limits the SDK and the service enforce, as InvalidArguments that say which one
    (`data_name`: what the caller calls the payload)."""
    if not valid_topic(topic):
        raise InvalidArgument(f"topic {topic!r} must match {TOPIC_PATTERN}")
    if len(data) > MAX_DATA_BYTES:
        raise InvalidArgument(
            f"{data_name} is {len(data)} bytes; at most {MAX_DATA_BYTES} are allowed"
        )
    if not 0 <= lifetime_ms <= MAX_LIFETIME_MS:
        raise InvalidArgument(
            f"lifetime_ms must be between 0 and {MAX_LIFETIME_MS}, not {lifetime_ms}"
        )


def json_object(data: bytes) -> struct_pb2.Struct | None:
    """The payload as a Struct when it is a JSON object, else None."""
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    out = struct_pb2.Struct()
    try:
        json_format.ParseDict(value, out)
    except json_format.ParseError:
        return None
    return out


def data_message(
    topic: str,
    data: bytes,
    timestamp_ms: int,
    sender_attendee_id: str,
    sender_external_user_id: str,
    throttled: bool = False,
) -> events_pb2.DataMessage:
    out = events_pb2.DataMessage(
        timestamp_ms=timestamp_ms,
        topic=topic,
        data=data,
        sender_attendee_id=sender_attendee_id,
        sender_external_user_id=sender_external_user_id,
        throttled=throttled,
    )
    parsed = json_object(data)
    if parsed is not None:
        out.json.CopyFrom(parsed)
    return out


def received_data_message(payload: sig.SdkDataMessagePayload) -> events_pb2.DataMessage:
    """A DATA_MESSAGE payload as the seed's DataMessage (ingest time 0 means throttled)."""
    return data_message(
        payload.topic,
        payload.data,
        payload.ingest_time_ns // 1_000_000,
        payload.sender_attendee_id,
        payload.sender_external_user_id,
        throttled=payload.ingest_time_ns == 0,
    )


class ChimeSession:
    def __init__(
        self,
        config: SessionConfig,
        sink: EventSink,
        *,
        join_timeout: float = JOIN_TIMEOUT_S,
        audio_input: MediaStreamTrack | None = None,
        audio_output: AudioConsumer | None = None,
        media: MediaConfig = LOOPBACK_MEDIA,
    ) -> None:
        self.config = config
        self.media = media  # its peer's ICE settings, jitter depth and Opus complexity
        self._sink = sink
        self._join_timeout = join_timeout
        self._audio_input = audio_input
        self._audio_output = audio_output
        self._state: State = CREATED
        self._muted = False
        self.start_time: float | None = None  # time.time() of the last start()
        self.last_status: types_pb2.SessionStatus | None = None
        # Seam for the active-speaker / volume layer: every AUDIO_METADATA frame.
        self.on_audio_metadata: Callable[[sig.SdkAudioMetadataFrame], None] | None = None
        # Seams for the devices layer: open devices as a start begins (raising refuses the
        # start), release them once a stop has torn the media down.
        self.on_starting: Callable[[], None] | None = None
        self.on_stopped: Callable[[], Awaitable[None]] | None = None
        # Seams for the video layer (session/video.py): every INDEX and SUBSCRIBE_ACK, the
        # received video tracks and sizes, the moment the session starts and stops.
        self.on_index: Callable[[sig.SdkIndexFrame], None] | None = None
        self.on_subscribe_ack: Callable[[Frame], None] | None = None
        self.on_video_track: VideoTrackHandler | None = None
        self.on_video_size: VideoSizeHandler | None = None
        self.on_media_started: Callable[[], None] | None = None
        self.on_media_stopped: Callable[[types_pb2.SessionStatus], None] | None = None
        self._video_input: MediaStreamTrack | None = None
        self._negotiating = asyncio.Lock()
        self._roster = Roster()
        self._signaling: SignalingClient | None = None
        self._peer: ChimePeer | None = None
        self._join_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._waiters: dict[int, asyncio.Future[Frame]] = {}
        self._subscribed = False
        self._ending = False
        self._step = ""

    # --- queries ---------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._state

    @property
    def peer(self) -> ChimePeer | None:
        """The media connection while one exists (joining or joined)."""
        return self._peer

    @property
    def muted(self) -> bool:
        return self._muted

    @property
    def roster(self) -> Roster:
        return self._roster

    def attendees(self) -> list[types_pb2.AttendeeInfo]:
        return self._roster.attendees()

    def muted_attendees(self) -> list[types_pb2.AttendeeInfo]:
        return self._roster.muted_attendees()

    # --- media seams -----------------------------------------------------------------------
    def set_audio_input(self, track: MediaStreamTrack | None) -> None:
        """What this attendee sends (None: silence); takes effect at once when joined."""
        self._audio_input = track
        if self._peer is not None:
            self._peer.set_audio_input(track)

    def set_video_input(self, track: MediaStreamTrack | None) -> None:
        """The video this attendee sends (None: none); the service learns of it at the next
        renegotiate()."""
        self._video_input = track
        if self._peer is not None:
            self._peer.set_video_input(track)

    async def renegotiate(self) -> Frame:
        """A new offer and SUBSCRIBE for the peer's current video send and receive layout
        (the web client's resubscribe); returns the SUBSCRIBE_ACK."""
        peer, signaling = self._peer, self._signaling
        if self._state != STARTED or peer is None or signaling is None:
            raise SessionStateError(f"session is {state_name(self._state)}; start it first")
        try:
            return await self._negotiate(peer, signaling)
        except SignalingError as e:
            raise SessionStateError(f"signaling connection lost: {e}") from None

    async def _negotiate(self, peer: ChimePeer, signaling: SignalingClient) -> Frame:
        c = self.config
        async with self._negotiating:
            offer = await peer.create_offer()
            sub_ack = self._expect(Frame.SUBSCRIBE_ACK)
            await signaling.send(
                messages.subscribe(
                    offer,
                    c.audio_host_url,
                    self._muted,
                    c.attendee_id,
                    send_video=peer.sends_video,
                    receive_stream_ids=peer.receive_stream_ids(),
                )
            )
            self._subscribed = True
            self._step = "SUBSCRIBE_ACK"
            answer = await asyncio.wait_for(sub_ack, self._join_timeout)
            await peer.apply_answer(answer.suback.sdp_answer)
            if self.on_subscribe_ack is not None:
                self.on_subscribe_ack(answer)
            return answer

    def set_audio_output(self, consumer: AudioConsumer | None) -> None:
        """Who consumes the received mix (None: drained); takes effect at once when joined."""
        self._audio_output = consumer
        if self._peer is not None:
            self._peer.set_audio_output(consumer)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin joining; returns once the join is under way (see wait_started)."""
        if self._state not in (CREATED, STOPPED):
            raise SessionStateError(
                f"session is {state_name(self._state)}; only a CREATED or STOPPED session can start"
            )
        if self.on_starting is not None:
            self.on_starting()
        self._roster.clear()
        self._waiters = {}
        self._subscribed = False
        self._ending = False
        self._stop_task = None
        self._step = "signaling connection"
        self._started = asyncio.get_running_loop().create_future()
        self._state = CONNECTING
        self.start_time = time.time()
        self._emit_av(
            "audio_session_started_connecting",
            events_pb2.AudioSessionStartedConnecting(reconnecting=False),
        )
        self._join_task = asyncio.create_task(self._join(), name="chimed-session-join")

    async def wait_started(self, timeout: float) -> None:  # noqa: ASYNC109 (the API's shape)
        """Until STARTED; SessionStoppedError if it stopped instead, DeadlineExceeded after
        `timeout` seconds."""
        if self._state == STARTED:
            return
        if self._state == CREATED or self._started is None:
            raise SessionStateError("session is CREATED; start it first")
        if self._state == STOPPED:
            assert self.last_status is not None
            raise SessionStoppedError(self.last_status)
        if self._state == STOPPING and self._started.done() and not self._started.exception():
            raise SessionStateError("session is STOPPING")
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"session did not start within {timeout:g} s (waiting for {self._step})"
            ) from None

    async def stop(self) -> None:
        """Leave the meeting (LEAVE, LEAVE_ACK) and release everything; idempotent."""
        if self._state == CREATED:
            return
        if self._stop_task is None:
            self._ending = True
            self._state = STOPPING
            self._stop_task = asyncio.create_task(
                self._teardown(st.session_status(st.OK, "stopped by the client"), leave=True),
                name="chimed-session-stop",
            )
        await asyncio.shield(self._stop_task)

    # --- actions ---------------------------------------------------------------------------
    async def send_message(
        self, topic: str, data: bytes, lifetime_ms: int = 0
    ) -> events_pb2.DataMessage:
        """Send a data message; returns it as sent. Like the SDK, the sender's own observers
        do not receive it (only a throttled message comes back, from the service)."""
        validate_data_message(topic, data, lifetime_ms)
        signaling = self._signaling
        if self._state != STARTED or signaling is None:
            raise SessionStateError(
                f"session is {state_name(self._state)}; start it first (data messages need a "
                "STARTED session)"
            )
        try:
            await signaling.send(messages.data_message(topic, data, lifetime_ms))
        except SignalingError as e:
            raise SessionStateError(f"signaling connection lost: {e}") from None
        return data_message(
            topic,
            data,
            time.time_ns() // 1_000_000,
            self.config.attendee_id,
            self.config.external_user_id,
        )

    async def send_pause(self, stream_ids: list[int], paused: bool) -> None:
        """PAUSE or RESUME the reception of remote video streams."""
        signaling = self._signaling
        if self._state != STARTED or signaling is None:
            raise SessionStateError(f"session is {state_name(self._state)}; start it first")
        try:
            await signaling.send(messages.pause(stream_ids, paused))
        except SignalingError as e:
            raise SessionStateError(f"signaling connection lost: {e}") from None

    async def set_muted(self, muted: bool) -> None:
        """Mute or unmute: silence what is sent and tell the service (AUDIO_CONTROL)."""
        self._muted = muted
        if self._peer is not None:
            self._peer.set_muted(muted)
        signaling = self._signaling
        # Before SUBSCRIBE the mute state travels in SUBSCRIBE's audio_muted instead.
        if self._subscribed and signaling is not None and signaling.connected:
            try:
                await signaling.send(messages.audio_control(muted))
            except SignalingError:
                log.info("AUDIO_CONTROL not sent: signaling connection lost")

    # --- join ------------------------------------------------------------------------------
    async def _join(self) -> None:
        try:
            async with asyncio.timeout(self._join_timeout):
                await self._join_steps()
            return
        except SessionStoppedError:
            return  # ended meanwhile; _end already ran
        except SignalingRejected as e:
            status = st.from_audio_status(e.status, str(e))
        except SignalingError as e:
            if self._signaling is not None and self._signaling.opened:
                return  # the socket closed under the join: on_close reports the status
            status = st.session_status(st.SERVICE_UNAVAILABLE, str(e))
        except TimeoutError:
            status = st.session_status(
                st.SERVICE_UNAVAILABLE,
                f"join timed out after {self._join_timeout:g} s waiting for {self._step}",
            )
        except Exception as e:
            log.exception("join of attendee %s failed", self.config.attendee_id)
            status = st.session_status(st.UNKNOWN, f"join failed: {type(e).__name__}: {e}")
        self._end(status)

    async def _join_steps(self) -> None:
        c = self.config
        signaling = SignalingClient(
            c.signaling_url, c.join_token, self._on_frame, self._on_signaling_closed
        )
        self._signaling = signaling
        await signaling.connect()
        join_ack = self._expect(Frame.JOIN_ACK)
        index = self._expect(Frame.INDEX)
        await signaling.send(messages.join(secrets.randbits(64)))
        self._step = "JOIN_ACK"
        ack = await join_ack
        self._step = "INDEX"
        await index

        turn = ack.joinack.turn_credentials
        self._peer = ChimePeer(
            list(turn.uris),
            turn.username or None,
            turn.password or None,
            on_state=self._on_peer_state,
            audio_input=self._audio_input,
            audio_output=self._audio_output,
            muted=self._muted,
            media=self.media,
            video_input=self._video_input,
            on_video_track=self.on_video_track,
            on_video_size=self.on_video_size,
        )
        self._step = "ICE gathering"
        await self._negotiate(self._peer, signaling)
        self._step = "media connection and attendee presence"
        self._check_started()
        assert self._started is not None
        await asyncio.shield(self._started)

    def _expect(self, frame_type: int) -> asyncio.Future[Frame]:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters[frame_type] = future
        return future

    def _check_started(self) -> None:
        peer = self._peer
        if self._state != CONNECTING or peer is None or not self._subscribed:
            return
        if peer.connection_state != "connected":
            return
        if not self._roster.is_present(self.config.attendee_id):
            return
        self._state = STARTED
        log.info("attendee %s joined meeting %s", self.config.attendee_id, self.config.meeting_id)
        self._emit_av("audio_session_started", events_pb2.AudioSessionStarted(reconnecting=False))
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        if self.on_media_started is not None:
            self.on_media_started()

    # --- incoming --------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        if frame.HasField("error") and frame.error.status:
            if frame.error.status not in st.NON_TERMINAL_ERROR_STATUSES:
                self._end(st.from_audio_status(frame.error.status, frame.error.description))
                return
            log.info("signaling status %d: %s", frame.error.status, frame.error.description)
        waiter = self._waiters.pop(frame.type, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(frame)
        if self._ending:
            return  # stopping: only LEAVE_ACK (a waiter) still matters
        if frame.type == Frame.AUDIO_STREAM_ID_INFO:
            for field, event in self._roster.apply(frame.audio_stream_id_info):
                self._sink.emit(ObserverKind.REALTIME, field, event)
            self._check_started()
        elif frame.type == Frame.DATA_MESSAGE:
            for payload in frame.data_message.messages:
                self._sink.emit(
                    ObserverKind.DATA_MESSAGE,
                    "data_message_received",
                    events_pb2.DataMessageReceived(data_message=received_data_message(payload)),
                )
        elif frame.type == Frame.INDEX:
            if self.on_index is not None:
                self.on_index(frame.index)
        elif frame.type == Frame.AUDIO_METADATA:
            if self.on_audio_metadata is not None:
                self.on_audio_metadata(frame.audio_metadata)
        elif frame.type == Frame.AUDIO_STATUS:
            code = frame.audio_status.audio_status
            if not 200 <= code < 300:
                self._end(st.from_audio_status(code))

    def _on_signaling_closed(self, close_code: int | None, reason: str) -> None:
        self._end(st.from_close(close_code, reason))

    def _on_peer_state(self, state: str) -> None:
        if state == "connected":
            self._check_started()
        elif state in ("failed", "closed") and not self._ending:
            self._end(st.session_status(st.DISCONNECTED, f"media connection {state}"))

    # --- ending ----------------------------------------------------------------------------
    def _end(self, status: types_pb2.SessionStatus) -> None:
        """The service or the network ended the session: tear down once, report once."""
        if self._ending:
            return
        self._ending = True
        self._state = STOPPING
        log.info(
            "session of attendee %s ended: %s %s",
            self.config.attendee_id,
            st.code_name(status),
            status.detail,
        )
        self._stop_task = asyncio.create_task(
            self._teardown(status, leave=False), name="chimed-session-end"
        )

    async def _teardown(self, status: types_pb2.SessionStatus, leave: bool) -> None:
        join = self._join_task
        self._join_task = None
        if join is not None and join is not asyncio.current_task():
            join.cancel()
            await asyncio.wait([join])
        signaling, self._signaling = self._signaling, None
        peer, self._peer = self._peer, None
        if leave and signaling is not None and signaling.connected:
            await self._leave(signaling)
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters = {}
        if signaling is not None:
            await signaling.close()
        if peer is not None:
            await peer.close()
        if self.on_stopped is not None:
            try:
                await self.on_stopped()
            except Exception:
                log.exception(
                    "releasing the devices of attendee %s failed", self.config.attendee_id
                )
        self._roster.clear()
        self._subscribed = False
        if self.on_media_stopped is not None:
            self.on_media_stopped(status)
        self.last_status = status
        self._state = STOPPED
        started = self._started
        if started is not None and not started.done():
            started.set_exception(SessionStoppedError(status))
            started.exception()  # retrieved: nobody may be waiting
        self._emit_av("audio_session_stopped", events_pb2.AudioSessionStopped(status=status))

    async def _leave(self, signaling: SignalingClient) -> None:
        ack = self._expect(Frame.LEAVE_ACK)
        try:
            await signaling.send(messages.leave())
            await asyncio.wait_for(ack, LEAVE_ACK_TIMEOUT_S)
        except (TimeoutError, SignalingError):
            log.info("no LEAVE_ACK for attendee %s; closing anyway", self.config.attendee_id)

    def _emit_av(self, field: str, payload: Message) -> None:
        self._sink.emit(ObserverKind.AUDIO_VIDEO, field, payload)
