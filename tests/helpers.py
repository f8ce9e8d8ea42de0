"""Shared steps of the end-to-end tests: meetings, attendees and sessions through chimed's API."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import boto3
from chime.client import AsyncChimed
from chime.v1 import meeting_pb2, session_pb2, types_pb2


async def create_meeting(chimed: AsyncChimed, name: str | None = None) -> types_pb2.Meeting:
    name = name or f"m-{uuid.uuid4().hex[:8]}"
    response = await chimed.meetings.CreateMeeting(
        meeting_pb2.CreateMeetingRequest(external_meeting_id=name)
    )
    return response.meeting


async def create_attendee(
    chimed: AsyncChimed, meeting: types_pb2.Meeting, user: str
) -> types_pb2.Attendee:
    response = await chimed.meetings.CreateAttendee(
        meeting_pb2.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id=user)
    )
    return response.attendee


async def create_session(
    chimed: AsyncChimed, meeting: types_pb2.Meeting, user: str, **kwargs: Any
) -> session_pb2.Session:
    attendee = await create_attendee(chimed, meeting, user)
    response = await chimed.sessions.CreateSession(
        session_pb2.CreateSessionRequest(meeting=meeting, attendee=attendee, **kwargs)
    )
    return response.session


async def bot_in_named_meeting(
    chimed: AsyncChimed, name: str, devices: session_pb2.DeviceSelection | None = None
) -> tuple[types_pb2.Meeting, session_pb2.Session]:
    """A session of attendee "chimed-bot" in the meeting named `name`, made with the name as
    its idempotency token as the meeting page does, so a browser joining by name meets it."""
    created = await chimed.meetings.CreateMeeting(
        meeting_pb2.CreateMeetingRequest(client_request_token=name, external_meeting_id=name)
    )
    session = await create_session(chimed, created.meeting, "chimed-bot", devices=devices)
    return created.meeting, session


async def started_session(
    chimed: AsyncChimed, meeting: types_pb2.Meeting, user: str
) -> session_pb2.Session:
    session = await create_session(chimed, meeting, user)
    response = await chimed.sessions.Start(
        session_pb2.StartRequest(session_id=session.session_id, wait=True)
    )
    return response.session


async def wait_observers(
    chimed: AsyncChimed, session_id: str, kind: str, count: int = 1, timeout: float = 20.0
) -> None:
    """Until the session has `count` observer streams of `kind` (an ObserverCounts field).

    For tests of the count itself: to know one stream is registered, await its response
    headers (EventStream.registered)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await chimed.sessions.GetSession(session_pb2.GetSessionRequest(session_id=session_id))
        if getattr(got.session.observers, kind) == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{kind} observers never reached {count}")
        await asyncio.sleep(0.01)


def meetings_client(endpoint_url: str, **kwargs: Any) -> Any:
    """An unmodified boto3 chime-sdk-meetings client of the embedded control plane at
    `endpoint_url` (no accounts: any credentials)."""
    return boto3.client(
        "chime-sdk-meetings",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        **kwargs,
    )
