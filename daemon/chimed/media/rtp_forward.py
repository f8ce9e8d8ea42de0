"""Video RTP passed through the embedded media server without decoding: the hooks into
aiortc's receivers and senders that an SFU needs.

An ingress hook replaces a video receiver's `_handle_rtp_packet`: each packet still feeds what
aiortc's RTCP needs (its per-SSRC statistics for receiver reports, its bitrate estimator for
REMB), RTX retransmissions are unwrapped to the packet they repeat, and then the packet goes
to a callback instead of the jitter buffer and decoder queue. Nothing is ever queued for the
receiver's decoder thread, so aiortc never creates a video decoder for it.

An egress hook makes a sender with no track a forwarding slot: aiortc's RTP loop (which would
poll for a track every 20 ms) is replaced by an idle one; `send()` stamps a packet with the
sender's SSRC and header extensions and sends it through the sender's DTLS transport, keeping
the counters aiortc's sender reports read. Picture loss feedback (PLI, FIR) from the far end
goes to a callback, and so do NACKs (forwarded to the sender, whose retransmissions come back
through the ingress as the packets they repeat). The slot's msid stream id is `v_<mid>`, as
the Chime clients expect of the server's answer.

On an aiortc/aioice upgrade, re-check (aiortc 1.16): RTCRtpReceiver's `_handle_rtp_packet`,
`_send_rtcp`, `_send_rtcp_pli`, `_send_rtcp_nack` and private `__codecs`, `__remote_streams`,
`__rtx_ssrc`, `__remote_bitrate_estimator`, `__rtcp_ssrc`; RTCRtpSender's `_run_rtp`,
`_handle_rtcp_packet`, `_ssrc`, `_stream_id`, `transport` and the private state in
rtp_send.SENDER_STATE; RTCDtlsTransport's `_send_rtp`, `_set_role`, `_role`;
RtpPacket.serialize with a HeaderExtensionsMap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiortc.clock
from aiortc import RTCPeerConnection
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from chimed.media.rtp_send import SENDER_STATE, direct_send

log = logging.getLogger(__name__)

_RECEIVER = "_RTCRtpReceiver__"
_SENDER = "_RTCRtpSender__"
_RECEIVER_STATE = ("codecs", "remote_streams", "rtx_ssrc", "remote_bitrate_estimator", "rtcp_ssrc")
_tasks: set[asyncio.Task[None]] = set()

# (packet, its codec) for each media packet a forwarded receiver gets.
PacketSink = Callable[[RtpPacket, RTCRtpCodecParameters], None]


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class Ingress:
    """A video receiver whose packets go to a callback, undecoded."""

    def __init__(self, receiver: Any) -> None:
        self._receiver = receiver

    def request_keyframe(self, media_ssrc: int) -> None:
        """A PLI to the sender of `media_ssrc` (sent once the connection can carry it)."""
        _spawn(self._receiver._send_rtcp_pli(media_ssrc))

    def request_retransmission(self, media_ssrc: int, lost: list[int]) -> None:
        """A NACK to the sender of `media_ssrc` for these sequence numbers of its own."""
        _spawn(self._receiver._send_rtcp_nack(media_ssrc, lost))


def install_ingress(receiver: Any, on_packet: PacketSink) -> Ingress | None:
    """Forward `receiver`'s packets to `on_packet` from now on; None when this aiortc is not
    the expected one (nothing changed)."""
    state = vars(receiver)
    if state.get(_RECEIVER + "kind") != "video" or not all(
        _RECEIVER + name in state for name in _RECEIVER_STATE
    ):
        return None
    if not hasattr(receiver, "_handle_rtp_packet") or not hasattr(receiver, "_send_rtcp"):
        return None
    codecs: dict[int, RTCRtpCodecParameters] = state[_RECEIVER + "codecs"]
    streams: dict[int, StreamStatistics] = state[_RECEIVER + "remote_streams"]
    rtx_ssrc: dict[int, int] = state[_RECEIVER + "rtx_ssrc"]
    estimator = state[_RECEIVER + "remote_bitrate_estimator"]

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        if not receiver._enabled:
            return
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stats.add(packet)
        abs_send_time = packet.extensions.abs_send_time
        if estimator is not None and abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = state[_RECEIVER + "rtcp_ssrc"]
            if remb is not None and rtcp_ssrc is not None:
                feedback = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                )
                await receiver._send_rtcp(feedback)
        if is_rtx(codec):
            original = rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original is None or len(packet.payload) < 2 or not isinstance(apt, int):
                return  # padding (bandwidth probes) or an unknown stream
            if apt not in codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original)
            codec = codecs[apt]
        if not packet.payload:
            return  # padding only: nothing for a decoder
        on_packet(packet, codec)

    receiver._handle_rtp_packet = handle_rtp_packet
    return Ingress(receiver)


class Egress:
    """A sender without a track, sending packets it is given (see `install_egress`)."""

    def __init__(self, sender: Any, direct: Callable[[bytes], bool] | None) -> None:
        self._sender = sender
        self._state: dict[str, Any] = vars(sender)
        self._direct = direct
        self.ssrc: int = sender._ssrc

    @property
    def ready(self) -> bool:
        """Whether the sender started (its parameters known) and its connection is up."""
        started = self._state[_SENDER + "rtp_started"].is_set()
        return bool(started) and self._sender.transport.state == "connected"

    def send(
        self, payload_type: int, marker: int, sequence_number: int, timestamp: int, payload: bytes
    ) -> None:
        """Send one packet as this sender's (its SSRC and header extensions)."""
        transport = self._sender.transport
        if not self.ready:
            return
        state = self._state
        packet = RtpPacket(payload_type, marker, sequence_number, timestamp, self.ssrc, payload)
        packet.extensions.mid = state[_SENDER + "mid"]
        packet.extensions.abs_send_time = (aiortc.clock.current_ntp_time() >> 14) & 0x00FFFFFF
        data = packet.serialize(state[_SENDER + "rtp_header_extensions_map"])
        if self._direct is None or not self._direct(data):
            _spawn(_send(transport, data))
        state[_SENDER + "ntp_timestamp"] = aiortc.clock.current_ntp_time()
        state[_SENDER + "rtp_timestamp"] = timestamp
        state[_SENDER + "octet_count"] += len(payload)
        state[_SENDER + "packet_count"] += 1


