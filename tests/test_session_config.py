"""What CreateSession builds a session from, in memory: the meeting and attendee as chime.v1
messages or as the JSON that boto3 and the AWS CLI print, and every way a request can be wrong,
each refused with a message naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chime.v1 import session_pb2, types_pb2
from chimed.errors import InvalidArgument
from chimed.session.config import SessionConfig
from chimed.session.manager import session_config

SIGNALING = "wss://signal.m1.ue1.app.chime.aws/control/m-1"
TOKEN = "secret-join-token"


def meeting(**placement: str) -> types_pb2.Meeting:
    urls = {
        "signaling_url": SIGNALING,
        "audio_host_url": "audio.example:3478",
        "audio_fallback_url": "wss://fallback.example/calls/m-1",
        "turn_control_url": "https://turn.example/v2/turn_sessions",
        **placement,
    }
    return types_pb2.Meeting(
        meeting_id="m-1",
        external_meeting_id="standup",
        media_region="us-east-1",
        media_placement=types_pb2.MediaPlacement(**urls),
    )


def attendee(attendee_id: str = "a-1", join_token: str = TOKEN) -> types_pb2.Attendee:
    return types_pb2.Attendee(
        attendee_id=attendee_id, external_user_id="alice", join_token=join_token
    )


def meeting_doc(**changes: Any) -> dict[str, Any]:
    """The Meeting object of CreateMeeting's output, with `changes` applied (None removes)."""
    doc: dict[str, Any] = {
        "MeetingId": "m-1",
        "ExternalMeetingId": "standup",
        "MediaRegion": "us-east-1",
        "MeetingArn": "arn:aws:chime:us-east-1:111122223333:meeting/m-1",
        "MediaPlacement": {
            "SignalingUrl": SIGNALING,
            "AudioHostUrl": "audio.example:3478",
            "AudioFallbackUrl": "wss://fallback.example/calls/m-1",
            "TurnControlUrl": "https://turn.example/v2/turn_sessions",
            "EventIngestionUrl": "https://data.example/v1/client-events",
        },
        "TenantIds": [],
    }
    return _apply(doc, changes)


def attendee_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "AttendeeId": "a-1",
        "ExternalUserId": "alice",
        "JoinToken": TOKEN,
        "Capabilities": {"Audio": "SendReceive", "Video": "None", "Content": "Receive"},
    }
    return _apply(doc, changes)


def _apply(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        target = doc["MediaPlacement"] if key in doc.get("MediaPlacement", {}) else doc
        if value is None:
            del target[key]
        else:
            target[key] = value
    return doc


def refused(request: session_pb2.CreateSessionRequest) -> str:
    with pytest.raises(InvalidArgument) as info:
        session_config(request)
    return info.value.message


EXPECTED = SessionConfig(
    meeting_id="m-1",
    external_meeting_id="standup",
    attendee_id="a-1",
    external_user_id="alice",
    join_token=TOKEN,
    signaling_url=SIGNALING,
    audio_host_url="audio.example:3478",
    audio_fallback_url="wss://fallback.example/calls/m-1",
    turn_control_url="https://turn.example/v2/turn_sessions",
    media_region="us-east-1",
    data_message_topic="default",
)


# --- what a session is built from ----------------------------------------------------------
@pytest.mark.parametrize(
    "request_",
    [
        session_pb2.CreateSessionRequest(meeting=meeting(), attendee=attendee()),
        # As boto3 returns them ({"Meeting": ...}) and as their inner objects alone.
        session_pb2.CreateSessionRequest(
            meeting_json=json.dumps({"Meeting": meeting_doc()}),
            attendee_json=json.dumps({"Attendee": attendee_doc()}),
        ),
        session_pb2.CreateSessionRequest(
            meeting_json=json.dumps(meeting_doc()), attendee_json=json.dumps(attendee_doc())
        ),
        # Either part in either form.
        session_pb2.CreateSessionRequest(
            meeting_json=json.dumps(meeting_doc()), attendee=attendee()
        ),
        session_pb2.CreateSessionRequest(
            meeting=meeting(), attendee_json=json.dumps({"Attendee": attendee_doc()})
        ),
    ],
    ids=["messages", "boto3 json", "inner json", "json meeting", "json attendee"],
)
def test_messages_and_json_give_the_same_session(
    request_: session_pb2.CreateSessionRequest,
) -> None:
    assert session_config(request_) == EXPECTED


def test_the_join_token_stays_out_of_the_repr() -> None:
    config = session_config(
        session_pb2.CreateSessionRequest(meeting=meeting(), attendee=attendee())
    )
    assert TOKEN not in repr(config)


def test_optional_urls_may_be_absent_and_the_signaling_url_may_be_plain_ws() -> None:
    doc = meeting_doc(AudioFallbackUrl=None, TurnControlUrl=None, SignalingUrl="ws://127.0.0.1:1/c")
    config = session_config(
        session_pb2.CreateSessionRequest(meeting_json=json.dumps(doc), attendee=attendee())
    )
    assert (config.audio_fallback_url, config.turn_control_url) == ("", "")
    assert config.signaling_url == "ws://127.0.0.1:1/c"


# --- topics ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("topic", "kept"), [("", "default"), ("chat_1-x", "chat_1-x"), ("t" * 36, "t" * 36)]
)
def test_a_valid_topic_is_kept_and_none_means_default(topic: str, kept: str) -> None:
    request = session_pb2.CreateSessionRequest(
        meeting=meeting(), attendee=attendee(), data_message_topic=topic
    )
    assert session_config(request).data_message_topic == kept


