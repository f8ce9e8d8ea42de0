"""MeetingService over gRPC (boto3 inside the daemon), and boto3 directly against the daemon's
embedded control plane: both paths see the same meetings."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from chime.client import AsyncChimed
from chime.v1 import meeting_pb2, types_pb2

from tests.daemon_proc import DaemonProcess
from tests.helpers import meetings_client

pytestmark = pytest.mark.daemon

M = meeting_pb2


async def _code(coro: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details() or ""


async def test_meeting_lifecycle(chimed: AsyncChimed) -> None:
    created = await chimed.meetings.CreateMeeting(
        M.CreateMeetingRequest(external_meeting_id="lifecycle", client_request_token="tok-1")
    )
    meeting = created.meeting
    assert meeting.meeting_id and meeting.media_region == "us-east-1"
    assert meeting.media_placement.signaling_url.startswith("ws://127.0.0.1:")
    again = await chimed.meetings.CreateMeeting(
        M.CreateMeetingRequest(external_meeting_id="lifecycle", client_request_token="tok-1")
    )
    assert again.meeting.meeting_id == meeting.meeting_id  # idempotent on the token
    got = await chimed.meetings.GetMeeting(M.GetMeetingRequest(meeting_id=meeting.meeting_id))
    assert got.meeting == meeting

    attendee = (
        await chimed.meetings.CreateAttendee(
            M.CreateAttendeeRequest(
                meeting_id=meeting.meeting_id,
                external_user_id="carol",
                capabilities=types_pb2.AttendeeCapabilities(
                    audio=types_pb2.MEDIA_CAPABILITY_SEND_RECEIVE,
                    video=types_pb2.MEDIA_CAPABILITY_RECEIVE,
                    content=types_pb2.MEDIA_CAPABILITY_NONE,
                ),
            )
        )
    ).attendee
    assert attendee.join_token  # CreateAttendee returns the token, as AWS does
    assert attendee.capabilities.video == types_pb2.MEDIA_CAPABILITY_RECEIVE
    got_a = await chimed.meetings.GetAttendee(
        M.GetAttendeeRequest(meeting_id=meeting.meeting_id, attendee_id=attendee.attendee_id)
    )
    assert got_a.attendee.join_token == ""
    assert got_a.attendee.external_user_id == "carol"
    with_token = await chimed.meetings.GetAttendee(
        M.GetAttendeeRequest(
            meeting_id=meeting.meeting_id, attendee_id=attendee.attendee_id, include_join_token=True
        )
    )
    assert with_token.attendee.join_token == attendee.join_token

    for i in range(4):
        await chimed.meetings.CreateAttendee(
            M.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id=f"user-{i}")
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await chimed.meetings.ListAttendees(
            M.ListAttendeesRequest(meeting_id=meeting.meeting_id, page_size=2, page_token=token)
        )
        assert len(page.attendees) <= 2
        assert all(not a.join_token for a in page.attendees)
        seen += [a.external_user_id for a in page.attendees]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(["carol", "user-0", "user-1", "user-2", "user-3"])

    await chimed.meetings.DeleteAttendee(
        M.DeleteAttendeeRequest(meeting_id=meeting.meeting_id, attendee_id=attendee.attendee_id)
    )
    code, details = await _code(
        chimed.meetings.GetAttendee(
            M.GetAttendeeRequest(meeting_id=meeting.meeting_id, attendee_id=attendee.attendee_id)
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND and "NotFoundException" in details
    await chimed.meetings.DeleteMeeting(M.DeleteMeetingRequest(meeting_id=meeting.meeting_id))
    code, _ = await _code(
        chimed.meetings.GetMeeting(M.GetMeetingRequest(meeting_id=meeting.meeting_id))
    )
    assert code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("call", "request_", "fragment"),
    [
        ("CreateMeeting", M.CreateMeetingRequest(external_meeting_id="x"), "external_meeting_id"),
        (
            "CreateMeeting",
            M.CreateMeetingRequest(external_meeting_id="ok", client_request_token="t"),
            "client_request_token",
        ),
        ("CreateAttendee", M.CreateAttendeeRequest(external_user_id="bob"), "meeting_id"),
        ("GetMeeting", M.GetMeetingRequest(), "meeting_id"),
        ("ListAttendees", M.ListAttendeesRequest(meeting_id="m", page_size=101), "page_size"),
    ],
)
async def test_meeting_bad_input(
    chimed: AsyncChimed, call: str, request_: Any, fragment: str
) -> None:
    code, details = await _code(getattr(chimed.meetings, call)(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in details


async def test_unknown_meeting_is_not_found(chimed: AsyncChimed) -> None:
    code, _ = await _code(
        chimed.meetings.CreateAttendee(
            M.CreateAttendeeRequest(
                meeting_id="00000000-0000-0000-0000-000000000000", external_user_id="bob"
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_boto3_against_the_daemons_embedded_service(
    chimed: AsyncChimed, daemon: DaemonProcess
) -> None:
    assert daemon.embedded_url
    client = meetings_client(daemon.embedded_url)
    out = await asyncio.to_thread(
        client.create_meeting,
        ClientRequestToken="boto3-direct",
        ExternalMeetingId="boto3",
        MediaRegion="us-east-1",
    )
    meeting_id = out["Meeting"]["MeetingId"]
    got = await chimed.meetings.GetMeeting(M.GetMeetingRequest(meeting_id=meeting_id))
    assert got.meeting.external_meeting_id == "boto3"
    with pytest.raises(client.exceptions.NotFoundException):
        await asyncio.to_thread(
            client.get_meeting, MeetingId="00000000-0000-0000-0000-000000000000"
        )
