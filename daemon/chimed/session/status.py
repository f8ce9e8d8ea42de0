"""Chime's numeric statuses (AUDIO_STATUS, error frames, WebSocket close codes) as the seed's
SessionStatusCode.

The mapping follows the web client's MeetingSessionStatus, folded onto the seed's codes:
- 410 (meeting ended) is AUDIO_CALL_ENDED;
- 411 (attendee removed) has no seed code of its own: AUDIO_CALL_ENDED is the closest (the
  call ended for this attendee and cannot be rejoined with that token); the detail says 411;
- 302 is AUDIO_DISCONNECT_AUDIO, as the web client maps it (AudioDisconnectAudio);
- any other non-2xx status is AUDIO_DISCONNECTED, again as the web client does.
"""

from __future__ import annotations

from chime.v1 import types_pb2

Code = types_pb2.SessionStatusCode

OK = types_pb2.SESSION_STATUS_CODE_OK
AUTHENTICATION_REJECTED = types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED
CALL_ENDED = types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_ENDED
SERVER_HUNGUP = types_pb2.SESSION_STATUS_CODE_AUDIO_SERVER_HUNGUP
DISCONNECTED = types_pb2.SESSION_STATUS_CODE_AUDIO_DISCONNECTED
SERVICE_UNAVAILABLE = types_pb2.SESSION_STATUS_CODE_AUDIO_SERVICE_UNAVAILABLE
INTERNAL_SERVER_ERROR = types_pb2.SESSION_STATUS_CODE_AUDIO_INTERNAL_SERVER_ERROR
UNKNOWN = types_pb2.SESSION_STATUS_CODE_UNKNOWN

AUDIO_STATUS_CODES: dict[int, tuple[types_pb2.SessionStatusCode.ValueType, str]] = {
    200: (OK, "ok"),
    301: (
        types_pb2.SESSION_STATUS_CODE_AUDIO_JOINED_FROM_ANOTHER_DEVICE,
        "joined from another device",
    ),
    302: (types_pb2.SESSION_STATUS_CODE_AUDIO_DISCONNECT_AUDIO, "audio disconnected"),
    403: (AUTHENTICATION_REJECTED, "authentication rejected"),
    409: (types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_AT_CAPACITY, "call at capacity"),
    410: (CALL_ENDED, "meeting ended"),
    411: (CALL_ENDED, "attendee removed"),
    500: (INTERNAL_SERVER_ERROR, "internal server error"),
    503: (SERVICE_UNAVAILABLE, "service unavailable"),
}

# Signaling error statuses that do not end the session (206: video at capacity, view only).
NON_TERMINAL_ERROR_STATUSES = frozenset({206})


def session_status(
    code: types_pb2.SessionStatusCode.ValueType, detail: str = ""
) -> types_pb2.SessionStatus:
    return types_pb2.SessionStatus(code=code, detail=detail)


def from_audio_status(status: int, description: str = "") -> types_pb2.SessionStatus:
    """An AUDIO_STATUS or error-frame status as a SessionStatus."""
    code, text = AUDIO_STATUS_CODES.get(
        status, (OK if 200 <= status < 300 else DISCONNECTED, "status")
    )
    if 500 <= status < 600 and status not in AUDIO_STATUS_CODES:
        code = INTERNAL_SERVER_ERROR
    detail = f"{text} ({status})"
    if description:
        detail += f": {description}"
    return session_status(code, detail)


def from_close(close_code: int | None, reason: str) -> types_pb2.SessionStatus:
    """A signaling socket the service (or the network) closed, as a SessionStatus.

    The service closes with 4000 + status (4410 meeting ended, 4403, 45xx server errors)."""
    if close_code is not None and 4000 <= close_code < 5000:
        status = from_audio_status(close_code - 4000, reason)
        if status.code == OK:
            status.code = SERVER_HUNGUP
        return status
    where = f"close code {close_code}" if close_code is not None else "no close code"
    return session_status(SERVER_HUNGUP, f"{reason} ({where})")


def code_name(status: types_pb2.SessionStatus) -> str:
    return types_pb2.SessionStatusCode.Name(status.code).removeprefix("SESSION_STATUS_CODE_")
