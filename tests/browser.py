"""Headless Chromium for tests, driven over the Chrome DevTools Protocol (CDP).

    async with Browser() as browser:
        page = await browser.open(url)
        title = await page.eval("document.title")

Debian's chromium with fake media devices, no network but loopback, a throwaway profile, and
a clean shutdown (the whole process group is killed, the profile removed). The protocol is
spoken directly over its WebSocket with aiohttp: a few commands are all the tests need, and
nothing has to be downloaded.

Calls take a `timeout` in seconds (ruff's ASYNC109 is silenced for them): every DevTools
command needs its own bound anyway, because a reply the browser never sends would hang a test.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

DEFAULT_TIMEOUT = 15.0
LAUNCH_TIMEOUT = 30.0
LISTENING = "DevTools listening on "

# Media from fake devices, permissions granted without a prompt, autoplay allowed, and nothing
# but loopback reachable: the browser must never reach out to the internet.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-features=Translate,MediaRouter,OptimizationHints,WebRtcHideLocalIpsWithMdns",
    "--password-store=basic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str:
    """The Chromium executable: $CHROMIUM, else `chromium` (Debian's package) on PATH."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        raise BrowserError("chromium not found: install the Debian package (make deps does)")
    return found


class BrowserError(Exception):
    pass


class JSError(BrowserError):
    """An exception thrown by page JavaScript (or a rejected promise) during eval."""


@dataclass
class ConsoleMessage:
    level: str  # log, info, warning, error, debug... as the page or the browser reported it
    text: str
    source: str  # "console", "exception" or "browser" (network errors, interventions)


def _remote_object_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("description", obj.get("type", "")))


class _CDP:
    """One DevTools WebSocket: commands with ids, replies and events routed by session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._sessions: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        if self._reader.done():
            raise BrowserError("the DevTools connection is closed")
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._ws.send_str(json.dumps(message))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"{method} got no answer within {timeout} s") from None
        finally:
            self._pending.pop(msg_id, None)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    future = self._pending.get(data["id"])
                    if future is None or future.done():
                        continue
                    if "error" in data:
                        err = data["error"]
                        future.set_exception(BrowserError(f"{err.get('message')}: {err}"))
                    else:
                        future.set_result(data.get("result", {}))
                elif (page := self._sessions.get(data.get("sessionId", ""))) is not None:
                    page.on_event(data["method"], data.get("params", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BrowserError("the DevTools connection closed"))

    def attach(self, session_id: str, page: Page) -> None:
        self._sessions[session_id] = page

    def detach(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass(eq=False)
class Page:
    """One tab, in its own browser context (own cookies and storage)."""

    _cdp: _CDP
    target_id: str
    session_id: str
    context_id: str
    console: list[ConsoleMessage] = field(default_factory=list)
    _waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    closed: bool = False

    async def _send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        return await self._cdp.send(method, params, self.session_id, timeout)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_object_text(a) for a in params.get("args", []))
            self.console.append(ConsoleMessage(params.get("type", "log"), text, "console"))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception") or {}
            text = exc.get("description") or details.get("text", "exception")
            self.console.append(ConsoleMessage("error", text, "exception"))
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(
                ConsoleMessage(entry.get("level", "info"), entry.get("text", ""), "browser")
            )
        for future in self._waiters.pop(method, []):
            if not future.done():
                future.set_result(params)

    def _event_future(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(method, []).append(future)
        return future

    async def enable(self) -> None:
        for domain in ("Page", "Runtime", "Log"):
            await self._send(f"{domain}.enable")

    async def open(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> Page:
        """Navigate and wait for the load event."""
        loaded = self._event_future("Page.loadEventFired")
        try:
            result = await self._send("Page.navigate", {"url": url}, timeout)
            if result.get("errorText"):
                raise BrowserError(f"cannot open {url}: {result['errorText']}")
            await asyncio.wait_for(loaded, timeout)
        except TimeoutError:
            raise TimeoutError(f"{url} did not load within {timeout} s") from None
        finally:
            loaded.cancel()
        return self

    async def eval(self, expression: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """The JSON value of a JavaScript expression; promises are awaited."""
        result = await self._send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "userGesture": True,
            },
            timeout,
        )
        details = result.get("exceptionDetails")
        if details is not None:
            exc = details.get("exception") or {}
            raise JSError(exc.get("description") or details.get("text") or "JavaScript error")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait until `expression` is truthy in the page (re-checked on each animation frame)
        and return its value; TimeoutError after `timeout` seconds."""
        script = f"""new Promise((resolve, reject) => {{
            const deadline = performance.now() + {timeout * 1000};
            const check = () => {{
                let value;
                try {{ value = ({expression}); }} catch (e) {{ reject(e); return; }}
                if (value) resolve(value);
                else if (performance.now() > deadline)
                    reject(new Error('wait_for timed out: ' + {json.dumps(expression)}));
                else requestAnimationFrame(check);
            }};
            check();
        }})"""
        try:
            return await self.eval(script, timeout + 5)
        except JSError as e:
            if "wait_for timed out" in str(e):
                raise TimeoutError(f"{expression!r} not true within {timeout} s") from None
            raise

    async def screenshot(self, path: str | Path, timeout: float = DEFAULT_TIMEOUT) -> None:
        result = await self._send("Page.captureScreenshot", {"format": "png"}, timeout)
        await asyncio.to_thread(Path(path).write_bytes, base64.b64decode(result["data"]))

    def errors(self) -> list[ConsoleMessage]:
        return [m for m in self.console if m.level == "error"]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cdp.detach(self.session_id)
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        with contextlib.suppress(BrowserError, TimeoutError):
            await self._cdp.send("Target.closeTarget", {"targetId": self.target_id}, timeout=5)
            await self._cdp.send(
                "Target.disposeBrowserContext", {"browserContextId": self.context_id}, timeout=5
            )


