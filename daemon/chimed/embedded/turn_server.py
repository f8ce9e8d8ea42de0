"""The embedded service's TURN server (RFC 8656 over UDP) as a sans-I/O state machine:
datagrams and a clock in, datagrams out (`TurnRelay` in turn_relay.py owns the sockets).

Credentials are time-limited and stateless: the username is "<expiry-unix>:<attendee-id>" and
the password the base64 HMAC-SHA1 of it under a per-relay secret, so the signaling server can
hand them out in JOIN_ACK without the relay keeping a list. Relayed addresses are on 127.0.0.1
and the relay only ever talks to loopback peers: a permission or channel for any other address
is refused (403), so no packet can leave the host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chimed.embedded.stun import (
    UNDERSTOOD,
    Addr,
    Attr,
    Attrs,
    Class,
    Method,
    StunMessage,
    build_stun,
    error_code_value,
    integrity_of,
    pack_xor_address,
    parse_stun,
    u32,
    unpack_xor_address,
)
from chimed.loopback import is_loopback

# --- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnCredentials:
    """What JOIN_ACK's turn_credentials carries."""

    username: str
    password: str
    ttl: int
    uris: Sequence[str]


class CredentialIssuer:
    """Time-limited credentials (the "TURN REST API" scheme): nothing to store or revoke."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def password(self, username: str) -> str:
        digest = hmac.new(self._secret, username.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def issue(self, attendee_id: str, ttl: int, now: float) -> tuple[str, str]:
        username = f"{int(now) + ttl}:{attendee_id}"
        return username, self.password(username)

    def check(self, username: str, now: float, allow_expired: bool = False) -> str | None:
        """The password of a username this issuer made and that has not expired, else None."""
        expiry, sep, _ = username.partition(":")
        if not sep or not expiry.isdigit():
            return None
        if not allow_expired and int(expiry) < now:
            return None
        return self.password(username)


def integrity_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


# --- the state machine -------------------------------------------------------------------------

PERMISSION_LIFETIME = 300.0
CHANNEL_LIFETIME = 600.0
CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x7FFF
UDP_PROTOCOL = 17


@dataclass(frozen=True, slots=True)
class ToClient:
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class ToPeer:
    relay: Addr
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class CloseRelay:
    relay: Addr


Output = ToClient | ToPeer | CloseRelay


@dataclass(slots=True)
class Allocation:
    client: Addr
    relay: Addr
    username: str
    key: bytes
    expires: float
    transaction_id: bytes  # of the Allocate, so a retransmission gets the same answer
    response: bytes
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, tuple[Addr, float]] = field(default_factory=dict)  # -> (peer, expiry)
    peer_channels: dict[Addr, int] = field(default_factory=dict)

    def permitted(self, ip: str, now: float) -> bool:
        if self.permissions.get(ip, 0.0) > now:
            return True
        # A live channel binding keeps its peer's permission: aioice refreshes channels but never
        # permissions, and chimed's own client uses aioice.
        return any(peer[0] == ip and exp > now for peer, exp in self.channels.values())


@dataclass(slots=True)
class TurnStats:
    allocations_total: int = 0
    auth_failures: int = 0
    channel_binds: int = 0  # successful ChannelBind requests, refreshes included
    packets_to_peers: int = 0
    bytes_to_peers: int = 0
    packets_to_clients: int = 0
    bytes_to_clients: int = 0


class _Reject(Exception):
    def __init__(self, code: int, extra: Attrs = ()) -> None:
        self.code = code
        self.extra = extra


class TurnServer:
    """TURN over UDP as a state machine: feed it datagrams and times (monotonic seconds), send
    what it returns. `bind_relay` opens a relay socket on loopback and gives its address (None
    when none can be had); `CloseRelay` outputs say when to close one."""

    def __init__(
        self,
        *,
        realm: str,
        secret: bytes,
        bind_relay: Callable[[], Addr | None],
        software: str = "chimed",
        default_lifetime: float = 600.0,
        max_lifetime: float = 3600.0,
        nonce_lifetime: float = 3600.0,
        max_allocations: int = 1000,
        unix_time: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self.issuer = CredentialIssuer(secret)
        self.stats = TurnStats()
        self._secret = secret
        self._bind_relay = bind_relay
        self._software = software.encode()
        self._default_lifetime = default_lifetime
        self._max_lifetime = max_lifetime
        self._nonce_lifetime = nonce_lifetime
        self._max_allocations = max_allocations
        self._unix_time = unix_time
        self._by_client: dict[Addr, Allocation] = {}
        self._by_relay: dict[Addr, Allocation] = {}

    @property
    def allocations(self) -> int:
        return len(self._by_client)

    def allocation(self, client: Addr) -> Allocation | None:
        return self._by_client.get(client)

    # datagrams

    def datagram_from_client(self, data: bytes, addr: Addr, now: float) -> list[Output]:
        if len(data) < 4:
            return []
        if data[0] & 0xC0 == 0x40:
            return self._channel_data(data, addr, now)
        try:
            message = parse_stun(data)
        except ValueError:
            return []
        if message.cls == Class.REQUEST:
            before = self._by_client.get(addr)
            outputs: list[Output] = [ToClient(self._request(message, addr, now), addr)]
            if before is not None and self._by_client.get(addr) is not before:
                outputs.append(CloseRelay(before.relay))  # freed by Refresh(0)
            return outputs
        if message.cls == Class.INDICATION and message.method == Method.SEND:
            return self._send_indication(message, addr, now)
        return []

    def datagram_from_peer(self, relay: Addr, data: bytes, addr: Addr, now: float) -> list[Output]:
        allocation = self._by_relay.get(relay)
        if (
            allocation is None
            or allocation.expires <= now
            or not allocation.permitted(addr[0], now)
        ):
            return []
        channel = allocation.peer_channels.get(addr)
        if channel is not None and allocation.channels[channel][1] > now:
            packet = struct.pack("!HH", channel, len(data)) + data
        else:
            tid = secrets.token_bytes(12)
            attrs = [(Attr.XOR_PEER_ADDRESS, pack_xor_address(addr, tid)), (Attr.DATA, data)]
            packet = build_stun(Method.DATA, Class.INDICATION, tid, attrs, fingerprint=False)
        self.stats.packets_to_clients += 1
        self.stats.bytes_to_clients += len(data)
        return [ToClient(packet, allocation.client)]

    def _channel_data(self, data: bytes, addr: Addr, now: float) -> list[Output]:
        allocation = self._by_client.get(addr)
        if allocation is None:
            return []
        channel, length = struct.unpack_from("!HH", data)
        bound = allocation.channels.get(channel)
        if bound is None or bound[1] <= now or len(data) < 4 + length:
            return []
        self.stats.packets_to_peers += 1
        self.stats.bytes_to_peers += length
        return [ToPeer(allocation.relay, data[4 : 4 + length], bound[0])]

    def _send_indication(self, message: StunMessage, addr: Addr, now: float) -> list[Output]:
        allocation = self._by_client.get(addr)
        peer_value, data = message.get(Attr.XOR_PEER_ADDRESS), message.get(Attr.DATA)
        if allocation is None or peer_value is None or data is None:
            return []
        try:
            peer = unpack_xor_address(peer_value, message.transaction_id)
        except ValueError:
            return []
        # Permissions only ever hold loopback addresses; check again anyway, it is cheap.
        if not is_loopback(peer[0], ipv4_only=True) or not allocation.permitted(peer[0], now):
            return []
        self.stats.packets_to_peers += 1
        self.stats.bytes_to_peers += len(data)
        return [ToPeer(allocation.relay, data, peer)]

    # requests

    def _request(self, message: StunMessage, addr: Addr, now: float) -> bytes:
        tid = message.transaction_id
        if message.method == Method.BINDING:
            attrs = [(Attr.XOR_MAPPED_ADDRESS, pack_xor_address(addr, tid))]
            return self._success(message, attrs, None)
        if message.method not in (
            Method.ALLOCATE,
            Method.REFRESH,
            Method.CREATE_PERMISSION,
            Method.CHANNEL_BIND,
        ):
            return self._error(message, 400, None)
        try:
            username, key = self._authenticate(message, addr, now)
        except _Reject as reject:
            self.stats.auth_failures += 1
            return self._error(message, reject.code, None, reject.extra)
        try:
            unknown = [a for a, _ in message.attributes if a < 0x8000 and a not in UNDERSTOOD]
            if unknown:
                raise _Reject(420, [(Attr.UNKNOWN_ATTRIBUTES, _unknown_list(unknown))])
            if message.method == Method.ALLOCATE:
                return self._allocate(message, addr, username, key, now)
            allocation = self._by_client.get(addr)
            if allocation is None:
                raise _Reject(437)
            if allocation.username != username:
                raise _Reject(441)
            if message.method == Method.REFRESH:
                return self._refresh(message, allocation, key, now)
            if message.method == Method.CREATE_PERMISSION:
                return self._create_permission(message, allocation, key, now)
            return self._channel_bind(message, allocation, key, now)
        except _Reject as reject:
            return self._error(message, reject.code, key, reject.extra)

    def _authenticate(self, message: StunMessage, addr: Addr, now: float) -> tuple[str, bytes]:
        """Long-term credential check (RFC 8489 section 9.2); the username and key, or _Reject."""
        challenge = [(Attr.REALM, self.realm.encode()), (Attr.NONCE, self._nonce(addr, now))]
        if message.integrity is None:
            raise _Reject(401, challenge)
        username, realm, nonce = (
            message.get(Attr.USERNAME),
            message.get(Attr.REALM),
            message.get(Attr.NONCE),
        )
        if username is None or realm is None or nonce is None:
            raise _Reject(400)
        if not self._nonce_valid(nonce, addr, now):
            raise _Reject(438, challenge)
        name = username.decode(errors="replace")
        # Credentials expire for new allocations only; an allocation made in time lives on.
        allocation = self._by_client.get(addr)
        live = allocation is not None and allocation.username == name
        password = self.issuer.check(name, self._unix_time(), allow_expired=live)
        if password is None:
            raise _Reject(401, challenge)
        key = integrity_key(name, self.realm, password)
        if not hmac.compare_digest(message.integrity, integrity_of(message.signed, key)):
            raise _Reject(401, challenge)
        return name, key

    def _nonce(self, addr: Addr, now: float) -> bytes:
        expiry = int((now + self._nonce_lifetime) * 1000)
        return f"{expiry:x}-{self._nonce_mac(expiry, addr)}".encode()

    def _nonce_mac(self, expiry: int, addr: Addr) -> str:
        text = f"{expiry}|{addr[0]}|{addr[1]}".encode()
        return hmac.new(self._secret, text, hashlib.sha1).hexdigest()[:24]

    def _nonce_valid(self, nonce: bytes, addr: Addr, now: float) -> bool:
        expiry_hex, sep, mac = nonce.decode(errors="replace").partition("-")
        try:
            expiry = int(expiry_hex, 16)
        except ValueError:
            return False
        if not sep or not hmac.compare_digest(mac, self._nonce_mac(expiry, addr)):
            return False
        return expiry / 1000 > now

    def _allocate(
        self, message: StunMessage, addr: Addr, username: str, key: bytes, now: float
    ) -> bytes:
        existing = self._by_client.get(addr)
        if existing is not None:
            if existing.transaction_id == message.transaction_id:
                return existing.response
            raise _Reject(437)
        transport = message.get(Attr.REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            raise _Reject(400)
        if transport[0] != UDP_PROTOCOL:
            raise _Reject(442)
        family = message.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family[:1] != b"\x01":
            raise _Reject(440)
        if len(self._by_client) >= self._max_allocations:
            raise _Reject(486)
        relay = self._bind_relay()
        if relay is None:
            raise _Reject(508)
        lifetime = max(self._requested_lifetime(message), self._default_lifetime)
        tid = message.transaction_id
        attrs = [
            (Attr.XOR_RELAYED_ADDRESS, pack_xor_address(relay, tid)),
            (Attr.LIFETIME, u32(int(lifetime))),
            (Attr.XOR_MAPPED_ADDRESS, pack_xor_address(addr, tid)),
        ]
        response = self._success(message, attrs, key)
        allocation = Allocation(addr, relay, username, key, now + lifetime, tid, response)
        self._by_client[addr] = allocation
        self._by_relay[relay] = allocation
        self.stats.allocations_total += 1
        return response

    def _requested_lifetime(self, message: StunMessage) -> float:
        value = message.get(Attr.LIFETIME)
        if value is None:
            return self._default_lifetime
        if len(value) != 4:
            raise _Reject(400)
        return float(min(struct.unpack("!I", value)[0], self._max_lifetime))

    def _refresh(
        self, message: StunMessage, allocation: Allocation, key: bytes, now: float
    ) -> bytes:
        lifetime = self._requested_lifetime(message)
        if lifetime == 0:
            self._remove(allocation)
        else:
            allocation.expires = now + lifetime
        return self._success(message, [(Attr.LIFETIME, u32(int(lifetime)))], key)

    def _peers(self, message: StunMessage) -> list[Addr]:
        values = message.get_all(Attr.XOR_PEER_ADDRESS)
        if not values:
            raise _Reject(400)
        try:
            peers = [unpack_xor_address(v, message.transaction_id) for v in values]
        except ValueError:
            raise _Reject(400) from None
        if any(":" in host for host, _ in peers):
            raise _Reject(443)
        if not all(is_loopback(host, ipv4_only=True) for host, _ in peers):
            raise _Reject(403)
        return peers

    def _create_permission(
        self, message: StunMessage, allocation: Allocation, key: bytes, now: float
    ) -> bytes:
        for host, _ in self._peers(message):
            allocation.permissions[host] = now + PERMISSION_LIFETIME
        return self._success(message, [], key)

    def _channel_bind(
        self, message: StunMessage, allocation: Allocation, key: bytes, now: float
    ) -> bytes:
        value = message.get(Attr.CHANNEL_NUMBER)
        if value is None or len(value) != 4:
            raise _Reject(400)
        channel = struct.unpack("!H", value[:2])[0]
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise _Reject(400)
        peers = self._peers(message)
        if len(peers) != 1:
            raise _Reject(400)
        peer = peers[0]
        bound = allocation.channels.get(channel)
        if bound is not None and bound[0] != peer:
            raise _Reject(400)
        if allocation.peer_channels.get(peer, channel) != channel:
            raise _Reject(400)
        allocation.channels[channel] = (peer, now + CHANNEL_LIFETIME)
        allocation.peer_channels[peer] = channel
        allocation.permissions[peer[0]] = now + PERMISSION_LIFETIME
        self.stats.channel_binds += 1
        return self._success(message, [], key)

    def _success(self, message: StunMessage, attrs: Attrs, key: bytes | None) -> bytes:
        attrs = [*attrs, (Attr.SOFTWARE, self._software)]
        return build_stun(message.method, Class.SUCCESS, message.transaction_id, attrs, key)

    def _error(
        self,
        message: StunMessage,
        code: int,
        key: bytes | None,
        extra: Attrs = (),
    ) -> bytes:
        attrs = [
            (Attr.ERROR_CODE, error_code_value(code)),
            *extra,
            (Attr.SOFTWARE, self._software),
        ]
        return build_stun(message.method, Class.ERROR, message.transaction_id, attrs, key)

    # time

    def next_deadline(self) -> float | None:
        """When `expire` next has something to do (None: nothing to expire)."""
        deadlines = [a.expires for a in self._by_client.values()]
        for allocation in self._by_client.values():
            deadlines.extend(allocation.permissions.values())
            deadlines.extend(exp for _, exp in allocation.channels.values())
        return min(deadlines, default=None)

    def expire(self, now: float) -> list[Output]:
        outputs: list[Output] = []
        for allocation in list(self._by_client.values()):
            if allocation.expires <= now:
                self._remove(allocation)
                outputs.append(CloseRelay(allocation.relay))
                continue
            for host, exp in list(allocation.permissions.items()):
                if exp <= now:
                    del allocation.permissions[host]
            for channel, (peer, exp) in list(allocation.channels.items()):
                if exp <= now:
                    del allocation.channels[channel]
                    del allocation.peer_channels[peer]
        return outputs

    def close(self) -> list[Output]:
        """Drop every allocation; the relays to close."""
        outputs: list[Output] = [CloseRelay(a.relay) for a in self._by_client.values()]
        self._by_client.clear()
        self._by_relay.clear()
        return outputs

    def _remove(self, allocation: Allocation) -> None:
        self._by_client.pop(allocation.client, None)
        self._by_relay.pop(allocation.relay, None)


def _unknown_list(attrs: list[int]) -> bytes:
    return b"".join(struct.pack("!H", a) for a in attrs)
