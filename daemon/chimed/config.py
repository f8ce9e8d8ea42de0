"""chimed's settings, one typed object per daemon and per embedded service.

The CLI builds a DaemonConfig (or, for `chimed embedded`, an EmbeddedConfig) and passes it
down: the daemon hands its MediaConfig to the session manager, each session and each peer;
an embedded service gives its own MediaConfig to its media server's peers. Nothing here is
process-wide, so two daemons, or a daemon and an embedded service, in one process keep
their own settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_OPUS_COMPLEXITY = 5
LOOPBACK_JITTER_DEPTH = 1
LOOPBACK_STUN_RTO_S = 0.1
LOOPBACK_HOSTS = ("127.0.0.1",)
VIDEO_CODECS = ("VP8", "H264")


@dataclass(frozen=True)
class MediaConfig:
    """How the peer connections of one daemon (or one embedded service) send and receive."""

    jitter_depth: int | None = None
    """Received packets held waiting for a missing one (chimed.media.jitter's shallow
    buffer; in-sequence packets never wait). None: aiortc's own buffer, which suits real
    networks; on loopback it is only delay."""

    opus_complexity: int = DEFAULT_OPUS_COMPLEXITY
    """libopus complexity (0-10) of the speech this side encodes (a session's microphone,
    the embedded server's mix): lower costs less CPU, higher sounds slightly better."""

    ice_host_addresses: tuple[str, ...] | None = None
    """Gather host ICE candidates only on these addresses. None: every interface but
    loopback (aioice's way)."""

    stun_rto: float | None = None
    """First retransmission timeout (seconds) of STUN/TURN transactions, ICE checks
    included; it doubles per retry. None: aioice's 500 ms (RFC 8489). On loopback the first
    ICE check is often dropped by the peer's TURN relay before its permission is in place,
    and 500 ms of waiting for that alone would be added to every join."""

    video_codec: str = "VP8"
    """The codec the camera is offered with first (VP8 or H264; the other follows): what the
    service forwards to every receiver, who must decode it."""

    def __post_init__(self) -> None:
        if self.jitter_depth is not None and self.jitter_depth < 0:
            raise ValueError("jitter buffer depth must be at least 0")
        if not 0 <= self.opus_complexity <= 10:
            raise ValueError(f"Opus complexity must be 0 to 10, got {self.opus_complexity}")
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video codec must be one of {VIDEO_CODECS}, got {self.video_codec}")
        if self.stun_rto is not None and not self.stun_rto > 0:
            raise ValueError(f"STUN retransmission timeout must be positive, got {self.stun_rto}")


LOOPBACK_MEDIA = MediaConfig(
    jitter_depth=LOOPBACK_JITTER_DEPTH,
    ice_host_addresses=LOOPBACK_HOSTS,
    stun_rto=LOOPBACK_STUN_RTO_S,
)
"""Peers on loopback: the embedded service's, and a daemon's sessions against it."""

NETWORK_MEDIA = MediaConfig()
"""Peers on real networks (AWS): aiortc's and aioice's own settings."""


def default_socket_path() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return str(Path(runtime) / "chimed" / "chimed.sock")
    if os.getuid() == 0:
        return "/run/chimed/chimed.sock"
    return f"/tmp/chimed-{os.getuid()}/chimed.sock"


@dataclass(frozen=True)
class EmbeddedConfig:
    """The embedded Chime service (in a daemon's process, or alone: `chimed embedded`)."""

    host: str = "127.0.0.1"
    """Address it listens on; loopback unless allow_remote (it has no authentication)."""

    port: int = 0
    """TCP port of its HTTP, WebSocket and page server; 0: any free port."""

    allow_remote: bool = False
    """Permit a non-loopback host."""

    media: MediaConfig = LOOPBACK_MEDIA
    """Its media server's peer connections (the mix's encoder included)."""


@dataclass(frozen=True)
class DaemonConfig:
    """One daemon: where it serves the API, which control plane it uses, how its sessions'
    media runs."""

    socket_path: str = field(default_factory=default_socket_path)
    """Unix socket of the API (mode 0600)."""

    listen: str | None = None
    """Also serve on TCP "HOST:PORT": loopback only unless TLS and a token are configured."""

    tls_cert: str | None = None
    """PEM certificate file for `listen`."""

    tls_key: str | None = None
    """PEM private key file for `listen`."""

    token: str | None = None
    """Bearer token TCP callers must send (authorization: Bearer ...); Unix socket callers
    need none."""

    control_plane: str = "embedded"
    """"embedded" (an embedded service in this process), "aws", or the URL of a running
    embedded service."""

    region: str = "us-east-1"
    """AWS region of the Chime SDK meetings API."""

    embedded: EmbeddedConfig = EmbeddedConfig()
    """The in-process embedded service, with control_plane "embedded"."""

    media: MediaConfig | None = None
    """The sessions' media. None: what suits the control plane (media_for)."""

    def session_media(self) -> MediaConfig:
        """The media settings of this daemon's sessions."""
        return self.media if self.media is not None else media_for(self.control_plane)


def media_for(control_plane: str) -> MediaConfig:
    """Defaults for a control plane: an embedded service (in-process or by URL) is reached on
    loopback; AWS meetings on real networks."""
    return NETWORK_MEDIA if control_plane == "aws" else LOOPBACK_MEDIA
