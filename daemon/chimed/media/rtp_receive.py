"""Received audio RTP handled in the datagram callback that brings it, not a task later.

aiortc reads received datagrams in a task of the DTLS transport: aioice queues each datagram,
the task wakes in a later loop iteration, unprotects the SRTP and routes the packet. For the 50
audio packets a second of a session that hop is one more loop iteration and task switch per
packet, paid cold (a daemon does little else between packets). Here, while the connection's
queue is empty (so order is kept) and the DTLS transport is connected, an SRTP packet is
unprotected and handed to aiortc's own `_handle_rtp_data` inline: parsing, routing, receiver
statistics, jitter buffer and decoder queue are aiortc's, as are RTCP (which takes the queue)
and DTLS records.

While nobody hears the mix (the peer's decode gate is closed), a packet goes no further than
what the RTCP receiver reports need: it is still unprotected (libsrtp must see every packet to
keep its rollover counter right for when decoding resumes) and counted in aiortc's statistics
for its SSRC, but not parsed into an RtpPacket, buffered or depayloaded only to be dropped (nor
listed by the receiver's getSynchronizationSources(), which chimed does not use).

Inline handling needs every step to finish without suspending. For an audio receiver it does
(only video receivers send NACKs or REMB from there); it is installed only for a receiver
without either, and a step that suspends anyway is finished in a task.

On an aiortc/aioice upgrade, re-check (aiortc 1.16, aioice 0.13): RTCDtlsTransport's
`transport._connection` (aioice Connection: `data_received(data, component)` feeding its
`_queue`), `_state`, `_rx_srtp`, `_rtp_router.route_rtp(header)`, the coroutine
`_handle_rtp_data(data, arrival_time_ms)` and the private counters `__rx_bytes`,
`__rx_packets`; RTCRtpReceiver's private `__kind`, `__nack_generator`,
`__remote_bitrate_estimator`, `__codecs`, `__remote_streams`; StreamStatistics(clockrate)
and its `add(packet)` (which reads payload_type, sequence_number, timestamp, ssrc).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import aiortc.clock
import pylibsrtp
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpreceiver import StreamStatistics

log = logging.getLogger(__name__)

_DTLS = "_RTCDtlsTransport__"  # aiortc's (1.16) private counters of RTCDtlsTransport
_RECEIVER = "_RTCRtpReceiver__"
_finishing: set[asyncio.Task[None]] = set()


class Gate(Protocol):
    """The peer's decode gate: whether the received audio is decoded, and a drop count."""

    decoding: bool
    dropped: int


class _Header:
    """The fields of an RTP header that routing and aiortc's StreamStatistics read."""

    __slots__ = ("payload_type", "sequence_number", "ssrc", "timestamp")

    def __init__(self, payload_type: int, sequence_number: int, timestamp: int, ssrc: int):
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc


_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2-11 of an RTP header


def install(
    dtls: RTCDtlsTransport,
    receiver: Any,
    gate: Gate | None = None,
    on_rtp: Callable[[], None] | None = None,
) -> bool:
    """Handle `dtls`'s received RTP inline from now on, and only count it while `gate` says
    it is not decoded; `on_rtp` is called after each packet handled so. False (nothing
    changed) when this aiortc or aioice is not the expected one or the receiver may suspend
    (video)."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    queue = getattr(connection, "_queue", None)
    state = vars(dtls)
    rstate = vars(receiver)
    if (
        connection is None
        or not isinstance(queue, asyncio.Queue)
        or not all(_DTLS + name in state for name in ("rx_bytes", "rx_packets"))
        or not hasattr(dtls, "_rx_srtp")
        or not hasattr(dtls, "_handle_rtp_data")
        or rstate.get(_RECEIVER + "kind") != "audio"
        or rstate.get(_RECEIVER + "nack_generator", False) is not None
        or rstate.get(_RECEIVER + "remote_bitrate_estimator", False) is not None
        or not isinstance(rstate.get(_RECEIVER + "codecs"), dict)
        or not isinstance(rstate.get(_RECEIVER + "remote_streams"), dict)
        or not hasattr(getattr(dtls, "_rtp_router", None), "route_rtp")
    ):
        return False
    queued: Callable[[bytes, int], None] = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if (
            len(data) > 12
            and 127 < data[0] < 192  # RTP or RTCP (RFC 7983)
            and not 191 < data[1] < 224  # not RTCP (RFC 5761)
            and queue.empty()
            and dtls._state == State.CONNECTED
            and dtls._rx_srtp is not None
        ):
            _handle(dtls, state, data, receiver, gate)
            if on_rtp is not None:
                on_rtp()
        else:
            queued(data, component)

    connection.data_received = data_received
    return True


def _handle(
    dtls: RTCDtlsTransport, state: dict[str, Any], data: bytes, receiver: Any, gate: Gate | None
) -> None:
    """What RTCDtlsTransport._recv_next does with an SRTP packet, without the task; while
    `gate` is closed, only what `receiver`'s statistics need."""
    state[_DTLS + "rx_bytes"] += len(data)
    state[_DTLS + "rx_packets"] += 1
    arrival_time_ms = aiortc.clock.current_ms()
    try:
        packet = dtls._rx_srtp.unprotect(data)
    except pylibsrtp.Error as exc:
        log.debug("SRTP unprotect failed: %s", exc)
        return
    if gate is not None and not gate.decoding and _count(dtls, receiver, packet):
        gate.dropped += 1
        return
    step = dtls._handle_rtp_data(packet, arrival_time_ms=arrival_time_ms)
    try:
        awaited = step.send(None)
    except StopIteration:
        return
    except Exception:
        log.warning("handling received RTP failed", exc_info=True)
        return
    task = asyncio.ensure_future(_finish(step, awaited))
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


def _count(dtls: RTCDtlsTransport, receiver: Any, packet: bytes) -> bool:
    """Count an unheard packet where aiortc's receiver would (its per-SSRC statistics, which
    its RTCP receiver reports are made of); False if it is not plainly that receiver's."""
    sequence_number, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
    header = _Header(packet[1] & 0x7F, sequence_number, timestamp, ssrc)
    if dtls._rtp_router.route_rtp(header) is not receiver:  # type: ignore[arg-type]
        return False
    rstate = vars(receiver)
    codec = rstate[_RECEIVER + "codecs"].get(header.payload_type)
    if codec is None or is_rtx(codec):
        return False  # aiortc's path: it drops an unknown payload type, unwraps RTX
    streams = rstate[_RECEIVER + "remote_streams"]
    stats = streams.get(ssrc)
    if stats is None:
        stats = streams[ssrc] = StreamStatistics(codec.clockRate)
    stats.add(header)
    return True


async def _finish(step: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a coroutine that suspended outside any task to its end, in this task."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)  # a bare yield: the coroutine asked for one iteration
            else:
                awaited._asyncio_future_blocking = False  # taken over, as a task takes it
                await awaited
        except BaseException as exc:  # cancelled, or the awaited future failed: pass it in
            try:
                awaited = step.throw(exc)
            except StopIteration:
                return
            continue
        try:
            awaited = step.send(None)
        except StopIteration:
            return
