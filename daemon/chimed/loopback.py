"""Whether a host is this machine: the rule behind every "loopback only" default (the daemon's
TCP listener without TLS, the embedded service, the TURN relay's peers)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str, *, ipv4_only: bool = False) -> bool:
    """`host` is "localhost" or a loopback address (an IPv6 one in brackets too); with
    `ipv4_only`, only an IPv4 loopback address (127.0.0.0/8) counts."""
    if host == "localhost":
        return not ipv4_only
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback and (ip.version == 4 or not ipv4_only)
