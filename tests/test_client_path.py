"""chimed's client path (signaling frames, WebSocket, aiortc peer, ChimeSession) against the
embedded Chime service over loopback, plus its plain protocol logic."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from aiohttp import web
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame
from chime.signaling import signaling_pb2 as sig
from chime.v1 import session_pb2, types_pb2
from chimed.embedded.meetings import Attendee, Meeting
from chimed.embedded.service import EmbeddedChime
from chimed.media.tracks import GateTrack, SilenceTrack
from chimed.session import status as st
from chimed.session.chime_session import (
    ChimeSession,
    SessionStateError,
    SessionStoppedError,
    received_data_message,
    validate_data_message,
)
from chimed.session.config import SessionConfig
from chimed.session.events import ObserverKind
from chimed.session.roster import Roster
from chimed.signaling import frames, messages
from chimed.signaling.client import signaling_url
from google.protobuf import json_format
from google.protobuf.message import Message

# The sessions here offer loopback host candidates only.
pytestmark = pytest.mark.usefixtures("loopback_only")
Frame = sig.SdkSignalFrame
TIMEOUT = 15.0
Event = tuple[ObserverKind, str, Message]


# --- a recording EventSink ----------------------------------------------------------------
class Recorder:
    """Keeps every event; lets a test wait for the first one matching a predicate."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def emit(self, kind: ObserverKind, field: str, payload: Message) -> None:
        self.events.append((kind, field, payload))
        self._changed.set()

    def of(self, field: str) -> list[Any]:
        return [p for _, f, p in self.events if f == field]

    async def wait_for(self, field: str, pred: Callable[[Any], bool] = lambda _: True) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                for payload in self.of(field):
                    if pred(payload):
                        return payload
                self._changed.clear()
                await self._changed.wait()


def ids(attendees: Any) -> set[str]:
    return {a.attendee_id for a in attendees}


# --- the embedded service -----------------------------------------------------------------
def config_for(service: EmbeddedChime, meeting: Meeting, attendee: Attendee) -> SessionConfig:
    placement: dict[str, str] = meeting.to_json(*service.urls())["MediaPlacement"]  # type: ignore[assignment]
    return SessionConfig(
        meeting_id=meeting.meeting_id,
        external_meeting_id=meeting.external_meeting_id,
        attendee_id=attendee.attendee_id,
        external_user_id=attendee.external_user_id,
        join_token=attendee.join_token,
        signaling_url=placement["SignalingUrl"],
        audio_host_url=placement["AudioHostUrl"],
        audio_fallback_url=placement["AudioFallbackUrl"],
        turn_control_url=placement["TurnControlUrl"],
        media_region=meeting.media_region,
    )


class Joined:
    def __init__(self, session: ChimeSession, recorder: Recorder, attendee: Attendee) -> None:
        self.session = session
        self.recorder = recorder
        self.attendee = attendee
        self.info = types_pb2.AttendeeInfo(
            attendee_id=attendee.attendee_id, external_user_id=attendee.external_user_id
        )


async def join(service: EmbeddedChime, meeting: Meeting, user: str) -> Joined:
    attendee = service.registry.create_attendee(meeting.meeting_id, user)
    recorder = Recorder()
    session = ChimeSession(config_for(service, meeting, attendee), recorder)
    await session.start()
    await session.wait_started(TIMEOUT)
    return Joined(session, recorder, attendee)


