"""The embedded TURN relay, driven by real clients over loopback UDP: aioice's TURN client, a raw
STUN client built on aioice's codec, and two aiortc peer connections in relay-only ICE."""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import numpy as np
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint, make_integrity_key
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame
from chimed.embedded.stun import Addr
from chimed.embedded.turn_relay import TurnRelay
from chimed.embedded.turn_server import TurnServer
from chimed.media import shortcuts
from chimed.media.ice import rtc_configuration

from tests.browser import Browser

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 5.0
UDP = 0x11000000
TCP = 0x06000000


# --- plain UDP endpoints --------------------------------------------------------------------------


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Addr]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def addr(self) -> Addr:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def sendto(self, data: bytes, addr: Addr) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self) -> tuple[bytes, Addr]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RawClient(Endpoint):
    """A TURN client by hand (aioice's STUN codec), for what aioice's own client never sends."""

    def __init__(self, server: Addr, username: str, password: str) -> None:
        super().__init__()
        self.server = server
        self.username = username
        self.password = password
        self.key: bytes | None = None
        self.realm: str | None = None
        self.nonce: bytes | None = None
        self.relayed: list[tuple[bytes, Addr]] = []  # what arrived while awaiting a response
        self.challenges: list[stun.Message] = []

    def message(self, method: stun.Method, attributes: dict[str, Any]) -> stun.Message:
        message = stun.Message(method, stun.Class.REQUEST, attributes=dict(attributes))
        if self.key is not None:
            message.attributes["USERNAME"] = self.username
            message.attributes["REALM"] = self.realm
            message.attributes["NONCE"] = self.nonce
            message.add_message_integrity(self.key)
        return message

    async def send_request(self, message: stun.Message) -> stun.Message:
        return await self.send_bytes(bytes(message), message.transaction_id)

    async def send_bytes(self, request: bytes, transaction_id: bytes) -> stun.Message:
        self.sendto(request, self.server)
        while True:
            data, addr = await self.recv()
            if data[0] & 0xC0 == 0 and addr == self.server:
                response = stun.parse_message(data)
                if response.transaction_id == transaction_id:
                    return response
            self.relayed.append((data, addr))

    async def request(self, method: stun.Method, **attributes: Any) -> stun.Message:
        """A request signed with the long-term credential, learning realm and nonce on 401/438."""
        attributes = {k.replace("_", "-"): v for k, v in attributes.items()}
        response = await self.send_request(self.message(method, attributes))
        if response.error_code in (401, 438) and "NONCE" in response.attributes:
            self.challenges.append(response)
            self.realm = response.attributes.get("REALM", self.realm)
            self.nonce = response.attributes["NONCE"]
            assert self.realm is not None
            self.key = make_integrity_key(self.username, self.realm, self.password)
            response = await self.send_request(self.message(method, attributes))
        if response.error_code not in (400, 401, 438):
            assert self.key is not None and response.check_message_integrity(self.key)
        return response

    async def allocate(self, **attributes: Any) -> stun.Message:
        attributes.setdefault("REQUESTED_TRANSPORT", UDP)
        response = await self.request(stun.Method.ALLOCATE, **attributes)
        assert response.message_class == stun.Class.RESPONSE, response
        return response

    def indicate(self, method: stun.Method, **attributes: Any) -> None:
        attributes = {k.replace("_", "-"): v for k, v in attributes.items()}
        message = stun.Message(method, stun.Class.INDICATION, attributes=attributes)
        self.sendto(bytes(message), self.server)

    async def relayed_datagram(self) -> tuple[bytes, Addr]:
        if self.relayed:
            return self.relayed.pop(0)
        return await self.recv()


async def endpoint() -> Endpoint:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=("127.0.0.1", 0))
    return protocol


@pytest.fixture
async def relay() -> AsyncIterator[TurnRelay]:
    server = TurnRelay()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        assert server.relay_sockets == 0 and server.allocations == 0


@pytest.fixture
async def peer() -> AsyncIterator[Endpoint]:
    ep = await endpoint()
    yield ep
    ep.close()


@pytest.fixture
async def raw(relay: TurnRelay) -> AsyncIterator[RawClient]:
    creds = relay.issue_credentials("raw-attendee")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(
        lambda: RawClient(("127.0.0.1", relay.port), creds.username, creds.password),
        local_addr=("127.0.0.1", 0),
    )
    yield client
    client.close()


