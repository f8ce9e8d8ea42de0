"""ICE settings of chimed's peer connections, each connection its own.

aiortc falls back to a public STUN server when given no ICE servers, so chimed always passes
them explicitly (rtc_configuration). aioice reads the two settings a MediaConfig carries from
module globals: host candidates from `aioice.ice.get_host_addresses()`, the STUN/TURN
retransmission timeout from `aioice.stun.RETRY_RTO`. Setting those would change every peer
in the process (a daemon's and an in-process embedded service's alike), so this module
gives each aioice Connection its own settings instead (`configure`, before gathering), read:
- host addresses: `Connection.gather_candidates` is wrapped to name the gathering connection
  in a ContextVar (aioice calls `get_host_addresses` synchronously from it, in the
  gathering task), and `get_host_addresses` is replaced to read it;
- STUN RTO: `stun.Transaction.__init__` is wrapped to replace the timeout it read from
  RETRY_RTO with the connection's. A transaction's protocol leads to its connection (a
  StunProtocol's `receiver`, a TURN client protocol's `receiver`'s `receiver`); a TURN
  allocation's transactions run before that link exists, inside gathering: the ContextVar
  names the connection then.
Connections chimed did not configure (plain aiortc peers of tests and bench) keep aioice's
behaviour, but for the host addresses `pin_host_addresses` gives them.

On an aiortc/aioice upgrade, re-check (aioice 0.13, aiortc 1.16):
- aioice.ice.get_host_addresses(use_ipv4, use_ipv6), called only from
  Connection.gather_candidates before its first await;
- aioice.stun.Transaction.__init__(request, addr, protocol, ...) reading RETRY_RTO into
  `_Transaction__timeout_delay`; StunProtocol.receiver (the Connection); the TURN client
  protocol's `receiver` (the StunProtocol, set once the allocation succeeded);
- aiortc: RTCRtpTransceiver.receiver.transport (RTCDtlsTransport) .transport
  (RTCIceTransport) .iceGatherer._connection (the aioice Connection), created with the
  transceiver, before gathering.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aioice.stun
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from chimed.config import MediaConfig

_original_get_host_addresses = aioice.ice.get_host_addresses
_original_gather = aioice.ice.Connection.gather_candidates
_original_transaction_init = aioice.stun.Transaction.__init__
_pinned: list[str] | None = None


@dataclass(frozen=True)
class IceSettings:
    """The settings of one aioice Connection (from its peer's MediaConfig)."""

    host_addresses: tuple[str, ...] | None
    stun_rto: float | None


_settings: weakref.WeakKeyDictionary[Any, IceSettings] = weakref.WeakKeyDictionary()
_gathering: contextvars.ContextVar[IceSettings | None] = contextvars.ContextVar(
    "chimed_ice_gathering", default=None
)


def _filter(addresses: Sequence[str], use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    settings = _gathering.get()
    if settings is not None:
        if settings.host_addresses is None:
            return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return _filter(settings.host_addresses, use_ipv4, use_ipv6)
    if _pinned is None:
        return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    return _filter(_pinned, use_ipv4, use_ipv6)


async def _gather_candidates(self: aioice.ice.Connection) -> None:
    token = _gathering.set(_settings.get(self))
    try:
        await _original_gather(self)
    finally:
        _gathering.reset(token)


def _connection_settings(protocol: Any) -> IceSettings | None:
    for _ in range(2):  # StunProtocol -> Connection; TURN client -> StunProtocol -> Connection
        protocol = getattr(protocol, "receiver", None)
        if isinstance(protocol, aioice.ice.Connection):
            return _settings.get(protocol)
    return _gathering.get()


def _transaction_init(self: Any, request: Any, addr: Any, protocol: Any, *a: Any, **k: Any) -> None:
    _original_transaction_init(self, request, addr, protocol, *a, **k)
    settings = _connection_settings(protocol)
    if settings is not None and settings.stun_rto is not None:
        self._Transaction__timeout_delay = settings.stun_rto


def install_host_addresses() -> str | None:
    """Per-connection host addresses, process-wide; None, or why it stands aside."""
    gather_names = aioice.ice.Connection.gather_candidates.__code__.co_names
    if "get_host_addresses" not in gather_names:
        return "Connection.gather_candidates no longer calls get_host_addresses"
    aioice.ice.get_host_addresses = _get_host_addresses
    aioice.ice.Connection.gather_candidates = _gather_candidates  # type: ignore[method-assign]
    return None


def install_stun_rto() -> str | None:
    """Per-connection STUN retransmission timeouts, process-wide; None, or why not."""
    init = aioice.stun.Transaction.__init__
    if "RETRY_RTO" not in init.__code__.co_names or "_Transaction__timeout_delay" not in (
        init.__code__.co_names
    ):
        return "stun.Transaction no longer reads RETRY_RTO into __timeout_delay"
    if not hasattr(aioice.ice.StunProtocol, "__init__") or "receiver" not in (
        aioice.ice.StunProtocol.__init__.__code__.co_names
    ):
        return "StunProtocol no longer keeps its connection as `receiver`"
    aioice.stun.Transaction.__init__ = _transaction_init  # type: ignore[method-assign]
    return None


def configure(pc: RTCPeerConnection, media: MediaConfig) -> bool:
    """Give the ICE connections of `pc`'s transceivers `media`'s host addresses and STUN RTO;
    call it after the transceivers exist and before gathering (setLocalDescription). False if
    a connection could not be reached (this aiortc is not the expected one)."""
    settings = IceSettings(media.ice_host_addresses, media.stun_rto)
    found = False
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        gatherer = getattr(getattr(dtls, "transport", None), "iceGatherer", None)
        connection = getattr(gatherer, "_connection", None)
        if not isinstance(connection, aioice.ice.Connection):
            return False
        _settings[connection] = settings
        found = True
    return found


def settings_of(pc: RTCPeerConnection) -> list[IceSettings | None]:
    """The settings each of `pc`'s ICE connections gathers with (None: unconfigured), in
    transceiver order; bundled transceivers share one."""
    out: dict[int, IceSettings | None] = {}
    for transceiver in pc.getTransceivers():
        gatherer = getattr(transceiver.receiver.transport.transport, "iceGatherer", None)
        connection = getattr(gatherer, "_connection", None)
        out.setdefault(id(connection), _settings.get(connection))
    return list(out.values())


def pin_host_addresses(addresses: Sequence[str] | None) -> None:
    """Host addresses for connections chimed did not configure: plain aiortc peers of tests
    and bench (None: every interface, aioice's way). chimed's own peers never read it."""
    global _pinned
    _pinned = list(addresses) if addresses is not None else None


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
