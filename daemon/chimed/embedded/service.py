"""The embedded Chime service: one aiohttp application on one loopback TCP port.

It serves the control plane; the signaling WebSocket, the TURN relay and the meeting page attach
through `app` (routes, before `start`) and `add_startup` / `add_cleanup` (their own lifetimes).
Every WebSocket the application opens is tracked, so `stop` never waits on a live socket.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable

from aiohttp import WSCloseCode, web

from chimed.config import LOOPBACK_MEDIA, EmbeddedConfig, MediaConfig
from chimed.embedded.control_plane import add_control_plane
from chimed.embedded.events_ingestion import add_event_ingestion_routes
from chimed.embedded.media_server import MediaServer
from chimed.embedded.meeting_page import add_web_routes
from chimed.embedded.meetings import Registry
from chimed.embedded.signaling_server import install as install_signaling
from chimed.embedded.turn_relay import TurnRelay
from chimed.embedded.turn_server import TurnCredentials
from chimed.errors import InvalidArgument
from chimed.loopback import is_loopback

log = logging.getLogger(__name__)

# How long stop() lets requests still running finish before aiohttp cancels them.
SHUTDOWN_TIMEOUT = 5.0
# How long stop() waits for WebSocket peers to answer the close frame.
WS_CLOSE_TIMEOUT = 2.0
_WILDCARDS = ("", "0.0.0.0", "::")

Hook = Callable[[], object]  # a plain or async function of no arguments


async def _call(fn: Hook) -> None:
    result = fn()
    if inspect.isawaitable(result):
        await result


class EmbeddedChime:
    """The miniature Chime service. `registry` and `app` are for the other faces to use.

    `media` is its media server's peers' own (by default loopback settings); a daemon in the
    same process keeps its own."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        media: MediaConfig = LOOPBACK_MEDIA,
    ):
        if not allow_remote and not is_loopback(host):
            raise InvalidArgument(
                f"refusing to serve the embedded Chime service on {host}: it has no "
                "authentication; use a loopback address (or allow_remote=True)"
            )
        # "localhost" can resolve to two addresses, which would get two ports for port 0.
        self.host = "127.0.0.1" if host == "localhost" else host
        self.media = media
        self.registry = Registry()
        self.app = web.Application()
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._turn_url: str | None = None
        self._startups: list[Hook] = []
        self._cleanups: list[Hook] = []
        self._websockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.app.on_response_prepare.append(self._track_websocket)
        self.app.on_shutdown.append(self._shutdown)
        add_control_plane(self.app, self.registry, self.urls)
        # /control/{meeting_id} and the media server
        self.signaling = install_signaling(self, MediaServer(media=media))
        # As the real service does, every JOIN_ACK names a TURN relay, so clients run
        # relay-only ICE; the relay listens and relays on loopback only.
        self.turn = TurnRelay()
        self.add_startup(self.turn.start)
        self.add_cleanup(self.turn.stop)
        self.signaling.turn_credentials = self._turn_credentials
        add_web_routes(self.app, self.registry, self.urls)
        add_event_ingestion_routes(self.app)  # MediaPlacement.EventIngestionUrl

    @classmethod
    def from_config(cls, config: EmbeddedConfig) -> EmbeddedChime:
        return cls(config.host, config.port, allow_remote=config.allow_remote, media=config.media)

    # --- addresses -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the embedded Chime service is not started")
        return self._port

    @property
    def _url_host(self) -> str:
        # Wildcard binds are reached over loopback from this machine.
        host = "127.0.0.1" if self.host in _WILDCARDS else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def base_url(self) -> str:
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host}:{self.port}"

    @property
    def turn_url(self) -> str:
        """The meetings' TurnControlUrl: the TURN relay sets it; a placeholder until then."""
        return self._turn_url or f"{self.base_url}/v2/turn_sessions"

    @turn_url.setter
    def turn_url(self, url: str) -> None:
        self._turn_url = url

    def urls(self) -> tuple[str, str, str]:
        """(base_url, ws_url, turn_url), as Meeting.to_json takes them."""
        return self.base_url, self.ws_url, self.turn_url

    def _turn_credentials(self, meeting_id: str, attendee_id: str) -> TurnCredentials:
        return self.turn.issue_credentials(attendee_id)

    # --- hooks ---------------------------------------------------------------------------------
    def add_startup(self, fn: Hook) -> None:
        """Run `fn` (plain or async) in `start`, once the port is bound, in the order added."""
        self._startups.append(fn)

    def add_cleanup(self, fn: Hook) -> None:
        """Run `fn` (plain or async) in `stop`, after listening ends, in reverse order added."""
        self._cleanups.append(fn)

    # --- lifetime ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the embedded Chime service is already started")
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
            for fn in self._startups:
                await _call(fn)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, run the cleanups, close open WebSockets, release everything."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # runs _shutdown

    async def _shutdown(self, _app: web.Application) -> None:
        for fn in reversed(self._cleanups):
            try:
                await _call(fn)
            except Exception:
                log.exception("embedded service cleanup %r failed", fn)
        sockets = [ws for ws in self._websockets if not ws.closed]
        if sockets:
            # Peers that never answer the close frame must not hold stop(); aiohttp drops
            # their connections right after.
            closing = [
                asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutdown"))
                for ws in sockets
            ]
            _, pending = await asyncio.wait(closing, timeout=WS_CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)

    async def _track_websocket(self, _request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            self._websockets.add(response)
