"""One attendee sending the test pattern and viewing one remote tile: chimed against Chromium
running the official web client (the embedded meeting page), in the same meeting, each
showing the other. Chromium's camera is the pattern rendered to a Y4M file
(--use-file-for-fake-video-capture), chimed's is `virtual:pattern`; both 640x480 at 15 fps.
chimed views the browser's tile through BindView (I420, at most 15 fps, read by the bench);
the page plays chimed's tile in a <video> element (and its own camera, as the client does).

Figures, the median of WINDOWS windows: Chromium's whole process tree (CPU, PSS); chimed: the
daemon with its session minus the idle daemon. The embedded service runs apart and counts for
neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import grpc
from chime.client import AsyncChimed, connect_aio
from chime.v1 import meeting_pb2, session_pb2, video_pb2
from chimed.media.video_frames import I420

from bench.browser import Group, create_session, median_windows, minus, process_tree
from bench.browser import measure as measure_groups
from bench.video import (
    FPS,
    HEIGHT,
    PATTERN,
    SETTLE_S,
    TIMEOUT,
    WIDTH,
    View,
    attendee_id,
    failure,
    judged,
    missing,
    ratio,
    remote_tile,
    video_input,
)
from bench.y4m import pattern_y4m
from tests.browser import Browser, BrowserError, Page, find_chromium
from tests.daemon_proc import DaemonProcess, EmbeddedProcess

S = session_pb2
V = video_pb2
WINDOWS = 3
Y4M_SECONDS = 10.0  # the file Chromium loops: the box sweeps across and back within it
TARGETS = {"cpu_ratio_max": 0.5, "memory_ratio_max": 0.1}  # chimed / Chromium


async def browser_join(page: Page, meeting: str) -> str:
    """The page joins with its camera on; the browser's attendee id."""
    ids = await page.eval(
        f"chimedPage.join({json.dumps(meeting)}, 'chromium', "
        f"{{video: true, timeoutMs: {int(TIMEOUT * 1000)}}})",
        TIMEOUT + 5,
    )
    return str(ids["attendeeId"])


async def browser_playing(page: Page, chimed_attendee: str) -> None:
    """Until the page's tile for chimed plays a picture of the pattern's width."""
    await page.wait_for(
        f"""(() => {{
            const id = {json.dumps(chimed_attendee)};
            const tile = chimedPage.tiles.find((t) => t.attendeeId === id);
            const video = tile && document.querySelector(`#tile-${{tile.tileId}} video`);
            return Boolean(video && video.videoWidth === {WIDTH} && video.currentTime > 0);
        }})()""",
        TIMEOUT,
    )


async def run(steady_s: float = 8.0) -> dict[str, Any]:
    try:
        find_chromium()
    except BrowserError as e:
        return {"skipped": str(e)}
    with tempfile.TemporaryDirectory(prefix="chimed-bench-") as tmp:
        y4m = Path(tmp) / "pattern.y4m"
        pattern_y4m(y4m, WIDTH, HEIGHT, FPS, Y4M_SECONDS, "chromium")
        service = EmbeddedProcess()
        daemon = DaemonProcess(args=["--control-plane", service.url])
        try:
            daemon.start()
            async with connect_aio(daemon.target) as chimed:
                return await _compare(chimed, daemon, service, y4m, steady_s)
        except (grpc.aio.AioRpcError, BrowserError, RuntimeError, TimeoutError) as e:
            why = failure(e)
            return {
                "error": why,
                "figures": {"cpu_vs_chromium": missing(why), "memory_vs_chromium": missing(why)},
            }
        finally:
            daemon.stop()
            service.stop()


def _camera(y4m: Path) -> list[str]:
    return [f"--use-file-for-fake-video-capture={y4m}"]


async def _compare(
    chimed: AsyncChimed, daemon: DaemonProcess, service: EmbeddedProcess, y4m: Path, steady_s: float
) -> dict[str, Any]:
    assert daemon.proc is not None
    daemon_pid, service_pid = daemon.proc.pid, service.proc.pid
    chimed_group = Group("chimed", lambda: [daemon_pid])
    service_group = Group("embedded_service", lambda: [service_pid])
    await chimed.sessions.ListSessions(S.ListSessionsRequest())
    await asyncio.sleep(1)  # let the daemon settle after its first call
    idle = (await measure_groups([chimed_group], steady_s))["chimed"]

    name = f"bench-video-browser-{os.getpid()}"
    meeting = (
        await chimed.meetings.CreateMeeting(
            # The page's /app/join finds the meeting by its name as the request token.
            meeting_pb2.CreateMeetingRequest(client_request_token=name, external_meeting_id=name)
        )
    ).meeting
    sid = await create_session(chimed, meeting, "chimed", video_input(PATTERN))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(
            chimed.sessions.DeleteSession, S.DeleteSessionRequest(session_id=sid)
        )
        await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
        await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
        browser = await stack.enter_async_context(Browser(_camera(y4m)))
        assert browser.pid is not None
        browser_pid = browser.pid
        browser_group = Group("browser", lambda: process_tree(browser_pid))
        page = await browser.open(service.url + "/", TIMEOUT)
        browser_id = await browser_join(page, name)
        view = View(chimed, sid, await remote_tile(chimed, sid, browser_id), I420, FPS)
        stack.push_async_callback(view.close)
        await view.wait_first()
        await browser_playing(page, await attendee_id(chimed, sid))
        await asyncio.sleep(SETTLE_S)
        before = view.frames
        groups = [browser_group, chimed_group, service_group]
        windows = [await measure_groups(groups, steady_s) for _ in range(WINDOWS)]
        viewed = {
            "view_fps": round((view.frames - before) / (steady_s * WINDOWS), 1),
            "view_size": f"{view.size[0]}x{view.size[1]}",
        }
        with contextlib.suppress(BrowserError, TimeoutError):
            await page.eval("chimedPage.leave()", TIMEOUT)
    one = median_windows(windows)
    browser_fig = one["browser"]
    chimed_fig = minus(one["chimed"], idle, 1)
    return {
        "window_s": steady_s,
        "windows": WINDOWS,
        "browser": browser_fig,
        "embedded_service": one["embedded_service"],
        "chimed_idle_daemon": idle,
        "chimed_daemon_with_session": one["chimed"],
        "chimed": {**chimed_fig, **viewed},
        "windows_cpu_percent": [
            {g: w[g]["cpu_percent"] for g in ("browser", "chimed")} for w in windows
        ],
        "figures": {
            "cpu_vs_chromium": judged(
                ratio(chimed_fig["cpu_percent"], browser_fig["cpu_percent"]),
                TARGETS["cpu_ratio_max"],
                unit="chimed / Chromium, % of a core",
                chimed_cpu_percent=chimed_fig["cpu_percent"],
                baseline_cpu_percent=browser_fig["cpu_percent"],
            ),
            "memory_vs_chromium": judged(
                ratio(chimed_fig["pss_mb"], browser_fig["pss_mb"]),
                TARGETS["memory_ratio_max"],
                unit="chimed / Chromium, PSS",
                chimed_pss_mb=chimed_fig["pss_mb"],
                baseline_pss_mb=browser_fig["pss_mb"],
            ),
        },
        "targets": TARGETS,
    }
