"""The embedded service's meetings and attendees: plain in-memory state, no I/O.

The control plane creates and deletes through it; the signaling server authenticates join
tokens against it and listens for deletions to end sessions (410 meeting ended, 411 attendee
removed), as the real service does.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_REGION = "us-east-1"
# CreateMeeting tag that sets the meeting's video sender limit (Chime's default: 25).
VIDEO_SENDER_LIMIT_TAG = "chimed:video-sender-limit"
CONTENT = "#content"  # the content-share modality of an attendee id and join token


@dataclass
class Capabilities:
    audio: str = "SendReceive"
    video: str = "SendReceive"
    content: str = "SendReceive"

    def to_json(self) -> dict[str, str]:
        return {"Audio": self.audio, "Video": self.video, "Content": self.content}


@dataclass
class Attendee:
    attendee_id: str
    external_user_id: str
    join_token: str
    capabilities: Capabilities = field(default_factory=Capabilities)
    seq: int = 0  # creation order within the meeting: ListAttendees pages on it

    def to_json(self, include_join_token: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "ExternalUserId": self.external_user_id,
            "AttendeeId": self.attendee_id,
            "Capabilities": self.capabilities.to_json(),
        }
        if include_join_token:
            out["JoinToken"] = self.join_token
        return out


@dataclass
class Meeting:
    meeting_id: str
    external_meeting_id: str
    media_region: str
    client_request_token: str
    meeting_host_id: str = ""
    tenant_ids: list[str] = field(default_factory=list)
    attendees: dict[str, Attendee] = field(default_factory=dict)  # by attendee id, in order
    # CreateMeeting's MeetingFeatures as given (JSON); None when the request had none.
    meeting_features: dict[str, Any] | None = None
    primary_meeting_id: str = ""
    attendee_seq: int = 0
    tags: dict[str, str] = field(default_factory=dict)  # CreateMeeting's Tags

    def video_sender_limit(self, default: int) -> int:
        """The video senders this meeting admits: its tag's number, else `default`."""
        value = self.tags.get(VIDEO_SENDER_LIMIT_TAG, "")
        return int(value) if value.isdigit() else default

    def to_json(self, base_url: str, ws_url: str, turn_url: str) -> dict[str, object]:
        """CreateMeeting's Meeting shape, with URLs pointing at this embedded service."""
        m = self.meeting_id
        out: dict[str, object] = {
            "MeetingId": m,
            "ExternalMeetingId": self.external_meeting_id,
            "MediaRegion": self.media_region,
            "MeetingArn": f"arn:aws:chime:{self.media_region}:000000000000:meeting/{m}",
            "MediaPlacement": {
                "AudioHostUrl": f"{ws_url.split('://', 1)[1]}/audio/{m}",
                "AudioFallbackUrl": f"{ws_url}/audio/{m}",
                "SignalingUrl": f"{ws_url}/control/{m}",
                "TurnControlUrl": turn_url,
                "ScreenDataUrl": f"{ws_url}/screen/{m}",
                "ScreenViewingUrl": f"{ws_url}/screenview/{m}",
                "ScreenSharingUrl": f"{ws_url}/screen/{m}",
                "EventIngestionUrl": f"{base_url}/events",
            },
        }
        # TenantIdList has a minimum length of 1: absent rather than empty.
        if self.tenant_ids:
            out["TenantIds"] = list(self.tenant_ids)
        if self.meeting_host_id:
            out["MeetingHostId"] = self.meeting_host_id
        if self.meeting_features is not None:
            out["MeetingFeatures"] = self.meeting_features
        if self.primary_meeting_id:
            out["PrimaryMeetingId"] = self.primary_meeting_id
        return out


class RegistryError(Exception):
    """A control-plane error: the exception name botocore expects and its HTTP status."""

    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


def not_found(what: str) -> RegistryError:
    return RegistryError("NotFoundException", 404, f"{what} not found")


MeetingListener = Callable[[Meeting], None]
AttendeeListener = Callable[[Meeting, Attendee], None]