def released(relay: TurnRelay) -> asyncio.Queue[Addr]:
    queue: asyncio.Queue[Addr] = asyncio.Queue()
    relay.add_release_listener(queue.put_nowait)
    return queue


# --- aioice's TURN client -------------------------------------------------------------------------


class Receiver(Endpoint):
    """The protocol behind an aioice TurnTransport."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.lost = asyncio.Event()

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def test_aioice_client_relays_to_a_loopback_peer_and_back(
    relay: TurnRelay, peer: Endpoint
) -> None:
    creds = relay.issue_credentials("attendee-1")
    assert creds.uris == (f"turn:127.0.0.1:{relay.port}?transport=udp",)
    assert creds.username.endswith(":attendee-1") and creds.ttl > 0
    freed = released(relay)

    transport, receiver = await create_turn_endpoint(
        Receiver, ("127.0.0.1", relay.port), creds.username, creds.password
    )
    relayed = transport.get_extra_info("sockname")
    assert relayed[0] == "127.0.0.1" and relayed[1] not in (0, relay.port)
    assert relay.allocations == 1 and relay.relay_sockets == 1

    transport.sendto(b"to the peer", peer.addr)
    assert await peer.recv() == (b"to the peer", relayed)
    peer.sendto(b"back to the client", relayed)
    assert await receiver.recv() == (b"back to the client", peer.addr)

    assert relay.stats.bytes_to_peers == len(b"to the peer")
    assert relay.stats.bytes_to_clients == len(b"back to the client")
    assert relay.stats.allocations_total == 1

    transport.close()  # Refresh with LIFETIME 0
    await asyncio.wait_for(receiver.lost.wait(), TIMEOUT)
    assert await asyncio.wait_for(freed.get(), TIMEOUT) == relayed
    assert relay.allocations == 0 and relay.relay_sockets == 0


@pytest.mark.slow
async def test_inline_channel_sends_stay_in_order_across_binding_and_refresh(
    relay: TurnRelay, peer: Endpoint
) -> None:
    """chimed's TURN send shortcut (chimed.media.fastpath): a burst sent before the channel is
    bound, then sends across channel refreshes (aioice's path again) all arrive, in order."""
    shortcuts.install()
    assert shortcuts.engaged("turn_inline_send")
    creds = relay.issue_credentials("attendee-order")
    transport, receiver = await create_turn_endpoint(
        Receiver,
        ("127.0.0.1", relay.port),
        creds.username,
        creds.password,
        channel_refresh_time=1,  # seconds: two refreshes in the run below
    )
    sent = [f"packet {i}".encode() for i in range(150)]
    try:
        for data in sent[:20]:  # before the channel is bound: queued behind the binding
            transport.sendto(data, peer.addr)
        for data in sent[20:]:
            await asyncio.sleep(0.02)
            transport.sendto(data, peer.addr)
        got = [(await peer.recv())[0] for _ in sent]
    finally:
        transport.close()
        await asyncio.wait_for(receiver.lost.wait(), TIMEOUT)
    assert got == sent
    assert relay.stats.channel_binds >= 2  # the first bind and at least one refresh
    assert receiver.errors.empty()


@pytest.mark.parametrize("case", ["wrong password", "forged username", "expired"])
async def test_bad_credentials_are_refused_with_401(relay: TurnRelay, case: str) -> None:
    creds = relay.issue_credentials("attendee-1", ttl=-60 if case == "expired" else None)
    username, password = creds.username, creds.password
    if case == "wrong password":
        password = "not-" + password
    elif case == "forged username":
        username = username.replace("attendee-1", "attendee-2")

    with pytest.raises(stun.TransactionFailed) as failed:
        await create_turn_endpoint(Receiver, ("127.0.0.1", relay.port), username, password)
    assert failed.value.response.error_code == 401
    assert relay.stats.auth_failures == 2  # the challenge, then the refused answer
    assert relay.allocations == 0 and relay.relay_sockets == 0


async def test_the_401_challenge_carries_realm_and_nonce(raw: RawClient) -> None:
    await raw.allocate()
    (challenge,) = raw.challenges
    assert challenge.error_code == 401
    assert challenge.attributes["REALM"] == "chimed"
    assert challenge.attributes["NONCE"]
    assert "MESSAGE-INTEGRITY" not in challenge.attributes


async def test_non_loopback_peers_are_forbidden(relay: TurnRelay, raw: RawClient) -> None:
    creds = relay.issue_credentials("attendee-1")
    transport, receiver = await create_turn_endpoint(
        Receiver, ("127.0.0.1", relay.port), creds.username, creds.password
    )
    try:
        # aioice binds a channel before its first send: the relay refuses it (a signed 403).
        transport.sendto(b"out", ("192.0.2.1", 9))
        error = await asyncio.wait_for(receiver.errors.get(), TIMEOUT)
        assert isinstance(error, stun.TransactionFailed) and error.response.error_code == 403
    finally:
        transport.close()
        await asyncio.wait_for(receiver.lost.wait(), TIMEOUT)

    await raw.allocate()
    for host in ("192.0.2.1", "10.0.0.1", "0.0.0.0"):
        response = await raw.request(stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=(host, 9))
        assert response.error_code == 403, host
        response = await raw.request(
            stun.Method.CHANNEL_BIND, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=(host, 9)
        )
        assert response.error_code == 403, host
        raw.indicate(stun.Method.SEND, XOR_PEER_ADDRESS=(host, 9), DATA=b"out")
    response = await raw.request(stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=("::1", 9))
    assert response.error_code == 443  # an IPv4 allocation has no IPv6 peers

    # A request after the indications: the relay has handled them, and nothing left it.
    response = await raw.request(stun.Method.REFRESH, LIFETIME=600)
    assert response.message_class == stun.Class.RESPONSE
    assert relay.stats.packets_to_peers == 0 and relay.stats.bytes_to_peers == 0


# --- the raw client: what aioice's client never does ----------------------------------------------


async def test_allocate_answer_and_indications(
    relay: TurnRelay, raw: RawClient, peer: Endpoint
) -> None:
    response = await raw.allocate(LIFETIME=60)
    relayed = response.attributes["XOR-RELAYED-ADDRESS"]
    assert relayed[0] == "127.0.0.1"
    assert response.attributes["XOR-MAPPED-ADDRESS"] == raw.addr
    assert response.attributes["LIFETIME"] == 600  # never below the default
    assert response.attributes["SOFTWARE"] == "chimed"

    # No permission yet: dropped. Datagrams keep their order on loopback, so the peer's first
    # datagram tells whether the relay let the first one through.
    raw.indicate(stun.Method.SEND, XOR_PEER_ADDRESS=peer.addr, DATA=b"too early")
    response = await raw.request(stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=peer.addr)
    assert response.message_class == stun.Class.RESPONSE
    raw.indicate(stun.Method.SEND, XOR_PEER_ADDRESS=peer.addr, DATA=b"permitted")
    assert await peer.recv() == (b"permitted", relayed)

    # The permission is for the peer's IP: any port on it may answer, as a Data indication.
    other = await endpoint()
    try:
        other.sendto(b"hello from another port", relayed)
        data, addr = await raw.relayed_datagram()
        assert addr == raw.server
        indication = stun.parse_message(data)
        assert indication.message_method == stun.Method.DATA
        assert indication.message_class == stun.Class.INDICATION
        assert indication.attributes["XOR-PEER-ADDRESS"] == other.addr
        assert indication.attributes["DATA"] == b"hello from another port"
    finally:
        other.close()


async def test_channel_bind_and_channel_data(
    relay: TurnRelay, raw: RawClient, peer: Endpoint
) -> None:
    response = await raw.allocate()
    relayed = response.attributes["XOR-RELAYED-ADDRESS"]

    for number in (0x3FFF, 0x8000):
        response = await raw.request(
            stun.Method.CHANNEL_BIND, CHANNEL_NUMBER=number, XOR_PEER_ADDRESS=peer.addr
        )
        assert response.error_code == 400, hex(number)
    response = await raw.request(
        stun.Method.CHANNEL_BIND, CHANNEL_NUMBER=0x7FFF, XOR_PEER_ADDRESS=peer.addr
    )
    assert response.message_class == stun.Class.RESPONSE
    # Rebinding the same pair refreshes it; another peer or another number for it is refused.
    response = await raw.request(
        stun.Method.CHANNEL_BIND, CHANNEL_NUMBER=0x7FFF, XOR_PEER_ADDRESS=peer.addr
    )
    assert response.message_class == stun.Class.RESPONSE
    response = await raw.request(
        stun.Method.CHANNEL_BIND, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=peer.addr
    )
    assert response.error_code == 400
    response = await raw.request(
        stun.Method.CHANNEL_BIND,
        CHANNEL_NUMBER=0x7FFF,
        XOR_PEER_ADDRESS=("127.0.0.1", peer.addr[1] + 1),
    )
    assert response.error_code == 400

    # ChannelData: an unbound channel is dropped, a bound one relayed; trailing bytes beyond
    # the length field (padding) are not part of the payload.
    raw.sendto(struct.pack("!HH", 0x4001, 5) + b"stray", raw.server)
    raw.sendto(struct.pack("!HH", 0x7FFF, 5) + b"abcde\0\0\0", raw.server)
    assert await peer.recv() == (b"abcde", relayed)

    peer.sendto(b"over the channel", relayed)
    data, addr = await raw.relayed_datagram()
    assert addr == raw.server
    assert data == struct.pack("!HH", 0x7FFF, 16) + b"over the channel"
    assert relay.stats.packets_to_peers == 1 and relay.stats.packets_to_clients == 1


async def test_refresh_sets_the_lifetime_and_zero_frees_the_allocation(
    relay: TurnRelay, raw: RawClient
) -> None:
    freed = released(relay)
    relayed = (await raw.allocate()).attributes["XOR-RELAYED-ADDRESS"]
    response = await raw.request(stun.Method.REFRESH, LIFETIME=1200)
    assert response.attributes["LIFETIME"] == 1200
    response = await raw.request(stun.Method.REFRESH, LIFETIME=10**6)
    assert response.attributes["LIFETIME"] == 3600  # capped

    response = await raw.request(stun.Method.REFRESH, LIFETIME=0)
    assert response.message_class == stun.Class.RESPONSE
    assert response.attributes["LIFETIME"] == 0
    assert await asyncio.wait_for(freed.get(), TIMEOUT) == relayed
    assert relay.allocations == 0 and relay.relay_sockets == 0

    response = await raw.request(stun.Method.CREATE_PERMISSION, XOR_PEER_ADDRESS=raw.addr)
    assert response.error_code == 437  # no allocation any more
    # The same 5-tuple may allocate again.
    assert (await raw.allocate()).attributes["XOR-RELAYED-ADDRESS"] != relayed
    assert relay.allocations == 1 and relay.stats.allocations_total == 2


async def test_allocate_errors(relay: TurnRelay, raw: RawClient) -> None:
    response = await raw.request(stun.Method.ALLOCATE)
    assert response.error_code == 400  # no REQUESTED-TRANSPORT
    response = await raw.request(stun.Method.ALLOCATE, REQUESTED_TRANSPORT=TCP)
    assert response.error_code == 442
    assert relay.allocations == 0

    # An unknown comprehension-required attribute (EVEN-PORT, 0x0018): a signed 420 naming it.
    assert raw.key is not None
    message = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    message.attributes.update(
        {"REQUESTED-TRANSPORT": UDP, "USERNAME": raw.username, "REALM": raw.realm}
    )
    message.attributes["NONCE"] = raw.nonce
    data = bytes(message) + struct.pack("!HHB3x", 0x0018, 1, 0x80)
    data = data[:2] + struct.pack("!H", len(data) - 20) + data[4:]
    integrity = stun.message_integrity(data, raw.key)
    data = data[:2] + struct.pack("!H", len(data) - 20 + 24) + data[4:]
    response = await raw.send_bytes(
        data + struct.pack("!HH", 0x0008, 20) + integrity, message.transaction_id
    )
    assert response.error_code == 420
    assert response.check_message_integrity(raw.key)
    assert relay.allocations == 0

    first = raw.message(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP})
    response = await raw.send_request(first)
    assert response.message_class == stun.Class.RESPONSE
    # A retransmission gets the same answer; a new Allocate on the same 5-tuple is a mismatch.
    again = await raw.send_request(first)
    assert bytes(again) == bytes(response)
    response = await raw.request(stun.Method.ALLOCATE, REQUESTED_TRANSPORT=UDP)
    assert response.error_code == 437
    assert relay.allocations == 1

    # Another attendee's valid credentials cannot drive this allocation.
    other = relay.issue_credentials("someone-else")
    raw.username, raw.password = other.username, other.password
    assert raw.realm is not None
    raw.key = make_integrity_key(raw.username, raw.realm, raw.password)
    response = await raw.request(stun.Method.REFRESH, LIFETIME=600)
    assert response.error_code == 441


