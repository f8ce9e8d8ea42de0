"""The m-sections of an offer or answer, as the media server maps them to Chime's streams.

Chime's rule for a SUBSCRIBE (CHIME_VIDEO_AND_RECONNECT.md 2.2): its non-zero
receive_stream_ids line up, in order, with the offer's `recvonly` video sections; the client's
camera is the first video section it may send on. Plain parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import sdp
from chime.signaling import signaling_pb2 as pb

from chimed.embedded.video_forwarding import H264, VP8, codec_key


@dataclass(frozen=True)
class MediaSection:
    mid: str
    kind: str
    direction: str  # as written in the SDP (the offerer's point of view for an offer)
    payload_types: dict[str, int] = field(default_factory=dict)  # codec key -> first PT
    constrained_baseline: bool = False  # offers H.264 constrained baseline (42e0xx)


def sections(text: str) -> list[MediaSection]:
    """Every audio and video m-section, in order."""
    out = []
    for media in sdp.SessionDescription.parse(text).media:
        if media.kind not in ("audio", "video"):
            continue
        payload_types: dict[str, int] = {}
        baseline = False
        for codec in media.rtp.codecs:
            key = codec_key(codec.name, codec.parameters)
            if key is None or codec.payloadType is None:
                continue
            payload_types.setdefault(key, codec.payloadType)
            profile = str(codec.parameters.get("profile-level-id", "")).lower()
            if key == H264 and profile.startswith("42e0"):
                baseline = True
        direction = media.direction or "sendrecv"
        if media.port == 0:
            direction = "inactive"  # a stopped transceiver's section
        out.append(
            MediaSection(str(media.rtp.muxId or ""), media.kind, direction, payload_types, baseline)
        )
    return out


@dataclass(frozen=True)
class VideoLayout:
    """Which video sections of an offer are what."""

    camera: str | None  # the mid of the section the client may send its camera on
    receive: dict[str, int]  # mid of each recvonly section -> the stream id it asks for


def video_layout(offer: list[MediaSection], receive_stream_ids: list[int]) -> VideoLayout:
    camera = next(
        (s.mid for s in offer if s.kind == "video" and s.direction in ("sendrecv", "sendonly")),
        None,
    )
    wanted = iter([s for s in receive_stream_ids if s != 0])
    receive: dict[str, int] = {}
    for section in offer:
        if section.kind == "video" and section.direction == "recvonly":
            stream_id = next(wanted, None)
            if stream_id is None:
                break
            receive[section.mid] = stream_id
    return VideoLayout(camera, receive)


def receive_capabilities(offer: list[MediaSection]) -> frozenset[int]:
    """The video codecs a client can decode, as INDEX capabilities, from its offer's video
    sections (only those the server forwards: VP8, H.264 constrained baseline)."""
    out: set[int] = set()
    for section in offer:
        if section.kind != "video":
            continue
        if VP8 in section.payload_types:
            out.add(pb.VP8)
        if section.constrained_baseline:
            out.add(pb.H264_CONSTRAINED_BASELINE_PROFILE)
    return frozenset(out)
