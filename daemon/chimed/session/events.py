"""What a session emits: one event of one observer kind at a time, to an EventSink."""

from __future__ import annotations

import enum
from typing import Protocol

from google.protobuf.message import Message


class ObserverKind(enum.Enum):
    ACTIVE_SPEAKER = "active_speaker"
    AUDIO_VIDEO = "audio_video"
    DATA_MESSAGE = "data_message"
    DEVICE = "device"
    REALTIME = "realtime"
    TILE = "tile"


class EventSink(Protocol):
    def emit(self, kind: ObserverKind, field: str, payload: Message) -> None:
        """One event: `field` is the oneof member of that kind's event message in
        chime/v1/events.proto, `payload` the member message."""