@pytest.mark.slow
async def test_an_allocation_expires_without_refresh() -> None:
    relay = TurnRelay(default_lifetime=1)
    await relay.start()
    freed = released(relay)
    creds = relay.issue_credentials("attendee-1")
    loop = asyncio.get_running_loop()
    _, raw = await loop.create_datagram_endpoint(
        lambda: RawClient(("127.0.0.1", relay.port), creds.username, creds.password),
        local_addr=("127.0.0.1", 0),
    )
    try:
        relayed = (await raw.allocate(LIFETIME=1)).attributes["XOR-RELAYED-ADDRESS"]
        assert await asyncio.wait_for(freed.get(), TIMEOUT) == relayed
        assert relay.allocations == 0 and relay.relay_sockets == 0
        response = await raw.request(stun.Method.REFRESH, LIFETIME=600)
        assert response.error_code == 437
    finally:
        raw.close()
        await relay.stop()


# --- the state machine with a hand-driven clock ---------------------------------------------------


class Relays:
    """Relay addresses for a TurnServer driven without sockets."""

    def __init__(self) -> None:
        self.next_port = 50000

    def __call__(self) -> Addr:
        self.next_port += 1
        return ("127.0.0.1", self.next_port)


CLIENT: Addr = ("127.0.0.1", 40000)
PEER: Addr = ("127.0.0.1", 40001)