class Registry:
    """Meetings by id, attendees by id and join token, with deletion listeners."""

    def __init__(self) -> None:
        self.meetings: dict[str, Meeting] = {}
        self._by_request_token: dict[str, str] = {}
        self._by_join_token: dict[str, tuple[str, str]] = {}
        self._meeting_deleted: list[MeetingListener] = []
        self._attendee_deleted: list[AttendeeListener] = []

    # --- listeners -------------------------------------------------------------------------
    def on_meeting_deleted(self, listener: MeetingListener) -> None:
        self._meeting_deleted.append(listener)

    def on_attendee_deleted(self, listener: AttendeeListener) -> None:
        self._attendee_deleted.append(listener)

    # --- meetings --------------------------------------------------------------------------
    def create_meeting(
        self,
        client_request_token: str,
        external_meeting_id: str,
        media_region: str = DEFAULT_REGION,
        meeting_host_id: str = "",
        tenant_ids: list[str] | None = None,
        meeting_features: dict[str, Any] | None = None,
        primary_meeting_id: str = "",
        tags: dict[str, str] | None = None,
    ) -> Meeting:
        """Idempotent on the client request token, as the real service is."""
        existing = self._by_request_token.get(client_request_token)
        if existing is not None and existing in self.meetings:
            return self.meetings[existing]
        meeting = Meeting(
            meeting_id=str(uuid.uuid4()),
            external_meeting_id=external_meeting_id,
            media_region=media_region or DEFAULT_REGION,
            client_request_token=client_request_token,
            meeting_host_id=meeting_host_id,
            tenant_ids=list(tenant_ids or []),
            meeting_features=meeting_features,
            primary_meeting_id=primary_meeting_id,
            tags=dict(tags or {}),
        )
        self.meetings[meeting.meeting_id] = meeting
        self._by_request_token[client_request_token] = meeting.meeting_id
        return meeting

    def get_meeting(self, meeting_id: str) -> Meeting:
        meeting = self.meetings.get(meeting_id)
        if meeting is None:
            raise not_found(f"Meeting {meeting_id}")
        return meeting

    def delete_meeting(self, meeting_id: str) -> None:
        meeting = self.get_meeting(meeting_id)
        del self.meetings[meeting_id]
        self._by_request_token.pop(meeting.client_request_token, None)
        for attendee in meeting.attendees.values():
            self._by_join_token.pop(attendee.join_token, None)
        for listener in list(self._meeting_deleted):
            listener(meeting)

    # --- attendees -------------------------------------------------------------------------
    def create_attendee(
        self,
        meeting_id: str,
        external_user_id: str,
        capabilities: Capabilities | None = None,
    ) -> Attendee:
        """Idempotent on the external user id within a meeting, as the real service is."""
        meeting = self.get_meeting(meeting_id)
        for attendee in meeting.attendees.values():
            if attendee.external_user_id == external_user_id:
                return attendee
        attendee = Attendee(
            attendee_id=str(uuid.uuid4()),
            external_user_id=external_user_id,
            join_token=secrets.token_urlsafe(48),
            capabilities=capabilities or Capabilities(),
            seq=meeting.attendee_seq,
        )
        meeting.attendee_seq += 1
        meeting.attendees[attendee.attendee_id] = attendee
        self._by_join_token[attendee.join_token] = (meeting_id, attendee.attendee_id)
        return attendee

    def get_attendee(self, meeting_id: str, attendee_id: str) -> Attendee:
        attendee = self.get_meeting(meeting_id).attendees.get(attendee_id)
        if attendee is None:
            raise not_found(f"Attendee {attendee_id}")
        return attendee

    def delete_attendee(self, meeting_id: str, attendee_id: str) -> None:
        meeting = self.get_meeting(meeting_id)
        attendee = self.get_attendee(meeting_id, attendee_id)
        del meeting.attendees[attendee_id]
        self._by_join_token.pop(attendee.join_token, None)
        for listener in list(self._attendee_deleted):
            listener(meeting, attendee)

    def authenticate(self, meeting_id: str, join_token: str) -> tuple[Meeting, Attendee] | None:
        """The meeting and attendee a join token admits to this meeting, or None (403).

        `<join token>#content` admits the attendee's content share, as Chime does: a second,
        independent attendee `<attendee id>#content` with the same external user id."""
        content = join_token.endswith(CONTENT)
        found = self._by_join_token.get(join_token.removesuffix(CONTENT))
        if found is None or found[0] != meeting_id:
            return None
        meeting = self.meetings[found[0]]
        attendee = meeting.attendees[found[1]]
        if content:
            attendee = replace(
                attendee, attendee_id=attendee.attendee_id + CONTENT, join_token=join_token
            )
        return meeting, attendee
