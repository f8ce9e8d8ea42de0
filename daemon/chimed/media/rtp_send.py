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

Per packet the loop costs what it must and little else, because a daemon that does little
between packets runs this code cold and every layer counts several times over:
- a packet is protected and handed to the nominated ICE pair's socket in one synchronous call
  (direct_send), not through the three coroutines aiortc and aioice nest for it;
- while the input is made rather than captured (silence, tones, files: inputs on the Pacer's
  clock), packets are sent from timer callbacks, not by a task woken through a future;
- and such a frame goes out, up to one frame before its time, in the wake-up that brings a
  received packet (the mix arrives every 20 ms too), so a session wakes the loop once per
  frame instead of twice.
Captured inputs (fed PCM, devices) pace themselves: for them the task waits as before.

On an aiortc/aioice upgrade, re-check (aiortc 1.16, aioice 0.13): RTCRtpSender's `_run_rtp`
(started by send() with the codec), `_ssrc`, `_enabled`, `transport`, and the private state
listed in SENDER_STATE (what its RTCP sender reports, stats and stop() read);
random_sequence_number, random32; RTCDtlsTransport's `_send_rtp`, `_state`,
`_tx_srtp.protect` and private `__tx_bytes`, `__tx_packets`; its RTCIceTransport's
`_connection` (aioice Connection:
`send`, `sendto`, `_nominated[component]` pairs with `protocol` and `remote_addr`) and
StunProtocol.send_data being a plain `transport.sendto`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import aiortc.clock
from aioice.ice import Connection, StunProtocol
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import RtpPacket
from aiortc.utils import random32

from chimed.audio_format import PTIME_S
from chimed.media.tracks import GateTrack

log = logging.getLogger(__name__)