async def _send(transport: Any, data: bytes) -> None:
    try:
        await transport._send_rtp(data)
    except ConnectionError:
        pass


def install_egress(
    sender: Any,
    mid: str,
    on_keyframe_request: Callable[[], None],
    on_nack: Callable[[list[int]], None],
) -> Egress | None:
    """Make `sender` (of the m-section `mid`, no track) a forwarding slot; None when this
    aiortc is not the expected one (nothing changed). The far end's picture loss feedback
    goes to `on_keyframe_request`, its NACKs (the lost sequence numbers) to `on_nack`."""
    state = vars(sender)
    if not all(_SENDER + name in state for name in SENDER_STATE):
        return None
    if not all(hasattr(sender, a) for a in ("_run_rtp", "_handle_rtcp_packet", "_ssrc")):
        return None
    if getattr(sender, "track", None) is not None:
        return None
    sender._stream_id = f"v_{mid}"  # the msid Chime's clients map tracks by
    handle_rtcp = sender._handle_rtcp_packet

    async def run_rtp(_codec: RTCRtpCodecParameters) -> None:
        state[_SENDER + "rtp_started"].set()
        try:
            await asyncio.get_running_loop().create_future()  # until stop() cancels it
        except asyncio.CancelledError:
            pass
        state[_SENDER + "rtp_exited"].set()

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            try:
                on_keyframe_request()
            except Exception:
                log.exception("keyframe request handler failed")
            return
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            try:
                on_nack(list(packet.lost))
            except Exception:
                log.exception("NACK handler failed")
            return
        await handle_rtcp(packet)

    sender._run_rtp = run_rtp
    sender._handle_rtcp_packet = handle_rtcp_packet
    return Egress(sender, direct_send(sender.transport))


def answer_passive(pc: RTCPeerConnection) -> bool:
    """Take the DTLS server role (`a=setup:passive` in the answer), as Chime's media server
    does; only before the first answer, while the role is still open."""
    done = False
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if getattr(dtls, "_role", None) == "auto" and hasattr(dtls, "_set_role"):
            dtls._set_role("server")
            done = True
    return done
