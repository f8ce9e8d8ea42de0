"""The embedded service's TURN relay: the asyncio adapter that runs `TurnServer` (turn_server.py)
on a UDP socket, with one relay socket per allocation on 127.0.0.1."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable

from chimed.embedded.stun import Addr
from chimed.embedded.turn_server import (
    Output,
    ToClient,
    ToPeer,
    TurnCredentials,
    TurnServer,
    TurnStats,
)
from chimed.loopback import is_loopback

RELAY_HOST = "127.0.0.1"
_READ_BATCH = 64  # datagrams read per wake-up of one relay socket, so one peer cannot starve others


class _ServerProtocol(asyncio.DatagramProtocol):
    def __init__(self, from_client: Callable[[bytes, Addr], None]) -> None:
        self._from_client = from_client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._from_client(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a client that went away: nothing to do


class TurnRelay:
    """The TURN relay on a UDP socket, relay sockets on 127.0.0.1.

    relay = TurnRelay(); await relay.start()
    creds = relay.issue_credentials(attendee_id)   # for JOIN_ACK.turn_credentials
    await relay.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        realm: str = "chimed",
        *,
        credential_ttl: int = 86400,
        default_lifetime: float = 600.0,
        max_allocations: int = 1000,
    ) -> None:
        self._host = host
        self._port = port
        self._credential_ttl = credential_ttl
        self._server = TurnServer(
            realm=realm,
            secret=secrets.token_bytes(32),
            bind_relay=self._bind_relay,
            default_lifetime=default_lifetime,
            max_allocations=max_allocations,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._relays: dict[Addr, socket.socket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._release_listeners: list[Callable[[Addr], None]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _ServerProtocol(self._from_client), local_addr=(self._host, self._port)
        )
        self._transport = transport
        self._port = transport.get_extra_info("sockname")[1]

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._apply(self._server.close())
        for addr in list(self._relays):
            self._close_relay(addr)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def uris(self) -> tuple[str, ...]:
        host = RELAY_HOST if self._host in ("", "0.0.0.0") else self._host
        if ":" in host:
            host = f"[{host}]"
        return (f"turn:{host}:{self._port}?transport=udp",)

    @property
    def server(self) -> TurnServer:
        return self._server

    @property
    def stats(self) -> TurnStats:
        return self._server.stats

    @property
    def allocations(self) -> int:
        """Allocations alive now."""
        return self._server.allocations

    @property
    def relay_sockets(self) -> int:
        return len(self._relays)

    def add_release_listener(self, callback: Callable[[Addr], None]) -> None:
        """Call `callback(relayed_address)` whenever an allocation's relay socket is closed."""
        self._release_listeners.append(callback)

    def issue_credentials(self, attendee_id: str, ttl: int | None = None) -> TurnCredentials:
        """Credentials for one attendee's JOIN_ACK, good for new allocations until `ttl` passes."""
        if self._transport is None:
            raise RuntimeError("the TURN relay is not started")
        ttl = self._credential_ttl if ttl is None else ttl
        username, password = self._server.issuer.issue(attendee_id, ttl, time.time())
        return TurnCredentials(username, password, max(ttl, 0), self.uris)

    # I/O

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _from_client(self, data: bytes, addr: Addr) -> None:
        self._apply(self._server.datagram_from_client(data, addr, self._now()))
        if data[:1] and not data[0] & 0xC0:
            self._arm()  # a STUN message may have moved a deadline; channel data never does

    def _relay_readable(self, sock: socket.socket, relay: Addr) -> None:
        now = self._now()
        for _ in range(_READ_BATCH):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP unreachable from an earlier send: the next datagram may be fine
            self._apply(self._server.datagram_from_peer(relay, data, (addr[0], addr[1]), now))

    def _apply(self, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, ToPeer):
                sock = self._relays.get(out.relay)
                # The state machine admits loopback peers only; refuse anything else here too.
                if sock is None or not is_loopback(out.addr[0], ipv4_only=True):
                    continue
                try:
                    sock.sendto(out.data, out.addr)
                except OSError:
                    pass  # a full buffer or an unreachable peer: UDP drops it
            elif isinstance(out, ToClient):
                if self._transport is not None:
                    self._transport.sendto(out.data, out.addr)
            else:
                self._close_relay(out.relay)

    def _bind_relay(self) -> Addr | None:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((RELAY_HOST, 0))
            addr: Addr = sock.getsockname()
            self._loop.add_reader(sock.fileno(), self._relay_readable, sock, addr)
        except OSError:
            sock.close()
            return None
        self._relays[addr] = sock
        return addr

    def _close_relay(self, addr: Addr) -> None:
        sock = self._relays.pop(addr, None)
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
        sock.close()
        for callback in self._release_listeners:
            callback(addr)

    def _arm(self) -> None:
        deadline = self._server.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() <= deadline:
                return  # the armed timer fires first anyway, and re-arms
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._expire, deadline)

    def _expire(self, deadline: float) -> None:
        self._timer = None
        # asyncio may run a timer up to its clock resolution early.
        self._apply(self._server.expire(max(self._now(), deadline)))
        self._arm()