@pytest.mark.parametrize("topic", ["t" * 37, "two words", "café", "a/b", "a.b"])
def test_an_invalid_topic_is_refused(topic: str) -> None:
    request = session_pb2.CreateSessionRequest(
        meeting=meeting(), attendee=attendee(), data_message_topic=topic
    )
    assert refused(request).startswith("data_message_topic must match ^[a-zA-Z0-9_-]{1,36}$")


# --- what is refused -------------------------------------------------------------------------
def test_each_part_in_one_form_only() -> None:
    both_meetings = session_pb2.CreateSessionRequest(
        meeting=meeting(), meeting_json=json.dumps(meeting_doc()), attendee=attendee()
    )
    assert refused(both_meetings) == "give either meeting or meeting_json, not both"
    both_attendees = session_pb2.CreateSessionRequest(
        meeting=meeting(), attendee=attendee(), attendee_json=json.dumps(attendee_doc())
    )
    assert refused(both_attendees) == "give either attendee or attendee_json, not both"


def test_a_missing_part_is_named() -> None:
    assert refused(session_pb2.CreateSessionRequest(attendee=attendee())) == (
        "meeting is missing: give meeting or meeting_json"
    )
    assert refused(session_pb2.CreateSessionRequest(meeting=meeting())) == (
        "attendee is missing: give attendee or attendee_json"
    )


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            session_pb2.CreateSessionRequest(
                meeting=types_pb2.Meeting(media_placement=meeting().media_placement),
                attendee=attendee(),
            ),
            "meeting.meeting_id is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting=meeting(signaling_url=""), attendee=attendee()
            ),
            "meeting.media_placement.signaling_url is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting=meeting(audio_host_url=""), attendee=attendee()
            ),
            "meeting.media_placement.audio_host_url is missing",
        ),
        (
            session_pb2.CreateSessionRequest(meeting=meeting(), attendee=attendee(attendee_id="")),
            "attendee.attendee_id is missing",
        ),
        (
            session_pb2.CreateSessionRequest(meeting=meeting(), attendee=attendee(join_token="")),
            "attendee.join_token is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting_json=json.dumps(meeting_doc(MeetingId=None)), attendee=attendee()
            ),
            "meeting_json: Meeting.MeetingId is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting_json=json.dumps(meeting_doc(SignalingUrl=None)), attendee=attendee()
            ),
            "meeting_json: Meeting.MediaPlacement.SignalingUrl is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting_json=json.dumps(meeting_doc(AudioHostUrl=None)), attendee=attendee()
            ),
            "meeting_json: Meeting.MediaPlacement.AudioHostUrl is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting=meeting(), attendee_json=json.dumps(attendee_doc(AttendeeId=None))
            ),
            "attendee_json: Attendee.AttendeeId is missing",
        ),
        (
            session_pb2.CreateSessionRequest(
                meeting=meeting(), attendee_json=json.dumps(attendee_doc(JoinToken=None))
            ),
            "attendee_json: Attendee.JoinToken is missing",
        ),
    ],
)
def test_a_missing_field_is_named_as_the_caller_wrote_it(
    request_: session_pb2.CreateSessionRequest, message: str
) -> None:
    assert refused(request_) == message


@pytest.mark.parametrize(
    "url", ["https://signal.example/control/m-1", "signal.example:443", "ws:/x"]
)
def test_a_signaling_url_that_is_not_a_websocket_is_refused(url: str) -> None:
    as_message = session_pb2.CreateSessionRequest(
        meeting=meeting(signaling_url=url), attendee=attendee()
    )
    assert refused(as_message) == (
        "meeting.media_placement.signaling_url must be a ws:// or wss:// URL"
    )
    as_json = session_pb2.CreateSessionRequest(
        meeting_json=json.dumps(meeting_doc(SignalingUrl=url)), attendee=attendee()
    )
    assert refused(as_json) == (
        "meeting_json: Meeting.MediaPlacement.SignalingUrl must be a ws:// or wss:// URL"
    )


@pytest.mark.parametrize(
    ("meeting_json", "message"),
    [
        ("{", "meeting_json is not valid JSON: Expecting property name enclosed in double"),
        ("[]", "meeting_json must be a JSON object"),
        ('{"Meeting": "m-1"}', "meeting_json: Meeting must be an object"),
        ('{"MeetingId": 5}', "meeting_json: Meeting.MeetingId must be a string"),
        ('{"MediaPlacement": "x"}', "meeting_json: Meeting.MediaPlacement must be an object"),
        (
            '{"MediaPlacement": {"SignalingUrl": 1}}',
            "meeting_json: Meeting.MediaPlacement.SignalingUrl must be a string",
        ),
        ('{"TenantIds": [1]}', "meeting_json: Meeting.TenantIds must be a list of strings"),
    ],
)
def test_malformed_meeting_json_is_refused(meeting_json: str, message: str) -> None:
    request = session_pb2.CreateSessionRequest(meeting_json=meeting_json, attendee=attendee())
    assert refused(request).startswith(message)


def test_malformed_attendee_json_is_refused() -> None:
    def attendee_json(doc: dict[str, Any]) -> str:
        return refused(
            session_pb2.CreateSessionRequest(meeting=meeting(), attendee_json=json.dumps(doc))
        )

    assert attendee_json(attendee_doc(JoinToken=["x"])) == (
        "attendee_json: Attendee.JoinToken must be a string"
    )
    assert attendee_json(attendee_doc(Capabilities="all")) == (
        "attendee_json: Attendee.Capabilities must be an object"
    )
    assert attendee_json(attendee_doc(Capabilities={"Audio": "Loud"})) == (
        "attendee_json: Attendee.Capabilities.Audio must be one of SendReceive, Send, Receive, None"
    )
