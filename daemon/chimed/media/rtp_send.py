"""chimed's RTP loop for its gate track, in place of aiortc's RTCRtpSender._run_rtp.

aiortc's loop is general: per packet it takes an av.Packet from the track, converts its
timestamp through Fractions, builds an RtpPacket and a header extension map, and serializes
them. For the Opus payloads of a GateTrack all of that is fixed but two fields: every packet of
one sender has the same header (marker set, as aiortc sets it on a frame's last packet, mid
constant, no audio level on a passed-through packet) but for its sequence number and
timestamp. So the header is serialized once, by aiortc itself, and patched per packet.

The loop keeps everything the rest of aiortc reads from the sender: the counters and clocks
of its RTCP sender reports and stats, the started/exited events stop() waits for, and ending
the track when it ends. It stands aside (aiortc's own loop runs) when the sender lacks the
attributes it expects, when Opus was not negotiated, or when the header would vary per packet
(an abs-send-time extension). Not kept: aiortc's history for retransmission, which only a NACK
would use, and audio negotiates no NACK.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import aiortc.clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RtpPacket
from aiortc.utils import random32

from chimed.media.tracks import GateTrack

log = logging.getLogger(__name__)

_P = "_RTCRtpSender__"  # aiortc's (1.16) private attributes of RTCRtpSender
_STATE = (
    "rtp_started",
    "rtp_exited",
    "rtp_header_extensions_map",
    "mid",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
    "track",
)
_SEQ_TIMESTAMP = struct.Struct("!HI")  # bytes 2-7 of an RTP header


def install(sender: RTCRtpSender, gate: GateTrack) -> bool:
    """Run `sender`'s RTP through this module's loop once it starts; False if its aiortc is
    not the expected one (its own loop then runs)."""
    state = vars(sender)
    if not all(_P + name in state for name in _STATE) or not hasattr(sender, "_ssrc"):
        return False

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        await _run_rtp(sender, gate, codec)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]  # send() starts it
    return True


def fixed_header(sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> bytes | None:
    """The RTP header aiortc writes for each packet of `sender` (sequence number and timestamp
    0), or None if it would differ from packet to packet."""
    state = vars(sender)
    if codec.payloadType is None:
        return None

    def serialize(abs_send_time: int) -> bytes:
        assert codec.payloadType is not None
        packet = RtpPacket(payload_type=codec.payloadType, sequence_number=0, timestamp=0)
        packet.ssrc = sender._ssrc
        packet.marker = 1
        packet.extensions.abs_send_time = abs_send_time
        packet.extensions.mid = state[_P + "mid"]
        return packet.serialize(state[_P + "rtp_header_extensions_map"])

    header = serialize(0)
    return header if header == serialize(0xABCDEF) else None


async def _run_rtp(sender: RTCRtpSender, gate: GateTrack, codec: RTCRtpCodecParameters) -> None:
    state: dict[str, Any] = vars(sender)
    header = fixed_header(sender, codec) if gate.opus else None
    if header is None:
        await RTCRtpSender._run_rtp(sender, codec)
        return
    state[_P + "rtp_started"].set()
    prefix = bytearray(header)
    transport = sender.transport
    sequence_number = random_sequence_number()
    timestamp_origin = random32()
    try:
        while True:
            payload, pts = await gate.next_payload()
            if not sender._enabled:  # as aiortc: read on, send nothing
                continue
            timestamp = (timestamp_origin + pts) & 0xFFFFFFFF
            _SEQ_TIMESTAMP.pack_into(prefix, 2, sequence_number, timestamp)
            await transport._send_rtp(bytes(prefix) + payload)
            state[_P + "ntp_timestamp"] = aiortc.clock.current_ntp_time()
            state[_P + "rtp_timestamp"] = timestamp
            state[_P + "octet_count"] += len(payload)
            state[_P + "packet_count"] += 1
            sequence_number = (sequence_number + 1) & 0xFFFF
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        # stop() waits for rtp_exited: say why the loop ended, and still set it below
        log.warning("audio RTP loop failed", exc_info=True)
    track = state[_P + "track"]
    if track is not None:
        track.stop()
        state[_P + "track"] = None
    state[_P + "rtp_exited"].set()
