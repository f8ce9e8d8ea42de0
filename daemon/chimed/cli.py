"""The `chimed` command: the daemon, or (`chimed embedded`) the embedded Chime service alone."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace

from chimed import __version__
from chimed.config import (
    DEFAULT_OPUS_COMPLEXITY,
    DaemonConfig,
    EmbeddedConfig,
    MediaConfig,
    default_socket_path,
    media_for,
)
from chimed.errors import ChimedError
from chimed.server.app import Daemon

log = logging.getLogger("chimed")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chimed",
        description="Join Amazon Chime SDK meetings and serve ChimeSession over gRPC.",
    )
    p.add_argument("--version", action="version", version=f"chimed {__version__}")
    p.add_argument("--log-level", default=os.environ.get("CHIMED_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command")

    embedded = sub.add_parser(
        "embedded", help="run the embedded Chime service alone (shared by daemons and browsers)"
    )
    embedded.add_argument("--host", default="127.0.0.1")
    embedded.add_argument("--port", type=int, default=8321)

    p.add_argument("--socket", default=default_socket_path(), help="Unix socket path (mode 0600)")
    p.add_argument("--listen", help="also listen on TCP HOST:PORT (loopback unless TLS + token)")
    p.add_argument("--tls-cert", help="PEM certificate for --listen")
    p.add_argument("--tls-key", help="PEM private key for --listen")
    p.add_argument(
        "--token-file",
        help="file holding the bearer token TCP callers must send (authorization: Bearer ...)",
    )
    p.add_argument(
        "--control-plane",
        default=os.environ.get("CHIMED_CONTROL_PLANE", "embedded"),
        help="'embedded' (default: start the embedded service in-process), 'aws', or the URL "
        "of a running embedded service (chimed embedded)",
    )
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument(
        "--embedded-port", type=int, default=0, help="port of the in-process embedded service"
    )
    p.add_argument(
        "--opus-complexity",
        type=int,
        default=DEFAULT_OPUS_COMPLEXITY,
        metavar="0-10",
        help="libopus complexity of the audio chimed sends (default %(default)s; lower costs "
        "less CPU per speaking session, higher sounds slightly better)",
    )
    p.add_argument(
        "--video-codec",
        choices=("vp8", "h264"),
        default="vp8",
        help="the codec chimed's video is sent in (default %(default)s; H.264 constrained "
        "baseline, which every browser decodes in hardware, or VP8)",
    )
    p.add_argument(
        "--ice-host",
        action="append",
        help="gather host ICE candidates only on this address (repeatable); default loopback "
        "with the embedded service, every interface with AWS",
    )
    return p


async def _run_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await start()
    await stopping.wait()
    log.info("stopping")
    await stop()


def _media(args: argparse.Namespace) -> MediaConfig:
    """The sessions' media: the control plane's defaults, with --opus-complexity,
    --video-codec and --ice-host; ValueError for a value out of range."""
    media = media_for(args.control_plane)
    hosts = tuple(args.ice_host) if args.ice_host else media.ice_host_addresses
    return replace(
        media,
        opus_complexity=args.opus_complexity,
        ice_host_addresses=hosts,
        video_codec=args.video_codec.upper(),
    )


async def _serve(args: argparse.Namespace, media: MediaConfig) -> None:
    config = DaemonConfig(
        socket_path=args.socket,
        listen=args.listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=args.token,
        control_plane=args.control_plane,
        region=args.region,
        embedded=EmbeddedConfig(port=args.embedded_port),
        media=media,
    )
    daemon = Daemon(config)

    async def start() -> None:
        await daemon.start()
        if daemon.embedded is not None:
            print(f"embedded Chime service at {daemon.embedded.base_url}", flush=True)
            print(f"meeting page at {daemon.embedded.base_url}/", flush=True)
        if daemon.tcp_port is not None:
            host = config.listen.rpartition(":")[0] if config.listen else ""
            print(f"chimed listening on {host}:{daemon.tcp_port}", flush=True)
        # Last: the line that says the daemon is ready for calls.
        print(f"chimed {__version__} listening on unix:{config.socket_path}", flush=True)

    await _run_until_signal(start, daemon.stop)


async def _embedded(args: argparse.Namespace) -> None:
    from chimed.embedded.service import EmbeddedChime

    service = EmbeddedChime.from_config(EmbeddedConfig(host=args.host, port=args.port))

    async def start() -> None:
        await service.start()
        print(f"embedded Chime service at {service.base_url}", flush=True)

    await _run_until_signal(start, service.stop)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.token = None
    if getattr(args, "token_file", None):
        try:
            with open(args.token_file) as f:
                args.token = f.read().strip()
        except OSError as e:
            print(f"chimed: cannot read --token-file: {e.strerror}", file=sys.stderr)
            return 2
        if not args.token:
            print("chimed: --token-file is empty", file=sys.stderr)
            return 2
    try:
        media = _media(args)
    except ValueError as e:
        print(f"chimed: --opus-complexity: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Third-party debug logs can carry URLs and headers with join tokens.
    for noisy in ("aiohttp", "aioice", "aiortc", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        asyncio.run(_embedded(args) if args.command == "embedded" else _serve(args, media))
    except ChimedError as e:
        print(f"chimed: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