def machine(nonce_lifetime: float = 60.0) -> tuple[TurnServer, str, str]:
    server = TurnServer(
        realm="chimed",
        secret=b"s" * 32,
        bind_relay=Relays(),
        nonce_lifetime=nonce_lifetime,
        unix_time=lambda: 1.7e9,
    )
    username, password = server.issuer.issue("attendee-1", 3600, 1.7e9)
    return server, username, password


def exchange(server: TurnServer, message: stun.Message, now: float) -> stun.Message:
    outputs = server.datagram_from_client(bytes(message), CLIENT, now)
    data = outputs[0].data  # type: ignore[union-attr]
    return stun.parse_message(data)


def signed(
    method: stun.Method, username: str, key: bytes, nonce: bytes, **attributes: Any
) -> stun.Message:
    message = stun.Message(method, stun.Class.REQUEST)
    message.attributes.update({k.replace("_", "-"): v for k, v in attributes.items()})
    message.attributes.update(USERNAME=username, REALM="chimed", NONCE=nonce)
    message.add_message_integrity(key)
    return message


def test_a_stale_nonce_gets_438_with_a_fresh_one() -> None:
    server, username, password = machine()
    key = make_integrity_key(username, "chimed", password)
    challenge = exchange(server, stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST), 0.0)
    assert challenge.error_code == 401
    nonce = challenge.attributes["NONCE"]

    allocate = signed(stun.Method.ALLOCATE, username, key, nonce, REQUESTED_TRANSPORT=UDP)
    assert exchange(server, allocate, 30.0).message_class == stun.Class.RESPONSE

    refresh = signed(stun.Method.REFRESH, username, key, nonce, LIFETIME=600)
    stale = exchange(server, refresh, 61.0)
    assert stale.error_code == 438
    assert stale.attributes["REALM"] == "chimed" and stale.attributes["NONCE"] != nonce
    refresh = signed(stun.Method.REFRESH, username, key, stale.attributes["NONCE"], LIFETIME=600)
    assert exchange(server, refresh, 62.0).message_class == stun.Class.RESPONSE
    # A made-up nonce is no better than a stale one.
    forged = signed(stun.Method.REFRESH, username, key, b"ffffffffff-00", LIFETIME=600)
    assert exchange(server, forged, 63.0).error_code == 438


