"""SessionService end to end: a real daemon process, real sessions in real embedded meetings."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from chime.client import AsyncChimed
from chime.v1 import audio_pb2, meeting_pb2, session_pb2, types_pb2
from google.protobuf import struct_pb2

from tests.helpers import (
    create_attendee,
    create_meeting,
    create_session,
    started_session,
    wait_observers,
)
from tests.streams import EventStream, attendee_ids

pytestmark = pytest.mark.daemon

S = session_pb2


async def _code(coro: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details() or ""


def _struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(obj)
    return s


async def test_create_get_list_delete(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "alice", data_message_topic="chat")
    assert session.state == S.SESSION_STATE_CREATED
    assert session.meeting_id == meeting.meeting_id
    assert session.data_message_topic == "chat"
    assert session.configuration.urls.signaling_url == meeting.media_placement.signaling_url
    assert session.credentials.join_token == ""  # redacted by default
    got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=session.session_id))
    assert got.session.credentials.join_token == ""
    assert got.session.attendee_id == session.attendee_id
    with_token = await chimed.sessions.GetSession(
        S.GetSessionRequest(session_id=session.session_id, include_join_token=True)
    )
    assert len(with_token.session.credentials.join_token) > 10
    listed = await chimed.sessions.ListSessions(S.ListSessionsRequest())
    assert session.session_id in {s.session_id for s in listed.sessions}
    assert all(not s.credentials.join_token for s in listed.sessions)
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=session.session_id))
    code, _ = await _code(
        chimed.sessions.GetSession(S.GetSessionRequest(session_id=session.session_id))
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def _pages(
    chimed: AsyncChimed, page_size: int, page_token: str = ""
) -> list[tuple[list[str], str]]:
    """(session ids, next_page_token) of each page from page_token to the last."""
    pages = []
    while True:
        got = await chimed.sessions.ListSessions(
            S.ListSessionsRequest(page_size=page_size, page_token=page_token)
        )
        page_token = got.next_page_token
        pages.append(([s.session_id for s in got.sessions], page_token))
        if not page_token:
            return pages


def _ids(pages: list[tuple[list[str], str]]) -> list[str]:
    return [sid for ids, _ in pages for sid in ids]


async def test_list_sessions_pages_oldest_first(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    created = [(await create_session(chimed, meeting, f"p{i}")).session_id for i in range(101)]
    try:
        first = await chimed.sessions.ListSessions(S.ListSessionsRequest())
        assert len(first.sessions) == 100 and first.next_page_token  # the default page size
        everything = _ids(await _pages(chimed, 100))
        assert everything[-101:] == created  # oldest first; nothing repeated or missed
        assert _ids(await _pages(chimed, 7)) == everything
        token_after = {ids[0]: token for ids, token in await _pages(chimed, 1)}

        # Deleting the session a token points after shifts nothing; a new one comes last.
        gone = created.pop(2)
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=gone))
        created.append((await create_session(chimed, meeting, "late")).session_id)
        assert _ids(await _pages(chimed, 3, token_after[gone])) == created[2:]
    finally:
        for sid in created:
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


@pytest.mark.parametrize(
    ("request_kwargs", "fragment"),
    [
        ({"page_size": -1}, "page_size must be 1-100, or 0 for 100"),
        ({"page_size": 101}, "page_size must be 1-100, or 0 for 100"),
        ({"page_token": "not a token"}, "page_token is not one this RPC returned"),
        ({"page_token": "WyJ4Il0"}, "page_token is not one this RPC returned"),  # ["x"]
    ],
)
async def test_list_sessions_rejects_bad_paging(
    chimed: AsyncChimed, request_kwargs: dict[str, Any], fragment: str
) -> None:
    code, details = await _code(
        chimed.sessions.ListSessions(S.ListSessionsRequest(**request_kwargs))
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, fragment)


async def test_create_from_boto3_json(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    attendee = await create_attendee(chimed, meeting, "json-user")
    meeting_json = json.dumps(
        {
            "Meeting": {
                "MeetingId": meeting.meeting_id,
                "ExternalMeetingId": meeting.external_meeting_id,
                "MediaRegion": meeting.media_region,
                "MediaPlacement": {
                    "AudioHostUrl": meeting.media_placement.audio_host_url,
                    "SignalingUrl": meeting.media_placement.signaling_url,
                    "TurnControlUrl": meeting.media_placement.turn_control_url,
                },
            }
        }
    )
    attendee_json = json.dumps(
        {
            "Attendee": {
                "AttendeeId": attendee.attendee_id,
                "ExternalUserId": attendee.external_user_id,
                "JoinToken": attendee.join_token,
            }
        }
    )
    response = await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting_json=meeting_json, attendee_json=attendee_json)
    )
    session = response.session
    assert session.attendee_id == attendee.attendee_id
    assert session.external_user_id == "json-user"
    assert session.data_message_topic == "default"
    started = await chimed.sessions.Start(S.StartRequest(session_id=session.session_id, wait=True))
    assert started.session.state == S.SESSION_STATE_STARTED
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=session.session_id))


@pytest.mark.parametrize(
    ("request_kwargs", "fragment"),
    [
        ({"meeting_json": "{not json", "attendee_json": "{}"}, "meeting_json is not valid JSON"),
        (
            {"meeting_json": '{"Meeting": {"MediaPlacement": {}}}', "attendee_json": "{}"},
            "MeetingId is missing",
        ),
        (
            {
                "meeting_json": '{"Meeting": {"MeetingId": "m", "MediaPlacement": '
                '{"AudioHostUrl": "a", "SignalingUrl": "https://x"}}}',
                "attendee_json": "{}",
            },
            "SignalingUrl must be a ws:// or wss:// URL",
        ),
        (
            {"meeting_json": '{"Meeting": {"MeetingId": 5}}', "attendee_json": "{}"},
            "MeetingId must be a string",
        ),
        ({"attendee_json": "{}"}, "meeting is missing"),
    ],
)
async def test_create_rejects_malformed_documents(
    chimed: AsyncChimed, request_kwargs: dict[str, Any], fragment: str
) -> None:
    before = await chimed.sessions.ListSessions(S.ListSessionsRequest())
    code, details = await _code(
        chimed.sessions.CreateSession(S.CreateSessionRequest(**request_kwargs))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in details
    after = await chimed.sessions.ListSessions(S.ListSessionsRequest())
    assert len(after.sessions) == len(before.sessions)  # nothing half-created


async def test_create_rejects_bad_attendee_and_topic_and_duplicates(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    attendee = await create_attendee(chimed, meeting, "dup")
    no_token = types_pb2.Attendee(attendee_id=attendee.attendee_id)
    code, details = await _code(
        chimed.sessions.CreateSession(S.CreateSessionRequest(meeting=meeting, attendee=no_token))
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "attendee.join_token is missing")
    code, details = await _code(
        chimed.sessions.CreateSession(
            S.CreateSessionRequest(
                meeting=meeting, attendee=attendee, data_message_topic="no spaces"
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "data_message_topic" in details
    # A trailing newline is not part of the syntax ("$" alone would let it through).
    for field, value in (("data_message_topic", "chat\n"), ("session_id", "dup-1\n")):
        request = S.CreateSessionRequest(meeting=meeting, attendee=attendee)
        setattr(request, field, value)
        code, details = await _code(chimed.sessions.CreateSession(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details
    await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting=meeting, attendee=attendee, session_id="dup-1")
    )
    code, details = await _code(
        chimed.sessions.CreateSession(
            S.CreateSessionRequest(meeting=meeting, attendee=attendee, session_id="dup-1")
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, details = await _code(
        chimed.sessions.CreateSession(
            S.CreateSessionRequest(meeting=meeting, attendee=attendee, session_id="dup-2")
        )
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS and "dup-1" in details
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id="dup-1"))


async def test_unknown_session_is_not_found_everywhere(chimed: AsyncChimed) -> None:
    calls = [
        chimed.sessions.GetSession(S.GetSessionRequest(session_id="nope")),
        chimed.sessions.Start(S.StartRequest(session_id="nope")),
        chimed.sessions.Stop(S.StopRequest(session_id="nope")),
        chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id="nope")),
        chimed.sessions.SendMessage(S.SendMessageRequest(session_id="nope", message=_struct({}))),
        chimed.sessions.RemoveObservers(S.RemoveObserversRequest(session_id="nope")),
        chimed.audio.Mute(audio_pb2.MuteRequest(session_id="nope")),
    ]
    for call in calls:
        code, details = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert details == "session nope not found"
    stream = EventStream(
        chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id="nope"))
    )
    assert await stream.ended() == grpc.StatusCode.NOT_FOUND


async def test_start_stop_and_audio_video_events(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "av")
    sid = session.session_id
    av = EventStream(
        chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id=sid))
    )
    await av.registered()
    await chimed.sessions.Start(S.StartRequest(session_id=sid))
    first = await av.expect("audio_session_started_connecting")
    assert first.session_id == sid and first.sequence == 1 and first.time.seconds > 0
    await av.expect("audio_session_started")
    got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=sid))
    assert got.session.state == S.SESSION_STATE_STARTED
    assert got.session.observers.audio_video == 1
    code, _details = await _code(chimed.sessions.Start(S.StartRequest(session_id=sid)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    # A late observer first gets the current state.
    late = EventStream(
        chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id=sid))
    )
    await late.expect("audio_session_started")
    stopped = await chimed.sessions.Stop(S.StopRequest(session_id=sid))
    assert stopped.session.state == S.SESSION_STATE_STOPPED
    event = await av.expect("audio_session_stopped")
    assert event.audio_session_stopped.status.code == types_pb2.SESSION_STATUS_CODE_OK
    assert [e.sequence for e in av.events] == list(range(1, len(av.events) + 1))
    # Stop of a stopped session is a no-op; it can start again (rejoin).
    await chimed.sessions.Stop(S.StopRequest(session_id=sid))
    await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True))
    await av.expect("audio_session_started")
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
    assert await av.ended() == grpc.StatusCode.OK
    assert await late.ended() == grpc.StatusCode.OK


async def test_data_messages_between_sessions(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    bob = await started_session(chimed, meeting, "bob")
    inbox = EventStream(
        chimed.sessions.AddDataMessageObserver(
            S.AddDataMessageObserverRequest(session_id=alice.session_id)
        )
    )
    other_topic = EventStream(
        chimed.sessions.AddDataMessageObserver(
            S.AddDataMessageObserverRequest(session_id=alice.session_id, topics=["other"])
        )
    )
    await inbox.registered()
    await other_topic.registered()
    sent = await chimed.sessions.SendMessage(
        S.SendMessageRequest(session_id=bob.session_id, message=_struct({"text": "hi", "n": 2}))
    )
    assert sent.data_message.sender_attendee_id == bob.attendee_id
    event = await inbox.expect("data_message_received")
    message = event.data_message_received.data_message
    assert message.topic == "default"
    assert message.sender_attendee_id == bob.attendee_id
    assert message.sender_external_user_id == "bob"
    assert json.loads(message.data) == {"text": "hi", "n": 2}
    assert dict(message.json) == {"text": "hi", "n": 2.0}
    assert message.timestamp_ms > 0 and not message.throttled
    await chimed.sessions.SendMessage(
        S.SendMessageRequest(session_id=bob.session_id, topic="other", message=_struct({"x": True}))
    )
    event = await other_topic.expect("data_message_received")
    assert event.data_message_received.data_message.topic == "other"
    assert all(e.data_message_received.data_message.topic == "default" for e in inbox.events)
    for sid in (alice.session_id, bob.session_id):
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
    await inbox.close()
    await other_topic.close()


async def test_send_message_bad_input(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "sender")
    sid = session.session_id
    code, details = await _code(
        chimed.sessions.SendMessage(S.SendMessageRequest(session_id=sid, message=_struct({"a": 1})))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "start it first" in details
    await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True))
    code, details = await _code(
        chimed.sessions.SendMessage(
            S.SendMessageRequest(session_id=sid, message=_struct({"a": "x" * 2100}))
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 2048" in details
    code, details = await _code(
        chimed.sessions.SendMessage(
            S.SendMessageRequest(session_id=sid, topic="bad topic!", message=_struct({"a": 1}))
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "topic" in details
    code, details = await _code(chimed.sessions.SendMessage(S.SendMessageRequest(session_id=sid)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "message is missing" in details
    await chimed.sessions.Stop(S.StopRequest(session_id=sid))
    code, details = await _code(
        chimed.sessions.SendMessage(S.SendMessageRequest(session_id=sid, message=_struct({"a": 1})))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_observer_headers_mean_no_event_is_missed(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    bob = await started_session(chimed, meeting, "bob")
    # A data-message stream has no current state to send: its headers come before any event.
    call = chimed.sessions.AddDataMessageObserver(
        S.AddDataMessageObserverRequest(session_id=alice.session_id)
    )
    await asyncio.wait_for(call.initial_metadata(), 15)
    assert not call.done()  # headers of a live stream, not of one that ended
    call.cancel()
    # A message sent as soon as the headers are in reaches the stream, every time.
    for i in range(20):
        inbox = EventStream(
            chimed.sessions.AddDataMessageObserver(
                S.AddDataMessageObserverRequest(session_id=alice.session_id)
            )
        )
        await inbox.registered()
        await chimed.sessions.SendMessage(
            S.SendMessageRequest(session_id=bob.session_id, message=_struct({"i": i}))
        )
        event = await inbox.expect("data_message_received")
        assert event.data_message_received.data_message.json["i"] == i
        assert [e.sequence for e in inbox.events] == [1]
        await inbox.close()
    for sid in (alice.session_id, bob.session_id):
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_realtime_presence_and_mute(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    rt = EventStream(
        chimed.sessions.AddRealtimeObserver(
            S.AddRealtimeObserverRequest(session_id=alice.session_id)
        )
    )
    first = await rt.expect("attendees_joined")  # the current roster first
    assert alice.attendee_id in attendee_ids(first.attendees_joined)
    bob = await started_session(chimed, meeting, "bob")
    joined = await rt.expect("attendees_joined", lambda e: bob.attendee_id in attendee_ids(e))
    assert {a.external_user_id for a in joined.attendees_joined.attendees} >= {"bob"}
    muted = await chimed.audio.Mute(audio_pb2.MuteRequest(session_id=bob.session_id))
    assert muted.muted
    await rt.expect("attendees_muted", lambda e: bob.attendee_id in attendee_ids(e))
    got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=bob.session_id))
    assert got.session.muted
    await chimed.audio.Unmute(audio_pb2.UnmuteRequest(session_id=bob.session_id))
    await rt.expect("attendees_unmuted", lambda e: bob.attendee_id in attendee_ids(e))
    await chimed.sessions.Stop(S.StopRequest(session_id=bob.session_id))
    await rt.expect("attendees_left", lambda e: bob.attendee_id in attendee_ids(e))
    assert not any(e.WhichOneof("event") == "attendees_dropped" for e in rt.events)
    for sid in (alice.session_id, bob.session_id):
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
    assert await rt.ended() == grpc.StatusCode.OK


async def test_remove_observers_end_streams_cleanly(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "watcher")
    sid = session.session_id
    # (add, its request, remove, its request) per kind: stubs and messages of differing types.
    adders: dict[str, tuple[Any, Any, Any, Any]] = {
        "active_speaker": (
            chimed.sessions.AddActiveSpeakerObserver,
            S.AddActiveSpeakerObserverRequest,
            chimed.sessions.RemoveActiveSpeakerObserver,
            S.RemoveActiveSpeakerObserverRequest,
        ),
        "audio_video": (
            chimed.sessions.AddAudioVideoObserver,
            S.AddAudioVideoObserverRequest,
            chimed.sessions.RemoveAudioVideoObserver,
            S.RemoveAudioVideoObserverRequest,
        ),
        "data_message": (
            chimed.sessions.AddDataMessageObserver,
            S.AddDataMessageObserverRequest,
            chimed.sessions.RemoveDataMessageObserver,
            S.RemoveDataMessageObserverRequest,
        ),
        "device": (
            chimed.sessions.AddDeviceObserver,
            S.AddDeviceObserverRequest,
            chimed.sessions.RemoveDeviceObserver,
            S.RemoveDeviceObserverRequest,
        ),
        "realtime": (
            chimed.sessions.AddRealtimeObserver,
            S.AddRealtimeObserverRequest,
            chimed.sessions.RemoveRealtimeObserver,
            S.RemoveRealtimeObserverRequest,
        ),
        "tile": (
            chimed.sessions.AddTileObserver,
            S.AddTileObserverRequest,
            chimed.sessions.RemoveTileObserver,
            S.RemoveTileObserverRequest,
        ),
    }
    for kind, (add, add_req, remove, remove_req) in adders.items():
        # Several observers of one kind at once; one removed by id, the others by kind.
        streams = [EventStream(add(add_req(session_id=sid, observer_id=f"o{i}"))) for i in range(3)]
        for stream in streams:
            await stream.registered()
        one = await remove(remove_req(session_id=sid, observer_id="o1"))
        assert one.removed == 1
        assert await streams[1].ended() == grpc.StatusCode.OK
        rest = await remove(remove_req(session_id=sid))
        assert rest.removed == 2
        for stream in streams:
            assert await stream.ended() == grpc.StatusCode.OK
        await wait_observers(chimed, sid, kind, 0)
    streams = [
        EventStream(chimed.sessions.AddTileObserver(S.AddTileObserverRequest(session_id=sid))),
        EventStream(
            chimed.sessions.AddRealtimeObserver(S.AddRealtimeObserverRequest(session_id=sid))
        ),
    ]
    for stream in streams:
        await stream.registered()
    removed = await chimed.sessions.RemoveObservers(S.RemoveObserversRequest(session_id=sid))
    assert removed.removed == 2
    for stream in streams:
        assert await stream.ended() == grpc.StatusCode.OK
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_wrong_join_token_stops_with_authentication_rejected(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    attendee = await create_attendee(chimed, meeting, "intruder")
    attendee.join_token = "not-the-token"
    created = await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting=meeting, attendee=attendee)
    )
    sid = created.session.session_id
    av = EventStream(
        chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id=sid))
    )
    await av.registered()
    await chimed.sessions.Start(S.StartRequest(session_id=sid))
    event = await av.expect("audio_session_stopped")
    status = event.audio_session_stopped.status.code
    assert status == types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED
    got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=sid))
    assert got.session.state == S.SESSION_STATE_STOPPED
    assert got.session.last_status.code == status
    # Start with wait reports the failure as a status too.
    code, _details = await _code(chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True)))
    assert code in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_delete_meeting_and_attendee_end_sessions(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    bob = await started_session(chimed, meeting, "bob")
    av_alice = EventStream(
        chimed.sessions.AddAudioVideoObserver(
            S.AddAudioVideoObserverRequest(session_id=alice.session_id)
        )
    )
    av_bob = EventStream(
        chimed.sessions.AddAudioVideoObserver(
            S.AddAudioVideoObserverRequest(session_id=bob.session_id)
        )
    )
    rt_alice = EventStream(
        chimed.sessions.AddRealtimeObserver(
            S.AddRealtimeObserverRequest(session_id=alice.session_id)
        )
    )
    await rt_alice.expect("attendees_joined")
    await chimed.meetings.DeleteAttendee(
        meeting_pb2.DeleteAttendeeRequest(
            meeting_id=meeting.meeting_id, attendee_id=bob.attendee_id
        )
    )
    event = await av_bob.expect("audio_session_stopped")
    assert event.audio_session_stopped.status.code not in (
        types_pb2.SESSION_STATUS_CODE_OK,
        types_pb2.SESSION_STATUS_CODE_UNSPECIFIED,
    )
    await rt_alice.expect("attendees_left", lambda e: bob.attendee_id in attendee_ids(e))
    await chimed.meetings.DeleteMeeting(
        meeting_pb2.DeleteMeetingRequest(meeting_id=meeting.meeting_id)
    )
    event = await av_alice.expect("audio_session_stopped")
    assert event.audio_session_stopped.status.code == types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_ENDED
    for sid in (alice.session_id, bob.session_id):
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_non_json_data_arrives_as_raw_bytes(chimed: AsyncChimed, daemon: Any) -> None:
    """Another client (here chimed's own ChimeSession, in this test process) may send bytes
    that are not a JSON object: observers get them as raw data, with no json."""
    from chimed.session.chime_session import ChimeSession
    from chimed.session.config import SessionConfig
    from chimed.session.observers import ObserverHub

    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    inbox = EventStream(
        chimed.sessions.AddDataMessageObserver(
            S.AddDataMessageObserverRequest(session_id=alice.session_id)
        )
    )
    other = await create_attendee(chimed, meeting, "raw-sender")
    placement = meeting.media_placement
    config = SessionConfig(
        meeting.meeting_id,
        meeting.external_meeting_id,
        other.attendee_id,
        other.external_user_id,
        other.join_token,
        placement.signaling_url,
        placement.audio_host_url,
        placement.audio_fallback_url,
        placement.turn_control_url,
        meeting.media_region,
    )
    await inbox.registered()
    sender = ChimeSession(config, ObserverHub("raw"))
    await sender.start()
    try:
        await sender.wait_started(15)
        for payload in (b"\xff\x00 not json", b"[1, 2, 3]"):
            await sender.send_message("default", payload)
            event = await inbox.expect("data_message_received")
            message = event.data_message_received.data_message
            assert message.data == payload
            assert not message.HasField("json")
            assert message.sender_attendee_id == other.attendee_id
    finally:
        await sender.stop()
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=alice.session_id))
    await inbox.close()
