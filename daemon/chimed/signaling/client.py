"""The signaling WebSocket: connect with the join token, a receive loop, PING/PONG keep-alive.

Thin asyncio adapter around frames.py. The join token travels as a WebSocket subprotocol, the
way the web client sends it; it is never logged, and aiohttp's errors (whose text carries the
request headers) are never passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from chime.signaling import signaling_pb2 as sig

from chimed.signaling import frames, messages

log = logging.getLogger(__name__)

Frame = sig.SdkSignalFrame
FrameHandler = Callable[[Frame], None]
CloseHandler = Callable[[int | None, str], None]
BadFrameHandler = Callable[[str], None]

QUERY = "X-Chime-Control-Protocol-Version=3&X-Amzn-Chime-Send-Close-On-Error=1"
SUBPROTOCOL = "_aws_wt_session"
PING_INTERVAL_S = 10.0
MAX_UNANSWERED_PINGS = 3


class SignalingError(Exception):
    """The signaling connection could not be opened."""


class SignalingRejected(SignalingError):
    """The service refused the WebSocket upgrade with an HTTP status (403: bad join token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def signaling_url(base: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}{QUERY}"


def safe_target(url: str) -> str:
    """Scheme, host and path of a URL: what may appear in logs and errors."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class SignalingClient:
    """One signaling WebSocket. on_frame gets every decoded frame (PINGs are answered here);
    on_close runs once when the service or the network ends the connection (never after
    close())."""

    def __init__(
        self,
        url: str,
        join_token: str,
        on_frame: FrameHandler,
        on_close: CloseHandler,
        *,
        on_bad_frame: BadFrameHandler | None = None,
        ping_interval: float = PING_INTERVAL_S,
    ) -> None:
        self._url = signaling_url(url)
        self._target = safe_target(url)
        self._join_token = join_token
        self._on_frame = on_frame
        self._on_close = on_close
        self._on_bad_frame = on_bad_frame or self._log_bad_frame
        self._ping_interval = ping_interval
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.opened = False  # the upgrade succeeded (a later close is reported by on_close)
        self._ping_id = 0
        self._unanswered = 0
        self.bad_frames = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and not self._closing

    async def connect(self) -> None:
        """Open the socket; raises SignalingRejected / SignalingError (token-free messages)."""
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(
                self._url,
                protocols=(SUBPROTOCOL, self._join_token),
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except aiohttp.WSServerHandshakeError as e:
            await self._release()
            status = e.status
            if status == 403:
                raise SignalingRejected(
                    403, f"signaling at {self._target} rejected the join token (HTTP 403)"
                ) from None
            raise SignalingRejected(
                status, f"signaling at {self._target} refused the WebSocket upgrade (HTTP {status})"
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            await self._release()
            raise SignalingError(
                f"cannot reach signaling at {self._target}: {type(e).__name__}"
            ) from None
        except BaseException:
            await self._release()
            raise
        self._tasks = [
            asyncio.create_task(self._receive_loop(), name="chimed-signaling-recv"),
            asyncio.create_task(self._ping_loop(), name="chimed-signaling-ping"),
        ]
        self.opened = True
        # The web client's first frame, before JOIN. If the service already closed the socket,
        # the receive loop reports why (its status frame and close code).
        with contextlib.suppress(SignalingError):
            await self._ping()

    async def send(self, frame: Frame) -> None:
        if not self.connected:
            raise SignalingError("signaling connection is closed")
        assert self._ws is not None
        try:
            await self._ws.send_bytes(frames.encode(frame))
        except (aiohttp.ClientError, ConnectionError) as e:
            raise SignalingError(f"signaling send failed: {type(e).__name__}") from None

    async def close(self) -> None:
        """Close the socket and release every task; idempotent; on_close does not run."""
        self._closing = True
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        await self._release()

    async def _release(self) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        self._http = None

    async def _receive_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        reason = "signaling connection closed"
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await self._handle(msg.data)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"signaling connection failed: {type(ws.exception()).__name__}"
                    break
        except (aiohttp.ClientError, OSError) as e:
            reason = f"signaling connection failed: {type(e).__name__}"
        if not self._closing:
            self._closing = True
            code = ws.close_code
            log.info("signaling at %s closed by the service (code %s)", self._target, code)
            self._on_close(code, reason)

    async def _handle(self, data: bytes) -> None:
        try:
            frame = frames.decode(data)
        except frames.FrameError as e:
            self.bad_frames += 1
            self._on_bad_frame(str(e))
            return
        if frame is None:
            return
        if frame.type == Frame.PING_PONG and frame.HasField("ping_pong"):
            if frame.ping_pong.type == sig.PING:
                with contextlib.suppress(SignalingError):
                    await self.send(messages.pong(frame.ping_pong.ping_id))
            else:
                self._unanswered = 0
            return
        try:
            self._on_frame(frame)
        except Exception:  # a handler bug must not kill the receive loop
            log.exception("signaling frame handler failed on %s", frames.type_name(frame))

    async def _ping_loop(self) -> None:
        # A PING every 10 s; a service that stops answering them is gone.
        while self.connected:
            await asyncio.sleep(self._ping_interval)
            if self._unanswered >= MAX_UNANSWERED_PINGS:
                await self._lost("signaling stopped answering PINGs")
                return
            try:
                await self._ping()
            except SignalingError:
                return

    async def _ping(self) -> None:
        self._ping_id = self._ping_id % 0xFFFFFFFF + 1
        self._unanswered += 1
        await self.send(messages.ping(self._ping_id))

    async def _lost(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        self._on_close(None, reason)

    def _log_bad_frame(self, error: str) -> None:
        log.warning("signaling at %s: %s", self._target, error)
