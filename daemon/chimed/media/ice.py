"""ICE settings shared by chimed's client and the embedded media server.

aiortc falls back to a public STUN server when given no ICE servers, and aioice gathers host
candidates on every interface except loopback. chimed never wants either: it always passes ICE
servers explicitly, and it can pin host candidates to a fixed list (loopback for the embedded
service and the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

_original_get_host_addresses = aioice.ice.get_host_addresses
_pinned: list[str] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _pinned is None:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return [a for a in _pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def pin_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates only on these addresses (None: every interface, aioice's way).

    Process-wide, because aioice reads its host addresses from a module function.
    """
    global _pinned
    _pinned = list(addresses) if addresses is not None else None
    aioice.ice.get_host_addresses = _get_host_addresses


def pinned_host_addresses() -> list[str] | None:
    return None if _pinned is None else list(_pinned)


def rtc_configuration(
    turn_uris: Sequence[str] = (),
    username: str | None = None,
    password: str | None = None,
) -> RTCConfiguration:
    """The peer connection configuration: exactly the TURN servers given, or none at all.

    With TURN servers ICE is relay-only, as the official web client does when JOIN_ACK names
    TURN servers. An empty list (never None) keeps aiortc off its public STUN default.
    """
    if not turn_uris:
        return RTCConfiguration(iceServers=[])
    server = RTCIceServer(urls=list(turn_uris), username=username, credential=password)
    return RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def use_loopback_stun_timers(rto: float = 0.1) -> None:
    """Retransmit STUN/TURN transactions (ICE checks included) after `rto` instead of 500 ms.

    On loopback the round trip is well under a millisecond, and the first ICE check of the
    side that learns candidates first is always lost: the peer's TURN relay drops it until the
    peer installs its permission. With RFC 8489's 500 ms RTO that loss alone costs every join
    half a second. Process-wide (aioice reads a module constant); the embedded service calls it.
    """
    aioice.stun.RETRY_RTO = rto