def test_permissions_channels_and_allocations_expire() -> None:
    server, username, password = machine(nonce_lifetime=10_000.0)
    key = make_integrity_key(username, "chimed", password)
    nonce = exchange(
        server, stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST), 0.0
    ).attributes["NONCE"]
    allocate = signed(stun.Method.ALLOCATE, username, key, nonce, REQUESTED_TRANSPORT=UDP)
    relay = exchange(server, allocate, 0.0).attributes["XOR-RELAYED-ADDRESS"]
    permit = signed(stun.Method.CREATE_PERMISSION, username, key, nonce, XOR_PEER_ADDRESS=PEER)
    assert exchange(server, permit, 0.0).message_class == stun.Class.RESPONSE

    assert server.datagram_from_peer(relay, b"x", PEER, 299.0)
    assert server.next_deadline() == 300.0
    assert server.expire(300.0) == []
    assert server.datagram_from_peer(relay, b"x", PEER, 300.0) == []  # permission gone

    # A channel keeps its peer reachable as long as it is bound (aioice never sends
    # CreatePermission), and goes after 10 minutes.
    bind = signed(
        stun.Method.CHANNEL_BIND, username, key, nonce, CHANNEL_NUMBER=0x4000, XOR_PEER_ADDRESS=PEER
    )
    assert exchange(server, bind, 301.0).message_class == stun.Class.RESPONSE
    refresh = signed(stun.Method.REFRESH, username, key, nonce, LIFETIME=3600)
    assert exchange(server, refresh, 302.0).attributes["LIFETIME"] == 3600
    server.expire(700.0)
    assert server.datagram_from_peer(relay, b"y", PEER, 700.0)
    channel_data = struct.pack("!HH", 0x4000, 1) + b"z"
    assert server.datagram_from_client(channel_data, CLIENT, 700.0)
    server.expire(901.0)
    assert server.datagram_from_peer(relay, b"y", PEER, 901.0) == []
    assert server.datagram_from_client(channel_data, CLIENT, 901.0) == []

    # The allocation itself ends at its lifetime, and its relay is to be closed.
    assert server.allocations == 1
    (closed,) = server.expire(302.0 + 3600.0)
    assert closed.relay == relay  # type: ignore[union-attr]
    assert server.allocations == 0 and server.next_deadline() is None


