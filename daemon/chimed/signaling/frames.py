"""The signaling WebSocket's binary messages: one type byte, then one SdkSignalFrame.

The web client prefixes 0x05 and the C++ client 0x02; both are accepted and 0x05 is sent. A
frame whose type this schema does not know (a newer service) is skipped, never an error; bytes
that do not parse are a FrameError for the caller to report (the client ends its session, the
embedded server skips the message). Both sides of the socket use this module.
"""

from __future__ import annotations

import time

from chime.signaling import signaling_pb2
from google.protobuf.message import DecodeError

Frame = signaling_pb2.SdkSignalFrame

PREFIX_RTC = 0x05  # the web client's prefix, the one we send
PREFIX_LEGACY = 0x02  # the C++ client's prefix
ACCEPTED_PREFIXES = frozenset((PREFIX_RTC, PREFIX_LEGACY))


class FrameError(Exception):
    """A signaling message that could not be decoded."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def encode(frame: Frame, *, partial: bool = False) -> bytes:
    """The wire bytes of a frame; stamps timestamp_ms (required on the wire) when unset.
    `partial` sends a frame whose nested messages lack required fields instead of raising
    (the embedded server answers what it can; a client must send only complete frames)."""
    if not frame.timestamp_ms:
        frame.timestamp_ms = now_ms()
    body = frame.SerializePartialToString() if partial else frame.SerializeToString()
    return bytes((PREFIX_RTC,)) + body


def decode(data: bytes) -> Frame | None:
    """The frame in a binary message, or None for a message to skip (unknown prefix or type)."""
    if not data:
        raise FrameError("empty signaling message")
    if data[0] not in ACCEPTED_PREFIXES:
        return None
    frame = Frame()
    try:
        frame.ParseFromString(data[1:])
    except DecodeError as e:
        raise FrameError(f"undecodable SdkSignalFrame ({len(data)} bytes): {e}") from None
    # An enum value this schema lacks lands in the unknown fields, leaving `type` unset.
    if not frame.HasField("type"):
        return None
    return frame


def type_name(frame: Frame) -> str:
    return Frame.Type.Name(frame.type)
