"""Receive jitter buffers for aiortc receivers: a shallow one for audio, a marker-aware one
for video (MarkerJitterBuffer, at the end).

aiortc's audio receiver holds every packet until four newer ones have arrived (80 ms at 20 ms
packets; more after a lost packet, up to its 16-packet capacity). That suits real networks, so
it stays the default; on loopback (the embedded service's own receivers, and sessions against
it) it is only delay. `ShallowJitterBuffer` passes a packet that arrives in sequence straight
on (an Opus packet is a whole frame) and waits for a missing one only while at most `depth`
later packets are held, so at most `depth` packets of delay are ever added.

A peer's MediaConfig.jitter_depth chooses the depth; chimed.media.shortcuts installs it.

On an aiortc upgrade, re-check (aiortc 1.16): RTCRtpReceiver's private `__jitter_buffer`
(`add(packet) -> (pli, frame | None)` on the receiver's task, created with the receiver) and
`__kind`; JitterFrame(data, timestamp); the depayloaded payload a received RtpPacket carries
as `_data`. `install` swaps the buffer right after the transceiver is created, before any
packet arrives, and leaves the receiver alone when the attribute is missing (aiortc's own
buffer then stays).
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

MAX_MISORDER = 100  # a jump of more than this many sequence numbers restarts the stream

VIDEO_CAPACITY = 512  # aiortc's for video (packets, a power of 2)
_ATTR = "_RTCRtpReceiver__jitter_buffer"
_KIND = "_RTCRtpReceiver__kind"


def _ahead(seq: int, base: int) -> int:
    """How far `seq` is past `base`, in -32768..32767 (sequence numbers wrap at 2**16)."""
    return (seq - base + 0x8000) % 0x10000 - 0x8000


class ShallowJitterBuffer:
    """Drop-in for aiortc's audio JitterBuffer (`add(packet) -> (pli, frame | None)`).

    Packets behind the one due next (late or duplicate) are dropped; a gap is skipped once more
    than `depth` packets wait behind it. Each add releases at most one frame, as aiortc's does,
    so the backlog after a late packet is bounded by `depth` too."""

    def __init__(self, depth: int) -> None:
        if depth < 0:
            raise ValueError("jitter buffer depth must be at least 0")
        self.depth = depth
        self.skipped = 0  # sequence numbers given up on
        self._next: int | None = None
        self._held: dict[int, RtpPacket] = {}

    @property
    def capacity(self) -> int:
        return self.depth + 1

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._next is None or abs(_ahead(seq, self._next)) > MAX_MISORDER:
            self._next = seq  # first packet, or the sender restarted its sequence
            self._held.clear()
        elif _ahead(seq, self._next) < 0:
            return False, None
        self._held[seq] = packet
        if self._next not in self._held and len(self._held) > self.depth:
            base = self._next
            first = min(self._held, key=lambda s: _ahead(s, base))
            self.skipped += _ahead(first, base)
            self._next = first
        due = self._held.pop(self._next, None)
        if due is None:
            return False, None
        self._next = (self._next + 1) % 0x10000
        data: bytes = getattr(due, "_data", due.payload)  # depayloaded by the receiver
        return False, JitterFrame(data=data, timestamp=due.timestamp)


def depth_of(receiver: Any) -> int | None:
    """The depth of the shallow buffer a receiver has (None: aiortc's own buffer)."""
    buffer = getattr(receiver, _ATTR, None)
    return buffer.depth if isinstance(buffer, ShallowJitterBuffer) else None


def install(receiver: Any, depth: int | None) -> bool:
    """Give an audio receiver a ShallowJitterBuffer of `depth` packets (None: leave aiortc's
    buffer). True if swapped."""
    if depth is None or not hasattr(receiver, _ATTR):
        return False
    if getattr(receiver, _KIND, "audio") != "audio":
        return False
    setattr(receiver, _ATTR, ShallowJitterBuffer(depth))
    return True


class MarkerJitterBuffer(JitterBuffer):
    """aiortc's video JitterBuffer, but the oldest frame held is released as soon as all its
    packets are in, up to the one with the RTP marker bit (a frame's last), instead of when the
    next frame's first packet shows it complete: a frame interval (67 ms at 15 fps) sooner.
    Loss and a sender without markers are aiortc's own handling."""

    def __init__(self, capacity: int = VIDEO_CAPACITY) -> None:
        super().__init__(capacity=capacity, is_video=True)
        self.early = 0  # frames released on their marker

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or self._origin is None:
            return pli, frame
        packets: list[RtpPacket] = []  # the oldest frame held, up to its marker
        for index in range(self.capacity):
            held = self._packets[(self._origin + index) % self.capacity]
            if held is None or (packets and held.timestamp != packets[0].timestamp):
                return pli, None  # incomplete, or a sender without markers
            packets.append(held)
            if held.marker:
                break
        else:
            return pli, None
        count = len(packets)
        self.remove(count)
        self.early += 1
        data = b"".join(getattr(p, "_data", p.payload) for p in packets)  # depayloaded
        return pli, JitterFrame(data=data, timestamp=packets[0].timestamp)


def install_video(receiver: Any) -> bool:
    """Give a video receiver a MarkerJitterBuffer. True if swapped."""
    if not isinstance(getattr(receiver, _ATTR, None), JitterBuffer):
        return False
    if getattr(receiver, _KIND, "video") != "video":
        return False
    setattr(receiver, _ATTR, MarkerJitterBuffer())
    return True