# --- two aiortc peer connections, relay-only, through the relay -----------------------------------


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames of 48 kHz mono s16, paced like a microphone."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._pts / 48000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)  # real-time pacing of the source, not a wait for an event
        t = (np.arange(960) + self._pts) / 48000
        samples = (8000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += 960
        return frame


@pytest.mark.slow
async def test_two_aiortc_peers_carry_audio_through_the_relay(
    relay: TurnRelay, loopback_only: None
) -> None:
    freed = released(relay)
    a_creds = relay.issue_credentials("attendee-a")
    b_creds = relay.issue_credentials("attendee-b")
    a = RTCPeerConnection(rtc_configuration(list(a_creds.uris), a_creds.username, a_creds.password))
    b = RTCPeerConnection(rtc_configuration(list(b_creds.uris), b_creds.username, b_creds.password))
    tracks: list[MediaStreamTrack] = [ToneTrack(), ToneTrack()]
    received: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    a.on("track", received.put_nowait)
    b.on("track", received.put_nowait)
    try:
        a.addTrack(tracks[0])
        b.addTrack(tracks[1])
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)

        # Relay candidates only, on the relay's loopback sockets.
        for sdp in (a.localDescription.sdp, b.localDescription.sdp):
            candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
            assert candidates and all(" typ relay " in c for c in candidates), candidates
            assert all(c.split()[4] == "127.0.0.1" for c in candidates), candidates
        assert relay.allocations == 2

        remote = [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(2)]
        for track in remote:
            assert track.kind == "audio"
            peak = 0
            for _ in range(25):  # half a second of audio each way
                frame = cast(AudioFrame, await asyncio.wait_for(track.recv(), TIMEOUT))
                peak = max(peak, int(np.abs(frame.to_ndarray()).max()))
            assert peak > 1000  # the tone, not silence

        # Every media byte went through the relay: both ways, far more than ICE checks alone.
        assert relay.stats.allocations_total == 2
        # Each media packet crosses the relay twice (client -> peer allocation -> client): the
        # 25 frames received above are 25 packets each way through it, whatever the timing.
        assert relay.stats.packets_to_peers >= 25 and relay.stats.packets_to_clients >= 25
        assert relay.stats.bytes_to_peers > 25 * 12 and relay.stats.bytes_to_clients > 25 * 12
    finally:
        for track in tracks:
            track.stop()
        await a.close()
        await b.close()
    # Closing deletes both allocations (Refresh 0) and the relay frees their sockets.
    for _ in range(2):
        await asyncio.wait_for(freed.get(), TIMEOUT)
    assert relay.allocations == 0 and relay.relay_sockets == 0