class Browser:
    """A headless Chromium process and its DevTools connection."""

    def __init__(self, extra_args: Sequence[str] = (), executable: str | None = None) -> None:
        self.executable = executable
        self.extra_args = list(extra_args)
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self.pages: list[Page] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._profile: str | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._cdp: _CDP | None = None

    async def __aenter__(self) -> Browser:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pid(self) -> int | None:
        """The browser process (the root of its process tree), while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="chimed-chromium-")
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", *self.extra_args]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._proc = await asyncio.create_subprocess_exec(
            self.executable or find_chromium(),
            *args,
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, so close() can end every child
        )
        ws_url = await self._read_devtools_url()
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        self._http = aiohttp.ClientSession()
        ws = await self._http.ws_connect(ws_url, max_msg_size=0, autoping=True)
        self._cdp = _CDP(ws)

    async def _read_devtools_url(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        stderr = self._proc.stderr

        async def read() -> str:
            while line := await stderr.readline():
                text = line.decode(errors="replace").rstrip()
                self.stderr_tail.append(text)
                if text.startswith(LISTENING):
                    return text[len(LISTENING) :].strip()
            raise BrowserError("chromium exited: " + "\n".join(self.stderr_tail))

        try:
            return await asyncio.wait_for(read(), LAUNCH_TIMEOUT)
        except TimeoutError:
            raise BrowserError(
                f"chromium did not start within {LAUNCH_TIMEOUT} s: " + "\n".join(self.stderr_tail)
            ) from None

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self.stderr_tail.append(line.decode(errors="replace").rstrip())

    async def new_page(self) -> Page:
        if self._cdp is None:
            raise BrowserError("the browser is not running")
        context = await self._cdp.send("Target.createBrowserContext")
        context_id = context["browserContextId"]
        target = await self._cdp.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context_id}
        )
        attached = await self._cdp.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._cdp, target["targetId"], attached["sessionId"], context_id)
        self._cdp.attach(page.session_id, page)
        await page.enable()
        self.pages.append(page)
        return page

    async def open(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> Page:
        page = await self.new_page()
        return await page.open(url, timeout)

    async def close(self) -> None:
        """Close pages and the browser, kill what is left of its process group, remove the
        profile. Safe to call more than once."""
        for page in self.pages:
            await page.close()
        self.pages.clear()
        proc, self._proc = self._proc, None
        if self._cdp is not None and proc is not None and proc.returncode is None:
            with contextlib.suppress(BrowserError, TimeoutError):
                await self._cdp.send("Browser.close", timeout=5)
        if self._cdp is not None:
            await self._cdp.close()
            self._cdp = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            # Renderer, GPU and utility processes share the group; end any that outlived it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._stderr_task, 5)
            self._stderr_task = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None
