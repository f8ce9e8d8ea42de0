"""The STUN codec (RFC 8489): just what the embedded TURN server needs. Messages are parsed
into `StunMessage` (attributes in order, what MESSAGE-INTEGRITY covers kept aside) and built
with MESSAGE-INTEGRITY and FINGERPRINT appended."""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

Addr = tuple[str, int]
Attrs = Sequence[tuple[int, bytes]]

# --- STUN codec (RFC 8489): just what a TURN server needs --------------------------------------

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")
_FINGERPRINT_XOR = 0x5354554E


class Method(enum.IntEnum):
    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Class(enum.IntEnum):
    REQUEST = 0x000
    INDICATION = 0x010
    SUCCESS = 0x100
    ERROR = 0x110


class Attr(enum.IntEnum):
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    XOR_MAPPED_ADDRESS = 0x0020
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028


# Comprehension-required attributes (< 0x8000) this server understands; any other one in a
# request is answered with 420. DONT-FRAGMENT is accepted: loopback never fragments.
UNDERSTOOD = frozenset(a.value for a in Attr if a < 0x8000)

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    508: "Insufficient Capacity",
}


@dataclass(slots=True)
class StunMessage:
    method: int
    cls: int
    transaction_id: bytes
    # Attributes before MESSAGE-INTEGRITY, in order (later ones are not authenticated).
    attributes: list[tuple[int, bytes]]
    integrity: bytes | None = None
    # The bytes MESSAGE-INTEGRITY covers, length field already adjusted.
    signed: bytes = b""

    def get(self, attr: int) -> bytes | None:
        for kind, value in self.attributes:
            if kind == attr:
                return value
        return None

    def get_all(self, attr: int) -> list[bytes]:
        return [value for kind, value in self.attributes if kind == attr]


def _pad(length: int) -> int:
    return -length % 4


def parse_stun(data: bytes) -> StunMessage:
    """Decode a STUN message; ValueError when it is not a well-formed one."""
    if len(data) < 20 or data[0] & 0xC0:
        raise ValueError("not a STUN message")
    kind, length, cookie, tid = _HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or length % 4 or len(data) != 20 + length:
        raise ValueError("bad STUN header")
    method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2)
    message = StunMessage(method, kind & 0x0110, tid, [])
    pos = 20
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated STUN attribute")
        attr, size = _ATTR.unpack_from(data, pos)
        value = data[pos + 4 : pos + 4 + size]
        if len(value) != size:
            raise ValueError("truncated STUN attribute")
        if attr == Attr.FINGERPRINT:
            expected = _fingerprint(data[:pos])
            if size != 4 or struct.unpack("!I", value)[0] != expected:
                raise ValueError("STUN fingerprint mismatch")
            break
        if message.integrity is None:
            if attr == Attr.MESSAGE_INTEGRITY:
                if size != 20:
                    raise ValueError("bad MESSAGE-INTEGRITY")
                message.integrity = value
                message.signed = _with_length(data[:pos], pos - 20 + 24)
            else:
                message.attributes.append((attr, value))
        pos += 4 + size + _pad(size)
    return message


def _with_length(head: bytes, length: int) -> bytes:
    return head[:2] + struct.pack("!H", length) + head[4:]


def _fingerprint(head: bytes) -> int:
    return (binascii.crc32(_with_length(head, len(head) - 20 + 8)) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF


def integrity_of(signed: bytes, key: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha1).digest()


def build_stun(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: Attrs,
    key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """Encode a STUN message, signed with `key` (long-term credential) when given."""
    kind = (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls
    body = b"".join(
        _ATTR.pack(attr, len(value)) + value + bytes(_pad(len(value))) for attr, value in attributes
    )
    data = _HEADER.pack(kind, len(body), MAGIC_COOKIE, transaction_id) + body
    if key is not None:
        digest = integrity_of(_with_length(data, len(data) - 20 + 24), key)
        data = _with_length(data, len(data) - 20 + 24) + _ATTR.pack(Attr.MESSAGE_INTEGRITY, 20)
        data += digest
    if fingerprint:
        crc = _fingerprint(data)
        data = _with_length(data, len(data) - 20 + 8) + _ATTR.pack(Attr.FINGERPRINT, 4)
        data += struct.pack("!I", crc)
    return data


def pack_xor_address(addr: Addr, transaction_id: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    port = addr[1] ^ (MAGIC_COOKIE >> 16)
    mask = _COOKIE_BYTES if ip.version == 4 else _COOKIE_BYTES + transaction_id
    raw = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port) + raw


def unpack_xor_address(value: bytes, transaction_id: bytes) -> Addr:
    if len(value) not in (8, 20):
        raise ValueError("bad address length")
    family, port = struct.unpack_from("!xBH", value)
    if (family, len(value)) not in ((1, 8), (2, 20)):
        raise ValueError("bad address family")
    mask = _COOKIE_BYTES if family == 1 else _COOKIE_BYTES + transaction_id
    raw = bytes(a ^ b for a, b in zip(value[4:], mask, strict=True))
    return str(ipaddress.ip_address(raw)), port ^ (MAGIC_COOKIE >> 16)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def error_code_value(code: int) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + _REASONS[code].encode()