# --- Chromium's TURN client (the one the official web client uses) against aiortc -----------------

BROWSER_PEER = """(async () => {
  const [uris, username, credential] = %s;
  const pc = new RTCPeerConnection({
    iceServers: [{urls: uris, username, credential}], iceTransportPolicy: 'relay'});
  window.pc = pc;
  // Remote tracks start muted and unmute on their first RTP packet.
  window.unmuted = new Promise(resolve => {
    pc.ontrack = e => e.track.muted ? e.track.onunmute = () => resolve(true) : resolve(true);
  });
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  const dest = ctx.createMediaStreamDestination();
  osc.connect(dest);
  osc.start();
  pc.addTrack(dest.stream.getAudioTracks()[0], dest.stream);
  const gathered = new Promise(resolve => {
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered;
  return pc.localDescription.sdp;
})()"""

BROWSER_STATS = """(async () => {
  const stats = [...(await pc.getStats()).values()];
  const pair = stats.find(s => s.type === 'candidate-pair' && s.nominated
                               && s.state === 'succeeded');
  const local = pair && stats.find(s => s.id === pair.localCandidateId);
  const inbound = stats.find(s => s.type === 'inbound-rtp' && s.kind === 'audio');
  return {local: local ? local.candidateType : null,
          address: local ? local.address : null,
          received: inbound ? inbound.packetsReceived : 0};
})()"""


@pytest.mark.browser
@pytest.mark.slow
async def test_chromium_and_aiortc_carry_audio_through_the_relay(
    relay: TurnRelay, loopback_only: None
) -> None:
    freed = released(relay)
    web = relay.issue_credentials("web-attendee")
    own = relay.issue_credentials("chimed-attendee")
    pc = RTCPeerConnection(rtc_configuration(list(own.uris), own.username, own.password))
    tone = ToneTrack()
    received: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    pc.on("track", received.put_nowait)
    try:
        async with Browser() as browser:
            page = await browser.open("about:blank")
            args = json.dumps([list(web.uris), web.username, web.password])
            offer = await page.eval(BROWSER_PEER % args, timeout=TIMEOUT * 2)
            candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
            assert candidates and all(" typ relay " in c for c in candidates), candidates
            assert all(c.split()[4] == "127.0.0.1" for c in candidates), candidates

            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            pc.addTrack(tone)  # fills the offered audio transceiver: sendrecv
            await pc.setLocalDescription(await pc.createAnswer())
            answer = json.dumps(pc.localDescription.sdp)
            await page.eval(f"pc.setRemoteDescription({{type: 'answer', sdp: {answer}}})")

            # The browser's oscillator reaches aiortc as sound, through the relay.
            track = await asyncio.wait_for(received.get(), TIMEOUT)
            peak = 0
            for _ in range(25):
                frame = cast(AudioFrame, await asyncio.wait_for(track.recv(), TIMEOUT))
                peak = max(peak, int(np.abs(frame.to_ndarray()).max()))
            assert peak > 1000
            # aiortc's tone reaches the browser on a relayed candidate pair.
            await page.wait_for(
                "pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed'"
            )
            assert await page.eval("window.unmuted") is True
            stats = await page.eval(BROWSER_STATS)
            assert stats["local"] == "relay" and stats["address"] == "127.0.0.1", stats
            assert stats["received"] > 0, stats
            await page.eval("pc.close()")
    finally:
        tone.stop()
        await pc.close()
    assert relay.stats.allocations_total >= 2
    # Each media packet crosses the relay twice (client -> peer allocation -> client): the
    # 25 frames received above are 25 packets each way through it, whatever the timing.
    assert relay.stats.packets_to_peers >= 25 and relay.stats.packets_to_clients >= 25
    assert relay.stats.bytes_to_peers > 25 * 12 and relay.stats.bytes_to_clients > 25 * 12
    # aiortc deletes its allocation; Chromium's goes with its pc (or when the relay stops).
    await asyncio.wait_for(freed.get(), TIMEOUT)
