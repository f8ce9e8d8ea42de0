"""The app back end's control plane: boto3 `chime-sdk-meetings`, against AWS or the embedded
service (same REST shapes, different endpoint). boto3 is blocking, so calls run in threads.
Requests are checked here (required ids, lengths) before they cost a round trip; the service's
errors come back as chimed's (chimed/errors.py)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import botocore.exceptions
from chime.v1 import types_pb2

from chimed import errors
from chimed.errors import ChimedError, InvalidArgument, require
from chimed.meetings.convert import attendee_from_json, capabilities_to_json, meeting_from_json

# botocore exception names -> chimed's errors.
_ERRORS: dict[str, type[ChimedError]] = {
    "BadRequestException": errors.InvalidArgument,
    "NotFoundException": errors.NotFound,
    "ForbiddenException": errors.PermissionDenied,
    "UnauthorizedException": errors.Unauthenticated,
    "ConflictException": errors.AlreadyExists,
    "LimitExceededException": errors.ResourceExhausted,
    "ThrottlingException": errors.ResourceExhausted,
    "UnprocessableEntityException": errors.FailedPrecondition,
    "ServiceUnavailableException": errors.Unavailable,
    "ServiceFailureException": errors.Internal,
}
MAX_PAGE_SIZE = 100


def _length(value: str, name: str, low: int = 2, high: int = 64) -> None:
    if not low <= len(value) <= high:
        raise InvalidArgument(f"{name} must be {low}-{high} characters, got {len(value)}")


class MeetingsClient:
    def __init__(self, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        kwargs: dict[str, Any] = {
            "region_name": region,
        }
        if endpoint_url is not None:
            # The embedded service accepts any SigV4 signature; don't require AWS credentials.
            kwargs.update(
                endpoint_url=endpoint_url,
                aws_access_key_id="chimed",
                aws_secret_access_key="chimed",
            )
        self._client_kwargs = kwargs
        self._client_obj: Any = None
        self._client_lock = threading.Lock()

    def _client(self) -> Any:
        """The boto3 client, made on first use: botocore's models cost ~15 MB and ~150 ms,
        which a daemon that never calls MeetingService should not pay."""
        with self._client_lock:
            if self._client_obj is None:
                import boto3
                import botocore.config

                retries = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"})
                session = boto3.session.Session()
                self._client_kwargs.setdefault("config", retries)
                self._client_obj = session.client("chime-sdk-meetings", **self._client_kwargs)
            return self._client_obj

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        def call() -> Any:
            return getattr(self._client(), operation)(**kwargs)

        try:
            return await asyncio.to_thread(call)
        except botocore.exceptions.ClientError as e:
            err = e.response.get("Error", {})
            error = _ERRORS.get(str(err.get("Code")), errors.Internal)
            raise error(f"{err.get('Code')}: {err.get('Message')}") from None
        except botocore.exceptions.ParamValidationError as e:
            raise errors.InvalidArgument(str(e)) from None
        except botocore.exceptions.NoCredentialsError:
            raise errors.FailedPrecondition("no AWS credentials are configured") from None
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
        ) as e:
            raise errors.Unavailable(str(e)) from None

    async def create_meeting(
        self,
        external_meeting_id: str,
        client_request_token: str = "",
        media_region: str = "",
        meeting_host_id: str = "",
    ) -> types_pb2.Meeting:
        _length(external_meeting_id, "external_meeting_id")
        if client_request_token:
            _length(client_request_token, "client_request_token")
        args: dict[str, Any] = {
            "ClientRequestToken": client_request_token or str(uuid.uuid4()),
            "ExternalMeetingId": external_meeting_id,
            "MediaRegion": media_region or self.region,
        }
        if meeting_host_id:
            args["MeetingHostId"] = meeting_host_id
        out = await self._call("create_meeting", **args)
        return meeting_from_json(out["Meeting"])

    async def get_meeting(self, meeting_id: str) -> types_pb2.Meeting:
        require(meeting_id, "meeting_id")
        out = await self._call("get_meeting", MeetingId=meeting_id)
        return meeting_from_json(out["Meeting"])

    async def delete_meeting(self, meeting_id: str) -> None:
        require(meeting_id, "meeting_id")
        await self._call("delete_meeting", MeetingId=meeting_id)

    async def create_attendee(
        self,
        meeting_id: str,
        external_user_id: str,
        capabilities: types_pb2.AttendeeCapabilities | None = None,
    ) -> types_pb2.Attendee:
        require(meeting_id, "meeting_id")
        _length(external_user_id, "external_user_id")
        args: dict[str, Any] = {"MeetingId": meeting_id, "ExternalUserId": external_user_id}
        caps = capabilities_to_json(capabilities) if capabilities is not None else {}
        if caps:
            args["Capabilities"] = caps
        out = await self._call("create_attendee", **args)
        return attendee_from_json(out["Attendee"])

    async def get_attendee(self, meeting_id: str, attendee_id: str) -> types_pb2.Attendee:
        require(meeting_id, "meeting_id")
        require(attendee_id, "attendee_id")
        out = await self._call("get_attendee", MeetingId=meeting_id, AttendeeId=attendee_id)
        return attendee_from_json(out["Attendee"])

    async def list_attendees(
        self, meeting_id: str, max_results: int = 0, next_token: str = ""
    ) -> tuple[list[types_pb2.Attendee], str]:
        """A page of the meeting's attendees (MAX_PAGE_SIZE when `max_results` is 0) and the
        token of the next page ("" after the last)."""
        require(meeting_id, "meeting_id")
        max_results = max_results or MAX_PAGE_SIZE
        if not 1 <= max_results <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}")
        args: dict[str, Any] = {"MeetingId": meeting_id, "MaxResults": max_results}
        if next_token:
            args["NextToken"] = next_token
        out = await self._call("list_attendees", **args)
        attendees = [attendee_from_json(a) for a in out.get("Attendees", [])]
        return attendees, str(out.get("NextToken", ""))

    async def delete_attendee(self, meeting_id: str, attendee_id: str) -> None:
        require(meeting_id, "meeting_id")
        require(attendee_id, "attendee_id")
        await self._call("delete_attendee", MeetingId=meeting_id, AttendeeId=attendee_id)
