"""chime-sdk-meetings JSON (as boto3 and the AWS CLI give it) to and from chime.v1 messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chime.v1 import types_pb2

from chimed.errors import InvalidArgument

_PLACEMENT_FIELDS = {
    "AudioHostUrl": "audio_host_url",
    "AudioFallbackUrl": "audio_fallback_url",
    "SignalingUrl": "signaling_url",
    "TurnControlUrl": "turn_control_url",
    "ScreenDataUrl": "screen_data_url",
    "ScreenViewingUrl": "screen_viewing_url",
    "ScreenSharingUrl": "screen_sharing_url",
    "EventIngestionUrl": "event_ingestion_url",
}
_CAPABILITIES = {
    "SendReceive": types_pb2.MEDIA_CAPABILITY_SEND_RECEIVE,
    "Send": types_pb2.MEDIA_CAPABILITY_SEND,
    "Receive": types_pb2.MEDIA_CAPABILITY_RECEIVE,
    "None": types_pb2.MEDIA_CAPABILITY_NONE,
}
_CAPABILITY_NAMES = {v: k for k, v in _CAPABILITIES.items()}


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}.{key} must be a string")
    return value


def meeting_from_json(obj: Mapping[str, Any], where: str = "Meeting") -> types_pb2.Meeting:
    placement = obj.get("MediaPlacement") or {}
    if not isinstance(placement, dict):
        raise InvalidArgument(f"{where}.MediaPlacement must be an object")
    meeting = types_pb2.Meeting(
        meeting_id=_str(obj, "MeetingId", where),
        external_meeting_id=_str(obj, "ExternalMeetingId", where),
        media_region=_str(obj, "MediaRegion", where),
        meeting_host_id=_str(obj, "MeetingHostId", where),
        meeting_arn=_str(obj, "MeetingArn", where),
        primary_meeting_id=_str(obj, "PrimaryMeetingId", where),
    )
    for key, attr in _PLACEMENT_FIELDS.items():
        setattr(meeting.media_placement, attr, _str(placement, key, f"{where}.MediaPlacement"))
    tenants = obj.get("TenantIds") or []
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise InvalidArgument(f"{where}.TenantIds must be a list of strings")
    meeting.tenant_ids.extend(tenants)
    return meeting


def attendee_from_json(obj: Mapping[str, Any], where: str = "Attendee") -> types_pb2.Attendee:
    attendee = types_pb2.Attendee(
        attendee_id=_str(obj, "AttendeeId", where),
        external_user_id=_str(obj, "ExternalUserId", where),
        join_token=_str(obj, "JoinToken", where),
    )
    caps = obj.get("Capabilities") or {}
    if not isinstance(caps, dict):
        raise InvalidArgument(f"{where}.Capabilities must be an object")
    for key, attr in (("Audio", "audio"), ("Video", "video"), ("Content", "content")):
        if key in caps:
            if caps[key] not in _CAPABILITIES:
                raise InvalidArgument(
                    f"{where}.Capabilities.{key} must be one of {', '.join(_CAPABILITIES)}"
                )
            setattr(attendee.capabilities, attr, _CAPABILITIES[caps[key]])
    return attendee


def capabilities_to_json(caps: types_pb2.AttendeeCapabilities) -> dict[str, str]:
    out = {}
    for key, value in (("Audio", caps.audio), ("Video", caps.video), ("Content", caps.content)):
        if value:
            out[key] = _CAPABILITY_NAMES[value]
    return out


def parse_document(text: str, key: str, field: str) -> dict[str, Any]:
    """Parse what CreateMeeting/CreateAttendee printed: {"Meeting": {...}} or the inner object."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{field} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{field} must be a JSON object")
    inner = doc.get(key, doc)
    if not isinstance(inner, dict):
        raise InvalidArgument(f"{field}: {key} must be an object")
    return inner
