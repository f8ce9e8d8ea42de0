"""MeetingService: the control plane through boto3, against AWS or the embedded service
(meetings/client.py, which checks the requests)."""

from __future__ import annotations

from typing import Any

import grpc
from chime.v1 import meeting_pb2, meeting_pb2_grpc, types_pb2

from chimed.meetings.client import MeetingsClient
from chimed.server.errors import Servicer, unary

Ctx = grpc.aio.ServicerContext[Any, Any]


def _redact(attendee: types_pb2.Attendee, include_join_token: bool) -> types_pb2.Attendee:
    if not include_join_token:
        attendee.ClearField("join_token")
    return attendee


class MeetingService(meeting_pb2_grpc.MeetingServiceServicer, Servicer):
    def __init__(self, client: MeetingsClient, *, token: str | None) -> None:
        self.client = client
        self.token = token

    @unary
    async def CreateMeeting(
        self, request: meeting_pb2.CreateMeetingRequest, context: Ctx
    ) -> meeting_pb2.CreateMeetingResponse:
        meeting = await self.client.create_meeting(
            request.external_meeting_id,
            request.client_request_token,
            request.media_region,
            request.meeting_host_id,
        )
        return meeting_pb2.CreateMeetingResponse(meeting=meeting)

    @unary
    async def GetMeeting(
        self, request: meeting_pb2.GetMeetingRequest, context: Ctx
    ) -> meeting_pb2.GetMeetingResponse:
        return meeting_pb2.GetMeetingResponse(
            meeting=await self.client.get_meeting(request.meeting_id)
        )

    @unary
    async def DeleteMeeting(
        self, request: meeting_pb2.DeleteMeetingRequest, context: Ctx
    ) -> meeting_pb2.DeleteMeetingResponse:
        await self.client.delete_meeting(request.meeting_id)
        return meeting_pb2.DeleteMeetingResponse()

    @unary
    async def CreateAttendee(
        self, request: meeting_pb2.CreateAttendeeRequest, context: Ctx
    ) -> meeting_pb2.CreateAttendeeResponse:
        caps = request.capabilities if request.HasField("capabilities") else None
        attendee = await self.client.create_attendee(
            request.meeting_id, request.external_user_id, caps
        )
        return meeting_pb2.CreateAttendeeResponse(attendee=attendee)

    @unary
    async def GetAttendee(
        self, request: meeting_pb2.GetAttendeeRequest, context: Ctx
    ) -> meeting_pb2.GetAttendeeResponse:
        attendee = await self.client.get_attendee(request.meeting_id, request.attendee_id)
        return meeting_pb2.GetAttendeeResponse(
            attendee=_redact(attendee, request.include_join_token)
        )

    @unary
    async def ListAttendees(
        self, request: meeting_pb2.ListAttendeesRequest, context: Ctx
    ) -> meeting_pb2.ListAttendeesResponse:
        attendees, token = await self.client.list_attendees(
            request.meeting_id, request.page_size, request.page_token
        )
        return meeting_pb2.ListAttendeesResponse(
            attendees=[_redact(a, request.include_join_token) for a in attendees],
            next_page_token=token,
        )

    @unary
    async def DeleteAttendee(
        self, request: meeting_pb2.DeleteAttendeeRequest, context: Ctx
    ) -> meeting_pb2.DeleteAttendeeResponse:
        await self.client.delete_attendee(request.meeting_id, request.attendee_id)
        return meeting_pb2.DeleteAttendeeResponse()
