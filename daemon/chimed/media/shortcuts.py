"""The one installer of chimed's shortcuts through aiortc's and aioice's private parts, and
the report of which engaged.

Each shortcut replaces or reads something private to save work per packet or per join, and
each stands aside (the library's own code runs) when what it relies on is missing, which is
what an aiortc or aioice upgrade would do. Standing aside is logged once per process, as a
warning naming the shortcut; `report()` tells tests (tests/test_shortcuts.py) and the debug
log which engaged. pyproject.toml pins aiortc and aioice to the minor versions these were
written against; the modules' docstrings list what to re-check before raising those bounds.

Process-wide (installed once, by `install()`):
- turn_inline_send, stun_demux, ntp_clock: chimed.media.fastpath
- ice_host_addresses, stun_rto: chimed.media.ice (per-connection settings inside aioice)
Per peer (`install_peer()` for ChimePeer; `configure_ice()` and `shallow_jitter()` for the
embedded media server's peers), counted per peer engaged or stood aside:
- send_loop, direct_send: chimed.media.rtp_send
- inline_receive: chimed.media.rtp_receive
- decoder_gate: chimed.media.decode_gate
- video_decoder_gate: chimed.media.decode_gate (per received video stream; with its keyframe
  requests)
- video_jitter: chimed.media.jitter (per received video stream: frames released on their
  marker)
- shallow_jitter: chimed.media.jitter
- ice_settings: chimed.media.ice (the peer's MediaConfig reaches its aioice connections)
- forward_receive, forward_send, dtls_passive: chimed.media.rtp_forward (the embedded media
  server's video: received packets forwarded undecoded, senders without a track as forwarding
  slots, the DTLS server role in its answers)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver

from chimed.config import MediaConfig
from chimed.media import decode_gate, fastpath, ice, jitter, rtp_forward, rtp_receive, rtp_send
from chimed.media.decode_gate import DecodeGate, VideoDecodeGate
from chimed.media.tracks import GateTrack

log = logging.getLogger(__name__)

PROCESS_WIDE = ("turn_inline_send", "stun_demux", "ntp_clock", "ice_host_addresses", "stun_rto")
PER_PEER = (
    "send_loop",
    "direct_send",
    "inline_receive",
    "decoder_gate",
    "shallow_jitter",
    "ice_settings",
    "forward_receive",
    "forward_send",
    "dtls_passive",
)
# Engaged only by the embedded media server's video (chimed's own peers have none of it).
VIDEO_FORWARDING = ("forward_receive", "forward_send")


@dataclass(frozen=True)
class Status:
    """What one shortcut did in this process."""

    name: str
    per_peer: bool
    engaged: int = 0
    """Process-wide: 1 once installed. Per peer: how many peers it engaged for."""
    stood_aside: int = 0
    """How many times it stood aside (the library's own code ran instead)."""
    reason: str = ""
    """Why it last stood aside."""


# Per received video stream, so only for peers that receive video.
PER_VIDEO_STREAM = ("video_decoder_gate", "video_jitter")

_status: dict[str, Status] = {n: Status(n, False) for n in PROCESS_WIDE} | {
    n: Status(n, True) for n in PER_PEER + PER_VIDEO_STREAM
}
_installed = False


def _engaged(name: str) -> None:
    status = _status[name]
    _status[name] = replace(status, engaged=status.engaged + 1)


def _stood_aside(name: str, reason: str) -> None:
    status = _status[name]
    _status[name] = replace(status, stood_aside=status.stood_aside + 1, reason=reason)
    if status.stood_aside == 0:
        log.warning("shortcut %s stands aside (%s): aiortc/aioice's own code runs", name, reason)


def _record(name: str, result: object, reason: str) -> None:
    if result is None or result is False:
        _stood_aside(name, reason)
    else:
        _engaged(name)


def report() -> dict[str, Status]:
    """Every shortcut's status in this process, by name."""
    return dict(_status)


def engaged(name: str) -> bool:
    """Whether `name` engaged at least once (and, per peer, never stood aside)."""
    status = _status[name]
    return status.engaged > 0 and status.stood_aside == 0


def install() -> None:
    """The process-wide shortcuts; idempotent (every peer calls it)."""
    global _installed
    if _installed:
        return
    _installed = True
    installers: dict[str, Callable[[], str | None]] = {
        "turn_inline_send": fastpath.install_turn_inline_send,
        "stun_demux": fastpath.install_stun_demux,
        "ntp_clock": fastpath.install_ntp_clock,
        "ice_host_addresses": ice.install_host_addresses,
        "stun_rto": ice.install_stun_rto,
    }
    for name, install_one in installers.items():
        reason = install_one()
        if reason is None:
            _engaged(name)
        else:
            _stood_aside(name, reason)
    log.debug("aiortc/aioice shortcuts: %s", report())


@dataclass
class PeerShortcuts:
    """What engaged for one ChimePeer (None / False: aiortc's own way)."""

    send_loop: rtp_send.SendLoop | None
    decode_gate: DecodeGate | None
    inline_receive: bool
    shallow_jitter: bool


def install_peer(
    pc: RTCPeerConnection, transceiver: RTCRtpTransceiver, gate: GateTrack, media: MediaConfig
) -> PeerShortcuts:
    """chimed's paths for a ChimePeer's audio transceiver, before it negotiates: the ICE
    settings of `media`, the RTP send loop (with direct sends), the decoder gate, inline
    receiving (received packets nudge the send loop) and the shallow jitter buffer."""
    install()
    configure_ice(pc, media)
    send_loop = rtp_send.install(transceiver.sender, gate)
    _record("send_loop", send_loop, "RTCRtpSender changed")
    if send_loop is not None:
        _record("direct_send", send_loop.direct, "RTCDtlsTransport or aioice Connection changed")
    receiver = transceiver.receiver
    # Before the receiver starts, so its decoder thread reads through the gate.
    gate_ = decode_gate.install(receiver)
    _record("decoder_gate", gate_, "RTCRtpReceiver has no decoder queue")
    inline = rtp_receive.install(
        receiver.transport,
        receiver,
        gate_,
        on_rtp=send_loop.nudge if send_loop is not None else None,
    )
    _record("inline_receive", inline, "RTCDtlsTransport or RTCRtpReceiver changed")
    shallow = shallow_jitter(receiver, media.jitter_depth)
    return PeerShortcuts(send_loop, gate_, inline, shallow)


def video_gate(receiver: Any, on_size: Callable[[int, int], None]) -> VideoDecodeGate | None:
    """chimed's paths for a received video stream: frames released on their RTP marker, and
    the decoder gate (closed until a view binds), reporting its
    picture size from keyframe headers; None when aiortc's receiver has no decoder queue (then
    every frame is decoded, and sizes come from decoded frames only when viewed)."""
    gate = decode_gate.install_video(receiver, on_size)
    _record("video_decoder_gate", gate, "RTCRtpReceiver has no decoder queue")
    _record("video_jitter", jitter.install_video(receiver), "RTCRtpReceiver has no jitter buffer")
    return gate


@dataclass(frozen=True)
class Applied:
    """What a peer connection's shortcuts run with, read from the live objects: per audio
    receiver its jitter buffer depth (None: aiortc's), per ICE connection its settings
    (None: not configured by chimed)."""

    jitter_depths: tuple[int | None, ...]
    ice: tuple[ice.IceSettings | None, ...]


def applied(pc: RTCPeerConnection) -> Applied:
    audio = [t.receiver for t in pc.getTransceivers() if t.kind == "audio"]
    return Applied(tuple(jitter.depth_of(r) for r in audio), tuple(ice.settings_of(pc)))


def configure_ice(pc: RTCPeerConnection, media: MediaConfig) -> bool:
    """`media`'s ICE settings for `pc`'s connections (transceivers made, nothing gathered)."""
    install()
    done = ice.configure(pc, media)
    _record("ice_settings", done, "RTCIceGatherer has no aioice Connection")
    return done


def shallow_jitter(receiver: Any, depth: int | None) -> bool:
    """The shallow jitter buffer for an audio receiver (depth None: aiortc's own, by choice)."""
    if depth is None:
        return False
    swapped = jitter.install(receiver, depth)
    _record("shallow_jitter", swapped, "RTCRtpReceiver has no jitter buffer")
    return swapped


def forward_ingress(receiver: Any, on_packet: rtp_forward.PacketSink) -> rtp_forward.Ingress | None:
    """A video receiver's packets to `on_packet`, never decoded (None: aiortc's own path)."""
    ingress = rtp_forward.install_ingress(receiver, on_packet)
    _record("forward_receive", ingress, "RTCRtpReceiver changed")
    return ingress


def forward_egress(
    sender: Any,
    mid: str,
    on_keyframe_request: Callable[[], None],
    on_nack: Callable[[list[int]], None],
) -> rtp_forward.Egress | None:
    """A track-less sender as a forwarding slot (None: it stays aiortc's, sending nothing)."""
    egress = rtp_forward.install_egress(sender, mid, on_keyframe_request, on_nack)
    _record("forward_send", egress, "RTCRtpSender changed")
    return egress


def answer_passive(pc: RTCPeerConnection) -> None:
    """The DTLS server role for the answer's first negotiation (else aiortc's active)."""
    if rtp_forward.answer_passive(pc):
        _engaged("dtls_passive")
