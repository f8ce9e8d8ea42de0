"""What one attendee needs to join: the meeting's MediaPlacement and the attendee's token."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SessionConfig:
    meeting_id: str
    external_meeting_id: str
    attendee_id: str
    external_user_id: str
    join_token: str = field(repr=False)  # a secret: kept out of reprs and logs
    signaling_url: str
    audio_host_url: str
    audio_fallback_url: str
    turn_control_url: str
    media_region: str
    data_message_topic: str = "default"