_P = "_RTCRtpSender__"  # aiortc's (1.16) private attributes of RTCRtpSender
_DTLS = "_RTCDtlsTransport__"
SENDER_STATE = (
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
_EARLY_S = 0.0005  # a timer that fires this close before the due time counts as on time


class SendLoop:
    """A sender whose RTP runs through this module's loop (install())."""

    def __init__(self, sender: RTCRtpSender) -> None:
        self.stream: _Stream | None = None  # while the loop runs
        self.transport = sender.transport
        self.direct = direct_send(sender.transport)  # None: it does not engage

    def nudge(self) -> None:
        """A packet was received: see _Stream.nudge()."""
        if self.stream is not None:
            self.stream.nudge()


def install(sender: RTCRtpSender, gate: GateTrack) -> SendLoop | None:
    """Run `sender`'s RTP through this module's loop once it starts; None if its aiortc is
    not the expected one (its own loop then runs)."""
    state = vars(sender)
    if not all(_P + name in state for name in SENDER_STATE) or not hasattr(sender, "_ssrc"):
        return None
    handle = SendLoop(sender)

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        await _run_rtp(sender, gate, codec, handle)

    sender._run_rtp = run_rtp  # type: ignore[method-assign]  # send() starts it
    return handle


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


async def _run_rtp(
    sender: RTCRtpSender, gate: GateTrack, codec: RTCRtpCodecParameters, handle: SendLoop
) -> None:
    state: dict[str, Any] = vars(sender)
    header = fixed_header(sender, codec) if gate.opus else None
    if header is None:
        await RTCRtpSender._run_rtp(sender, codec)
        return
    state[_P + "rtp_started"].set()
    same = sender.transport is handle.transport  # a transceiver's transport stays (one m-line)
    direct = handle.direct if same else direct_send(sender.transport)
    handle.stream = _Stream(sender, gate, header, direct)
    try:
        await handle.stream.run()
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        # stop() waits for rtp_exited: say why the loop ended, and still set it below
        log.warning("audio RTP loop failed", exc_info=True)
    handle.stream = None
    track = state[_P + "track"]
    if track is not None:
        track.stop()
        state[_P + "track"] = None
    state[_P + "rtp_exited"].set()


class _Stream:
    """One sender's RTP: a header patched per packet, the counters aiortc reads, and the two
    ways packets are paced (a timer while the gate's source is on the Pacer's clock, else the
    gate's own wait in the sender's task)."""

    def __init__(
        self,
        sender: RTCRtpSender,
        gate: GateTrack,
        header: bytes,
        direct: Callable[[bytes], bool] | None,
    ) -> None:
        self.sender = sender
        self.gate = gate
        self.state: dict[str, Any] = vars(sender)
        self.prefix = bytearray(header)
        self.sequence_number = random_sequence_number()
        self.timestamp_origin = random32()
        self.timestamp = 0
        self.payload_size = 0
        self.direct = direct
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[bytes | None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        transport = self.sender.transport
        while True:
            packet: bytes | None = None
            if self.direct is not None and self.gate.due(time.monotonic()) is not None:
                packet = await self.clocked()  # None: the source is no longer on the clock
            if packet is None:
                packet = self.packet(*await self.gate.next_payload())
                if packet is None or (self.direct is not None and self.direct(packet)):
                    self.sent()
                    continue
            await transport._send_rtp(packet)
            self.sent()

    def packet(self, payload: bytes, pts: int) -> bytes | None:
        """The RTP packet of `payload`, or None while the sender is disabled (as aiortc: the
        track is read on, nothing is sent)."""
        if not self.sender._enabled:
            self.payload_size = -1
            return None
        self.timestamp = (self.timestamp_origin + pts) & 0xFFFFFFFF
        self.payload_size = len(payload)
        _SEQ_TIMESTAMP.pack_into(self.prefix, 2, self.sequence_number, self.timestamp)
        return bytes(self.prefix) + payload

    def sent(self) -> None:
        """The last packet() went out: what aiortc's sender reports and stats read."""
        if self.payload_size < 0:
            return
        state = self.state
        state[_P + "ntp_timestamp"] = aiortc.clock.current_ntp_time()
        state[_P + "rtp_timestamp"] = self.timestamp
        state[_P + "octet_count"] += self.payload_size
        state[_P + "packet_count"] += 1
        self.sequence_number = (self.sequence_number + 1) & 0xFFFF

    async def clocked(self) -> bytes | None:
        """Send on a timer while the gate's source is on the Pacer's clock: one timer callback
        per packet, where a task would take a future, its callback and a second loop iteration.
        Returns None once the source is not on the clock, or a packet that could not be sent
        directly (the task sends it); raises what ended the stream."""
        self.done = self.loop.create_future()
        self._tick()
        try:
            return await self.done
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def nudge(self) -> None:
        """A packet was received: while waiting on the clock, a frame due within one frame
        goes out now, in this wake-up of the loop instead of one of its own. Only sources
        on the Pacer's clock are waited for that way, and those are made, not captured, so
        a frame has nothing to wait for; each still goes out no earlier than one frame
        before its time, so the stream is never more than a frame ahead of the clock. The
        received mix arrives every 20 ms, so the two settle into one wake-up per frame."""
        timer = self.timer
        if timer is not None:
            timer.cancel()
            self._tick(PTIME_S)

    def _tick(self, early_s: float = _EARLY_S) -> None:
        """Send what is due (up to `early_s` ahead), then wait on a timer for the next."""
        self.timer = None
        done = self.done
        assert done is not None and self.direct is not None
        if done.done():
            return
        try:
            while True:
                now = time.monotonic()
                due = self.gate.due(now)
                if due is None:
                    done.set_result(None)
                    return
                if due > now + early_s:
                    self.timer = self.loop.call_later(due - now, self._tick)
                    return
                packet = self.packet(*self.gate.take_payload())
                if packet is not None and not self.direct(packet):
                    done.set_result(packet)
                    return
                self.sent()
        except Exception as exc:
            done.set_exception(exc)


def direct_send(dtls: RTCDtlsTransport) -> Callable[[bytes], bool] | None:
    """What `dtls._send_rtp` does for an RTP packet, as one synchronous call: state check, SRTP
    protect, the nominated pair's socket (for a relayed pair, fastpath's TURN channel send),
    the transport's counters. Skips the three coroutines aiortc and aioice nest per packet.
    The call returns False (nothing done) when the pair's protocol is not aioice's plain one;
    direct_send() returns None when this aiortc or aioice is not the expected one."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    state = vars(dtls)
    if (
        not isinstance(connection, Connection)
        or getattr(dtls.transport, "_send", None) != connection.send
        or type(connection).send is not Connection.send
        or type(connection).sendto is not Connection.sendto
        or not isinstance(getattr(connection, "_nominated", None), dict)
        or not all(_DTLS + name in state for name in ("tx_bytes", "tx_packets"))
        or not hasattr(dtls, "_tx_srtp")
    ):
        return None
    nominated: dict[int, Any] = connection._nominated

    def send(packet: bytes) -> bool:
        pair = nominated.get(1)
        if pair is None or type(pair.protocol).send_data is not StunProtocol.send_data:
            return False  # _send_rtp raises or sends the general way
        if dtls._state != State.CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        data = dtls._tx_srtp.protect(packet)
        pair.protocol.transport.sendto(data, pair.remote_addr)
        state[_DTLS + "tx_bytes"] += len(data)
        state[_DTLS + "tx_packets"] += 1
        return True

    return send
