"""The daemon: one grpc.aio server on a Unix socket (and TCP when asked), the session manager,
the control-plane client and, by default, the embedded Chime service in the same process."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from chime.v1 import (
    audio_pb2,
    audio_pb2_grpc,
    meeting_pb2,
    meeting_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    video_pb2,
    video_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from chimed.config import DaemonConfig
from chimed.devices import opening
from chimed.errors import InvalidArgument
from chimed.loopback import is_loopback
from chimed.media.peer import drain_closing
from chimed.meetings.client import MeetingsClient
from chimed.server.media_services import AudioService, VideoService
from chimed.server.meeting_service import MeetingService
from chimed.server.session_service import SessionService
from chimed.session.device_monitor import DeviceMonitor
from chimed.session.manager import SessionManager

if TYPE_CHECKING:
    from chimed.embedded.service import EmbeddedChime

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
    audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name,
    video_pb2.DESCRIPTOR.services_by_name["VideoService"].full_name,
    meeting_pb2.DESCRIPTOR.services_by_name["MeetingService"].full_name,
]


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidArgument(f"--listen takes HOST:PORT, got {listen!r}")
    return host, int(port)


def _prepare_socket_path(path: str) -> None:
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if p.exists() or p.is_symlink():
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise InvalidArgument(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            p.unlink()  # stale socket of a daemon that died
        else:
            raise InvalidArgument(f"another chimed is already listening on {path}")
        finally:
            probe.close()


class Daemon:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        # One device list and hot-plug watch for the whole daemon, shared by its sessions.
        self.devices = DeviceMonitor()
        self.manager = SessionManager(self.devices, media=config.session_media())
        self.embedded: EmbeddedChime | None = None  # when running in-process
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.tcp_port: int | None = None

    async def _control_plane(self) -> MeetingsClient:
        cp = self.config.control_plane
        if cp == "aws":
            return MeetingsClient(None, self.config.region)
        if cp == "embedded":
            from chimed.embedded.service import EmbeddedChime  # not needed with AWS or a URL

            self.embedded = EmbeddedChime.from_config(self.config.embedded)
            await self.embedded.start()
            log.info("embedded service started on port %d", self.embedded.port)
            return MeetingsClient(self.embedded.base_url, self.config.region)
        return MeetingsClient(cp, self.config.region)

    async def start(self) -> None:
        cfg = self.config
        if cfg.listen:
            host, _ = _split_listen(cfg.listen)
            secured = bool(cfg.tls_cert and cfg.tls_key and cfg.token)
            if not is_loopback(host) and not secured:
                raise InvalidArgument(
                    f"refusing to listen on {host}: TCP beyond loopback needs --tls-cert, "
                    "--tls-key and a token"
                )
        meetings = await self._control_plane()
        token = cfg.token
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.keepalive_permit_without_calls", 1)]
        )
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionService(self.manager, token=token), server
        )
        audio_pb2_grpc.add_AudioServiceServicer_to_server(
            AudioService(self.manager, token=token), server
        )
        video_pb2_grpc.add_VideoServiceServicer_to_server(
            VideoService(self.manager, token=token), server
        )
        meeting_pb2_grpc.add_MeetingServiceServicer_to_server(
            MeetingService(meetings, token=token), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        _add_reflection(server)

        _prepare_socket_path(cfg.socket_path)
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            server.add_insecure_port(f"unix:{cfg.socket_path}")
        finally:
            os.umask(old_umask)
        os.chmod(cfg.socket_path, 0o600)
        if cfg.listen:
            if cfg.tls_cert and cfg.tls_key:
                creds = _tls_credentials(cfg.tls_cert, cfg.tls_key)
                self.tcp_port = server.add_secure_port(cfg.listen, creds)
            else:
                self.tcp_port = server.add_insecure_port(cfg.listen)
        await server.start()
        self.server = server
        for name in SERVICE_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 3.0) -> None:
        """Leave every meeting (LEAVE, LEAVE_ACK), end every stream, stop serving."""
        await self.health.enter_graceful_shutdown()
        await self.manager.shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        if self.embedded is not None:
            await self.embedded.stop()
        await drain_closing()
        await opening.settle()  # no audio device outlives the daemon
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.config.socket_path)


def _tls_credentials(cert: str, key: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(Path(key).read_bytes(), Path(cert).read_bytes())])


def _add_reflection(server: grpc.aio.Server) -> None:
    """Reflection v1alpha (grpcio-reflection) and v1: the same messages under a newer name."""
    names = [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME]
    servicer = reflection.aio.ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "grpc.reflection.v1.ServerReflection", {"ServerReflectionInfo": handler}
            ),
        )
    )