# --- the client path against the embedded service -----------------------------------------
async def test_two_attendees_meet_talk_mute_and_leave(
    embedded: EmbeddedChime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meeting = embedded.registry.create_meeting("tok-meet", "standup")
    alice = await join(embedded, meeting, "alice")
    assert alice.session.state == session_pb2.SESSION_STATE_STARTED
    assert [f for _, f, _ in alice.recorder.events if f.startswith("audio_session")] == [
        "audio_session_started_connecting",
        "audio_session_started",
    ]
    assert alice.session.start_time is not None

    bob = await join(embedded, meeting, "bob")
    # Both ways: each sees the other join, with its external user id.
    joined = await alice.recorder.wait_for(
        "attendees_joined", lambda e: bob.attendee.attendee_id in ids(e.attendees)
    )
    assert bob.info in joined.attendees
    await bob.recorder.wait_for(
        "attendees_joined", lambda e: alice.attendee.attendee_id in ids(e.attendees)
    )
    assert ids(bob.session.attendees()) == {alice.attendee.attendee_id, bob.attendee.attendee_id}
    assert alice.info in bob.session.attendees()

    # Data messages both ways, with sender ids; the sender's own observers do not get theirs.
    sent = await alice.session.send_message("chat", b'{"hello":"bob","n":1}', 0)
    assert sent.sender_attendee_id == alice.attendee.attendee_id
    got = await bob.recorder.wait_for("data_message_received")
    msg = got.data_message
    assert (msg.topic, msg.data) == ("chat", b'{"hello":"bob","n":1}')
    assert (msg.sender_attendee_id, msg.sender_external_user_id) == (
        alice.attendee.attendee_id,
        "alice",
    )
    assert json_format.MessageToDict(msg.json) == {"hello": "bob", "n": 1}
    assert not msg.throttled
    assert abs(msg.timestamp_ms - time.time() * 1000) < 60_000
    await bob.session.send_message("chat", b"plain text", 0)
    back = await alice.recorder.wait_for("data_message_received")
    assert back.data_message.sender_attendee_id == bob.attendee.attendee_id
    assert back.data_message.data == b"plain text"
    assert not back.data_message.HasField("json")
    # Bob's reply was sent after Alice's message arrived, so an echo would be here already.
    assert len(alice.recorder.of("data_message_received")) == 1

    # Mute is seen by the other, and kept in the roster for snapshots.
    await bob.session.set_muted(True)
    assert bob.session.muted
    muted = await alice.recorder.wait_for("attendees_muted")
    assert list(muted.attendees) == [bob.info]
    assert alice.session.muted_attendees() == [bob.info]
    await bob.session.set_muted(False)
    unmuted = await alice.recorder.wait_for("attendees_unmuted")
    assert list(unmuted.attendees) == [bob.info]
    assert alice.session.muted_attendees() == []

    # Bob leaves: Alice sees him leave (not drop); Bob stops with OK, once.
    await bob.session.stop()
    assert bob.session.state == session_pb2.SESSION_STATE_STOPPED
    assert bob.session.last_status is not None
    assert bob.session.last_status.code == types_pb2.SESSION_STATUS_CODE_OK
    left = await alice.recorder.wait_for("attendees_left")
    assert list(left.attendees) == [bob.info]
    assert alice.recorder.of("attendees_dropped") == []
    await bob.session.stop()  # idempotent
    stopped = bob.recorder.of("audio_session_stopped")
    assert [s.status.code for s in stopped] == [types_pb2.SESSION_STATUS_CODE_OK]

    # A stopped session can start again: Alice sees Bob come back.
    await bob.session.start()
    await bob.session.wait_started(TIMEOUT)
    await alice.recorder.wait_for(
        "attendees_joined", lambda e: e is not joined and bob.info in e.attendees
    )
    assert len([e for e in alice.recorder.of("attendees_joined") if bob.info in e.attendees]) == 2

    await bob.session.stop()
    await alice.session.stop()
    for who in (alice, bob):
        assert who.attendee.join_token not in caplog.text


async def test_wrong_join_token_stops_with_authentication_rejected(
    embedded: EmbeddedChime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    meeting = embedded.registry.create_meeting("tok-auth", "m")
    attendee = embedded.registry.create_attendee(meeting.meeting_id, "mallory")
    config = config_for(embedded, meeting, attendee)
    config.join_token = "not-the-token-" + attendee.join_token[:8]
    recorder = Recorder()
    session = ChimeSession(config, recorder)
    await session.start()
    with pytest.raises(SessionStoppedError) as err:
        await session.wait_started(TIMEOUT)
    code = types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED
    assert err.value.status.code == code
    stopped = await recorder.wait_for("audio_session_stopped")
    assert stopped.status.code == code
    assert session.state == session_pb2.SESSION_STATE_STOPPED
    assert session.last_status == stopped.status
    with pytest.raises(SessionStoppedError):
        await session.wait_started(1)
    await session.stop()
    assert len(recorder.of("audio_session_stopped")) == 1
    assert config.join_token not in caplog.text
    assert config.join_token not in repr(config)


async def test_delete_meeting_ends_every_session_with_call_ended(embedded: EmbeddedChime) -> None:
    meeting = embedded.registry.create_meeting("tok-end", "m")
    alice = await join(embedded, meeting, "alice")
    bob = await join(embedded, meeting, "bob")
    embedded.registry.delete_meeting(meeting.meeting_id)
    for who in (alice, bob):
        stopped = await who.recorder.wait_for("audio_session_stopped")
        assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_ENDED
        assert who.session.state == session_pb2.SESSION_STATE_STOPPED
        assert who.session.attendees() == []
        await who.session.stop()
        assert len(who.recorder.of("audio_session_stopped")) == 1


async def test_delete_attendee_ends_that_session_and_others_see_it_leave(
    embedded: EmbeddedChime,
) -> None:
    meeting = embedded.registry.create_meeting("tok-remove", "m")
    alice = await join(embedded, meeting, "alice")
    bob = await join(embedded, meeting, "bob")
    embedded.registry.delete_attendee(meeting.meeting_id, bob.attendee.attendee_id)
    stopped = await bob.recorder.wait_for("audio_session_stopped")
    assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_ENDED
    assert "411" in stopped.status.detail
    gone = await alice.recorder.wait_for("attendees_left")
    assert list(gone.attendees) == [bob.info]
    await alice.session.stop()


async def test_joining_again_from_another_device_ends_the_first_session(
    embedded: EmbeddedChime,
) -> None:
    meeting = embedded.registry.create_meeting("tok-device", "m")
    first = await join(embedded, meeting, "dana")
    second = ChimeSession(config_for(embedded, meeting, first.attendee), Recorder())
    await second.start()
    stopped = await first.recorder.wait_for("audio_session_stopped")
    assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_JOINED_FROM_ANOTHER_DEVICE
    await second.wait_started(TIMEOUT)
    assert second.attendees() == [first.info]
    await second.stop()


async def test_state_errors_and_message_validation(embedded: EmbeddedChime) -> None:
    meeting = embedded.registry.create_meeting("tok-state", "m")
    attendee = embedded.registry.create_attendee(meeting.meeting_id, "carol")
    session = ChimeSession(config_for(embedded, meeting, attendee), Recorder())
    assert session.state == session_pb2.SESSION_STATE_CREATED
    with pytest.raises(SessionStateError, match="CREATED"):
        await session.send_message("chat", b"x")
    with pytest.raises(SessionStateError, match="start it first"):
        await session.wait_started(1)
    await session.stop()  # nothing to stop
    await session.start()
    with pytest.raises(SessionStateError, match="CONNECTING"):
        await session.start()
    await session.wait_started(TIMEOUT)
    with pytest.raises(ValueError, match="topic"):
        await session.send_message("bad topic!", b"x")
    with pytest.raises(ValueError, match="2049 bytes"):
        await session.send_message("chat", b"x" * 2049)
    with pytest.raises(ValueError, match="lifetime_ms"):
        await session.send_message("chat", b"x", -1)
    await session.stop()
    with pytest.raises(SessionStateError, match="STOPPED"):
        await session.send_message("chat", b"x")


async def test_received_audio_reaches_the_output_consumer(embedded: EmbeddedChime) -> None:
    meeting = embedded.registry.create_meeting("tok-audio", "m")
    attendee = embedded.registry.create_attendee(meeting.meeting_id, "listener")
    heard: list[object] = []
    enough = asyncio.Event()

    async def consumer(track: MediaStreamTrack) -> None:
        while True:
            heard.append(await track.recv())
            if len(heard) >= 5:
                enough.set()

    session = ChimeSession(config_for(embedded, meeting, attendee), Recorder())
    session.set_audio_output(consumer)
    await session.start()
    await session.wait_started(TIMEOUT)
    async with asyncio.timeout(TIMEOUT):
        await enough.wait()
    assert all(isinstance(f, AudioFrame) and f.samples > 0 for f in heard)
    await session.stop()


@pytest.mark.slow
async def test_service_going_away_ends_the_session(embedded: EmbeddedChime) -> None:
    meeting = embedded.registry.create_meeting("tok-away", "m")
    alice = await join(embedded, meeting, "alice")
    await embedded.stop()
    stopped = await alice.recorder.wait_for("audio_session_stopped")
    assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_SERVER_HUNGUP
    assert alice.session.state == session_pb2.SESSION_STATE_STOPPED


# --- the client against bare servers that misbehave ---------------------------------------
async def bare_server(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/control/m", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"ws://127.0.0.1:{runner.addresses[0][1]}/control/m"


def bare_config(url: str) -> SessionConfig:
    return SessionConfig("m", "ext", "a", "user", "secret-token", url, "audio", "", "", "r")


async def test_refused_upgrade_403_is_authentication_rejected() -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403)

    runner, url = await bare_server(refuse)
    try:
        recorder = Recorder()
        session = ChimeSession(bare_config(url), recorder)
        await session.start()
        stopped = await recorder.wait_for("audio_session_stopped")
        assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED
        assert "secret-token" not in stopped.status.detail
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_silent_server_ends_the_join_with_a_status_not_a_hang(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[Frame] = []
    subprotocols: list[str] = []
    queries: list[str] = []

    async def mute_server(request: web.Request) -> web.WebSocketResponse:
        subprotocols.append(request.headers.get("Sec-WebSocket-Protocol", ""))
        queries.append(request.query_string)
        ws = web.WebSocketResponse(protocols=("_aws_wt_session",))
        await ws.prepare(request)
        # A frame type of a newer schema and a corrupt frame: skipped and reported, no crash.
        await ws.send_bytes(b"\x05" + bytes([0x08, 0x01, 0x10, 99]))
        await ws.send_bytes(b"\x05\xff\xff\xff")
        await ws.send_bytes(frames.encode(messages.ping(42)))
        async for msg in ws:
            decoded = frames.decode(msg.data)
            if decoded is not None:
                seen.append(decoded)
        return ws

    runner, url = await bare_server(mute_server)
    try:
        recorder = Recorder()
        session = ChimeSession(bare_config(url), recorder, join_timeout=1.0)
        await session.start()
        stopped = await recorder.wait_for("audio_session_stopped")
        assert stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_SERVICE_UNAVAILABLE
        assert "JOIN_ACK" in stopped.status.detail
        assert session.state == session_pb2.SESSION_STATE_STOPPED
    finally:
        await runner.cleanup()
    assert [[p.strip() for p in h.split(",")] for h in subprotocols] == [
        ["_aws_wt_session", "secret-token"]
    ]
    assert queries == ["X-Chime-Control-Protocol-Version=3&X-Amzn-Chime-Send-Close-On-Error=1"]
    types = [f.type for f in seen]
    assert types[:2] == [Frame.PING_PONG, Frame.JOIN]
    assert seen[0].ping_pong.type == sig.PING
    pongs = [f.ping_pong.ping_id for f in seen if f.ping_pong.type == sig.PONG]
    assert pongs == [42]
    assert "undecodable SdkSignalFrame" in caplog.text
    join_frame = seen[1].join
    assert join_frame.protocol_version == 2
    assert join_frame.flags == sig.HAS_STREAM_UPDATE
    assert join_frame.client_details.client_source == "chimed"
    assert join_frame.HasField("audio_session_id")


# --- plain protocol logic -----------------------------------------------------------------
def test_frames_round_trip_both_prefixes_and_skip_the_unknown() -> None:
    frame = messages.ping(7)
    wire = frames.encode(frame)
    assert wire[0] == 0x05
    assert frame.timestamp_ms > 0
    decoded = frames.decode(wire)
    assert decoded is not None and decoded.ping_pong.ping_id == 7
    legacy = frames.decode(b"\x02" + frame.SerializeToString())
    assert legacy is not None and legacy.type == Frame.PING_PONG
    assert frames.decode(b"\x09" + frame.SerializeToString()) is None  # unknown prefix
    # A frame type from a newer schema (99): skipped, not an error.
    newer = bytes([0x08, 0x01, 0x10, 99])
    assert frames.decode(b"\x05" + newer) is None
    with pytest.raises(frames.FrameError):
        frames.decode(b"\x05\xff\xff\xff")
    with pytest.raises(frames.FrameError):
        frames.decode(b"")


def test_subscribe_frame_matches_the_web_client() -> None:
    sub = messages.subscribe("v=0\r\n", "host:443/audio/m", True, "att").sub
    assert sub.duplex == sig.RX
    assert list(sub.receive_stream_ids) == [0]
    assert (sub.sdp_offer, sub.audio_host, sub.audio_muted) == ("v=0\r\n", "host:443/audio/m", True)
    (audio,) = sub.send_streams
    assert (audio.stream_id, audio.group_id, audio.framerate) == (1, 1, 15)
    assert (audio.max_bitrate_kbps, audio.avg_bitrate_bps) == (600, 400000)
    assert (audio.track_label, audio.attendee_id, audio.media_type) == (
        "AmazonChimeExpressAudio",
        "att",
        sig.AUDIO,
    )
    assert signaling_url("wss://x/control/m?a=1").endswith(
        "?a=1&X-Chime-Control-Protocol-Version=3&X-Amzn-Chime-Send-Close-On-Error=1"
    )


def entry(
    stream: int, attendee: str = "", muted: bool | None = None, dropped: bool = False
) -> sig.SdkAudioStreamIdInfo:
    e = sig.SdkAudioStreamIdInfo(audio_stream_id=stream)
    if attendee:
        e.attendee_id, e.external_user_id = attendee, f"ext-{attendee}"
    if muted is not None:
        e.muted = muted
    if dropped:
        e.dropped = True
    return e


def info_frame(*entries: sig.SdkAudioStreamIdInfo) -> sig.SdkAudioStreamIdInfoFrame:
    return sig.SdkAudioStreamIdInfoFrame(streams=list(entries))


def test_roster_batches_joins_mutes_leaves_and_drops() -> None:
    roster = Roster()
    events = roster.apply(info_frame(entry(1, "a", False), entry(2, "b", True), entry(3, "c")))
    assert [f for f, _ in events] == ["attendees_joined", "attendees_muted"]
    assert ids(events[0][1].attendees) == {"a", "b", "c"}  # type: ignore[attr-defined]
    assert ids(roster.muted_attendees()) == {"b"}
    assert roster.apply(info_frame(entry(1, muted=False))) == []  # no change, no event
    events = roster.apply(info_frame(entry(2, muted=False), entry(1, muted=True)))
    assert [(f, ids(e.attendees)) for f, e in events] == [  # type: ignore[attr-defined]
        ("attendees_muted", {"a"}),
        ("attendees_unmuted", {"b"}),
    ]
    events = roster.apply(info_frame(entry(1), entry(2, dropped=True)))
    assert [(f, ids(e.attendees)) for f, e in events] == [  # type: ignore[attr-defined]
        ("attendees_left", {"a"}),
        ("attendees_dropped", {"b"}),
    ]
    assert ids(roster.attendees()) == {"c"} and roster.muted_attendees() == []
    assert roster.attendees()[0].external_user_id == "ext-c"


def test_roster_rejoin_on_a_newer_stream_is_not_a_leave() -> None:
    roster = Roster()
    roster.apply(info_frame(entry(1, "a")))
    assert roster.apply(info_frame(entry(4, "a"))) == []  # already present
    assert roster.apply(info_frame(entry(1))) == []  # the old stream ends; a is still here
    assert roster.is_present("a")
    assert [f for f, _ in roster.apply(info_frame(entry(4)))] == ["attendees_left"]


def test_status_mapping() -> None:
    assert st.from_audio_status(403).code == st.AUTHENTICATION_REJECTED
    assert st.from_audio_status(410).code == st.CALL_ENDED
    assert st.from_audio_status(411).code == st.CALL_ENDED
    assert "411" in st.from_audio_status(411).detail
    assert st.from_audio_status(301).code == (
        types_pb2.SESSION_STATUS_CODE_AUDIO_JOINED_FROM_ANOTHER_DEVICE
    )
    assert st.from_audio_status(409).code == types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_AT_CAPACITY
    assert st.from_audio_status(503).code == st.SERVICE_UNAVAILABLE
    assert st.from_audio_status(599).code == st.INTERNAL_SERVER_ERROR
    assert st.from_audio_status(400).code == st.DISCONNECTED
    assert st.from_close(4410, "").code == st.CALL_ENDED
    assert st.from_close(4403, "").code == st.AUTHENTICATION_REJECTED
    assert st.from_close(1006, "gone").code == st.SERVER_HUNGUP


def test_data_messages_in_and_out() -> None:
    payload = sig.SdkDataMessagePayload(
        topic="t",
        data=json.dumps({"a": [1, "x"]}).encode(),
        sender_attendee_id="s",
        sender_external_user_id="ext",
        ingest_time_ns=1_700_000_000_123_456_789,
    )
    msg = received_data_message(payload)
    assert msg.timestamp_ms == 1_700_000_000_123
    assert json_format.MessageToDict(msg.json) == {"a": [1, "x"]}
    assert not msg.throttled
    payload.ingest_time_ns = 0
    payload.data = b"[1, 2]"  # JSON, but not an object
    throttled = received_data_message(payload)
    assert throttled.throttled and not throttled.HasField("json")
    validate_data_message("a-Z_9" * 7 + "x", b"x" * 2048, 0)
    for bad in ("", "x" * 37, "sp ace", "new\n"):
        with pytest.raises(ValueError):
            validate_data_message(bad, b"", 0)
    frame = messages.data_message("t", b"d", 5000)
    assert frame.data_message.messages[0].lifetime_ms == 5000
    assert not messages.data_message("t", b"d", 0).data_message.messages[0].HasField("lifetime_ms")


class _Ones(MediaStreamTrack):
    """A test source: unpaced 20 ms frames of a constant non-zero sample."""

    kind = "audio"

    async def recv(self) -> AudioFrame:
        frame = AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(b"\x01\x00" * 960)
        frame.sample_rate, frame.pts, frame.time_base = 48000, 0, Fraction(1, 48000)
        return frame


async def test_gate_sends_silence_while_muted_and_silence_track_is_48k() -> None:
    gate = GateTrack(_Ones())
    loud = await gate.recv()
    assert isinstance(loud, AudioFrame)  # no `opus` given: PCM frames, not packets
    assert bytes(loud.planes[0])[:2] == b"\x01\x00"
    gate.muted = True
    quiet = await gate.recv()
    assert isinstance(quiet, AudioFrame)
    assert (quiet.samples, quiet.sample_rate, quiet.layout.name) == (960, 48000, "mono")
    assert not any(bytes(quiet.planes[0]))
    silence = SilenceTrack()
    first, second = await silence.recv(), await silence.recv()
    assert (first.sample_rate, first.samples, first.pts, second.pts) == (48000, 960, 0, 960)
    silence.stop()
    gate.stop()
