"""Per-packet shortcuts in aioice and aiortc, for the 50 packets a second each session sends
and receives. Each replaces one library function with an equivalent that does less work, and
each stands aside (the library's own code runs) where its assumptions do not hold.

- TURN sends: aioice's TurnTransport.sendto schedules a task for every datagram, because a
  first send to a peer may have to bind a channel and wait for the answer. Once the channel
  is bound and fresh, and no earlier send is still queued, a send is one ChannelData header
  and one sendto: that is done inline (no task, loop iteration or callback per packet), and
  binding, refresh, queued sends and closing stay aioice's.
- Demultiplexing: aioice tries to parse every datagram of a connection as STUN and hands it
  on as data when that raises. A first byte above 3 is never STUN (RFC 7983: 20-63 DTLS,
  128-191 RTP/RTCP), so such datagrams go straight on: no exception per media packet.
- Clocks: aiortc stamps every sent packet twice with NTP time and every received one with
  NTP milliseconds, each through timezone-aware datetime arithmetic; the same values come
  straight from time.time().

chimed.media.shortcuts installs them (install_* return None, or why the shortcut stands
aside). On an aiortc/aioice upgrade, re-check (aioice 0.13, aiortc 1.16):
- aioice.turn.TurnTransport.sendto(data, addr) and its private `__inner_protocol`,
  `__send_tasks`, `__close_task`; the TURN client protocol's `peer_to_channel`,
  `channel_refresh_at` (time after which the channel needs a refresh), `transport` and
  `_send(bytes)`; ChannelData framing (RFC 8656 12.4) is the channel number and length;
- aioice.ice.StunProtocol.datagram_received(data, addr) handing non-STUN data to
  `receiver.data_received(data, local_candidate.component)`;
- aiortc.clock.current_ntp_time and current_ms, called through the module by aiortc.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import aiortc.clock
from aioice.ice import StunProtocol
from aioice.turn import TurnClientMixin, TurnClientUdpProtocol, TurnTransport

_CHANNEL_HEADER = struct.Struct("!HH")
_TURN_PRIVATE = ("inner_protocol", "send_tasks", "close_task")
NTP_UNIX_OFFSET_S = 2208988800  # 1900-01-01 to 1970-01-01
_original_sendto = TurnTransport.sendto
_original_stun_received = StunProtocol.datagram_received


class TurnSends:
    """Sends through a TURN relay that took aioice's way (a task each): the ones before a
    channel is bound, and every one if the inline send stopped engaging. Counted on that
    slow path only, so the inline one costs nothing more."""

    queued = 0


def _sendto(self: Any, data: bytes, addr: tuple[str, int]) -> None:
    proto = getattr(self, "_TurnTransport__inner_protocol", None)
    if (
        proto is not None
        and not getattr(self, "_TurnTransport__send_tasks", True)  # nothing queued before it
        and getattr(self, "_TurnTransport__close_task", True) is None
    ):
        channel = getattr(proto, "peer_to_channel", {}).get(addr)
        transport = getattr(proto, "transport", None)
        if (
            channel is not None
            and transport is not None
            and not transport.is_closing()
            and time.time() <= proto.channel_refresh_at.get(channel, 0.0)
        ):
            proto._send(_CHANNEL_HEADER.pack(channel, len(data)) + data)
            return
    TurnSends.queued += 1
    _original_sendto(self, data, addr)


def _stun_datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
    receiver: Any = getattr(self, "receiver", None)
    candidate: Any = getattr(self, "local_candidate", None)
    known = receiver is not None and candidate is not None
    if known and isinstance(data, bytes) and data and data[0] > 3:
        receiver.data_received(data, candidate.component)
        return
    _original_stun_received(self, data, addr)


def current_ntp_time() -> int:
    """64-bit NTP time now (seconds since 1900 << 32 | fraction), as aiortc.clock's."""
    now = time.time() + NTP_UNIX_OFFSET_S
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * 4294967296)


def current_ms() -> int:
    """Milliseconds since the NTP epoch, as aiortc.clock's."""
    return int((time.time() + NTP_UNIX_OFFSET_S) * 1000)


def _sets(init: Any, *names: str) -> bool:
    """Whether a library's __init__ still assigns these attributes (names mangled)."""
    return all(name in init.__code__.co_names for name in names)


def install_turn_inline_send() -> str | None:
    """Process-wide (aioice calls the transport's method); None, or why it stands aside."""
    if not (
        _sets(TurnTransport.__init__, *(f"_TurnTransport__{n}" for n in _TURN_PRIVATE))
        and _sets(TurnClientMixin.__init__, "peer_to_channel", "channel_refresh_at")
        and callable(getattr(TurnClientUdpProtocol, "_send", None))
    ):
        return "aioice's TurnTransport or TURN client protocol changed"
    TurnTransport.sendto = _sendto  # type: ignore[method-assign]
    return None


def install_stun_demux() -> str | None:
    if not (
        _sets(StunProtocol.__init__, "receiver")
        and "local_candidate" in StunProtocol.__annotations__
    ):
        return "aioice's StunProtocol changed"
    StunProtocol.datagram_received = _stun_datagram_received  # type: ignore[method-assign]
    return None


def install_ntp_clock() -> str | None:
    names = ("current_ntp_time", "current_ms")
    if not all(callable(getattr(aiortc.clock, name, None)) for name in names):
        return "aiortc.clock changed"
    aiortc.clock.current_ntp_time = current_ntp_time
    aiortc.clock.current_ms = current_ms
    return None
