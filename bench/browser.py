"""The comparison a bot builder makes: the official amazon-chime-sdk-js client in headless
Chromium against a chimed session, as attendees of the same embedded meeting in one run.

Figures: time to join (the page's join() until the SDK says started; Start until
audio_session_started), and CPU and memory per audio attendee with audio flowing both ways
(chimed sends a tone, Chromium its fake microphone), the median of WINDOWS steady windows:
- the browser: its whole process tree (PSS from /proc/PID/smaps_rollup, CPU from /proc/PID/stat);
- chimed (a): the daemon process with one session minus the idle daemon;
- chimed (b): per session with N sessions in the daemon, minus the idle daemon.
The embedded service runs as its own `chimed embedded` process, so its mixing is not counted
for either side (its own figures are reported apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chime.client import connect_aio
from chime.v1 import meeting_pb2, session_pb2, types_pb2

from bench.stats import percentile
from tests.browser import Browser, BrowserError, Page, find_chromium
from tests.daemon_proc import DaemonProcess, EmbeddedProcess

S = session_pb2
TONE = "virtual:tone?frequency=440&level=-20"
TIMEOUT = 30.0
SETTLE_S = 3.0  # after audio is seen flowing: ICE, bandwidth estimation and jitter buffers settle
# Windows measured back to back with the browser in the meeting; figures are their medians.
# One window's CPU figure for a single session varies by +-20 % on this 2-core VM (the
# browser, the service and chimed share the cores), so one window alone can mislead.
WINDOWS = 3
TARGETS = {"cpu_ratio_max": 0.2, "memory_ratio_max": 0.1}  # chimed / browser, per attendee


# --- /proc measurements ------------------------------------------------------------------------
def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while we looked
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """Pss and Rss (kB) from smaps_rollup; empty once the process has exited."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            out[key] = int(rest.split()[0])
    return out


@dataclass
class Group:
    """A set of processes measured as one attendee (or one service)."""

    name: str
    pids: Callable[[], list[int]]


def _cpu_snapshot(group: Group) -> dict[int, float]:
    out = {}
    for pid in group.pids():
        if (cpu := cpu_seconds(pid)) is not None:
            out[pid] = cpu
    return out


async def measure(groups: list[Group], seconds: float) -> dict[str, dict[str, float]]:
    """CPU (% of one core) of each group over the same window, and its memory at the end.
    Processes born in the window count whole; ones that die in it are lost (rare: none of
    these trees churn while a meeting runs)."""
    before = {g.name: _cpu_snapshot(g) for g in groups}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        after = _cpu_snapshot(g)
        used = sum(cpu - before[g.name].get(pid, 0.0) for pid, cpu in after.items())
        mems = [memory_kb(pid) for pid in after]
        out[g.name] = {
            "cpu_percent": round(100 * used / elapsed, 2),
            "pss_mb": round(sum(m.get("Pss", 0) for m in mems) / 1024, 1),
            "rss_mb": round(sum(m.get("Rss", 0) for m in mems) / 1024, 1),
            "processes": len(after),
        }
    return out


# --- the attendees -----------------------------------------------------------------------------
async def create_session(chimed: Any, meeting: Any, user: str, devices: S.DeviceSelection) -> str:
    """A new attendee's session (not started) with these devices."""
    attendee = await chimed.meetings.CreateAttendee(
        meeting_pb2.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id=user)
    )
    created = await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting=meeting, attendee=attendee.attendee, devices=devices)
    )
    return str(created.session.session_id)


async def _chimed_session(chimed: Any, meeting: Any, user: str) -> str:
    return await create_session(
        chimed, meeting, user, S.DeviceSelection(audio_input_device_id=TONE)
    )


async def chimed_join_s(chimed: Any, sid: str) -> float:
    """Start until audio_session_started, on an observer registered beforehand."""
    call = chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id=sid))
    try:
        await call.initial_metadata()  # the observer is registered
        t0 = time.perf_counter()
        await chimed.sessions.Start(S.StartRequest(session_id=sid))
        async with asyncio.timeout(TIMEOUT):
            async for event in call:
                kind = event.WhichOneof("event")
                if kind == "audio_session_started":
                    return time.perf_counter() - t0
                if kind == "audio_session_stopped":
                    raise RuntimeError(f"chimed's join failed: {event}")
        raise RuntimeError("the observer stream ended before the session started")
    finally:
        call.cancel()


async def browser_join_s(page: Page, meeting_name: str) -> tuple[float, str]:
    """The page's join() (fetch /app/join, devices, signaling, ICE through the relay) until the
    SDK's audioVideoDidStart; timed in the page. Returns (seconds, attendee id)."""
    result = await page.eval(
        f"""(async () => {{
            const t0 = performance.now();
            const ids = await chimedPage.join({json.dumps(meeting_name)}, 'browser',
                                              {{timeoutMs: {int(TIMEOUT * 1000)}}});
            return {{ms: performance.now() - t0, attendeeId: ids.attendeeId}};
        }})()""",
        TIMEOUT + 5,
    )
    return result["ms"] / 1000, result["attendeeId"]


async def _heard(call: Any, attendee_id: str) -> None:
    """Until a volume_changed puts `attendee_id` above not-speaking."""
    async for event in call:
        if event.WhichOneof("event") != "volume_changed":
            continue
        for u in event.volume_changed.volume_updates:
            if (
                u.attendee.attendee_id == attendee_id
                and u.volume_level > types_pb2.VOLUME_LEVEL_NOT_SPEAKING
            ):
                return
    raise RuntimeError("the realtime stream ended")


async def audio_flowing(chimed: Any, sid: str, page: Page, chimed_id: str, bid: str) -> None:
    """Both directions carry sound: the page's volume indicator for chimed's attendee rises, and
    chimed reports volume for the browser's attendee."""
    call = chimed.sessions.AddRealtimeObserver(S.AddRealtimeObserverRequest(session_id=sid))
    try:
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(
                page.eval(
                    f"chimedPage.waitFor((s) => (s.volumes['{chimed_id}'] ?? 0) > 0, "
                    f"{int(TIMEOUT * 1000)})",
                    TIMEOUT + 5,
                ),
                _heard(call, bid),
            )
    finally:
        call.cancel()


def median_windows(windows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per group and figure, the median over the windows."""
    return {
        group: {key: statistics.median(w[group][key] for w in windows) for key in figures}
        for group, figures in windows[0].items()
    }


def _join_summary(times_s: list[float]) -> dict[str, float]:
    ms = [t * 1000 for t in times_s]
    return {
        "first_ms": round(ms[0], 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "min_ms": round(min(ms), 1),
        "n": len(ms),
    }


def minus(loaded: dict[str, float], idle: dict[str, float], n: int) -> dict[str, float]:
    return {
        "cpu_percent": round((loaded["cpu_percent"] - idle["cpu_percent"]) / n, 2),
        "pss_mb": round((loaded["pss_mb"] - idle["pss_mb"]) / n, 1),
        "rss_mb": round((loaded["rss_mb"] - idle["rss_mb"]) / n, 1),
    }


def _ratios(chimed: dict[str, float], browser: dict[str, float]) -> dict[str, Any]:
    cpu = chimed["cpu_percent"] / browser["cpu_percent"] if browser["cpu_percent"] > 0 else None
    mem = chimed["pss_mb"] / browser["pss_mb"] if browser["pss_mb"] > 0 else None
    return {
        "cpu_ratio": None if cpu is None else round(cpu, 3),
        "memory_ratio": None if mem is None else round(mem, 3),
        "meets_cpu": cpu is not None and cpu <= TARGETS["cpu_ratio_max"],
        "meets_memory": mem is not None and mem <= TARGETS["memory_ratio_max"],
    }


# --- the run -----------------------------------------------------------------------------------
async def run(steady_s: float = 20.0, sessions: int = 10, joins: int = 3) -> dict[str, Any]:
    try:
        find_chromium()
    except BrowserError as e:
        return {"skipped": str(e)}
    embedded = EmbeddedProcess()
    daemon = DaemonProcess(args=["--control-plane", embedded.url]).start()
    try:
        assert daemon.proc is not None
        return await _run(embedded, daemon, steady_s, sessions, joins)
    finally:
        daemon.stop()
        embedded.stop()


async def _run(
    embedded: EmbeddedProcess, daemon: DaemonProcess, steady_s: float, sessions: int, joins: int
) -> dict[str, Any]:
    assert daemon.proc is not None
    daemon_pid = daemon.proc.pid
    chimed_group = Group("chimed", lambda: [daemon_pid])
    service_group = Group("embedded_service", lambda: [embedded.proc.pid])
    out: dict[str, Any] = {
        "window_s": steady_s,
        "windows": WINDOWS,
        "audio": f"chimed sends {TONE}; Chromium sends its fake microphone; both receive the mix",
    }
    client: Any = connect_aio(daemon.target)  # the stubs are typed for blocking calls
    async with client as chimed:
        await chimed.sessions.ListSessions(S.ListSessionsRequest())
        await asyncio.sleep(1)  # let the daemon settle after its first call
        idle = (await measure([chimed_group], min(steady_s, 10.0)))["chimed"]

        name = f"bench-browser-{os.getpid()}"
        meeting = (
            await chimed.meetings.CreateMeeting(
                meeting_pb2.CreateMeetingRequest(
                    client_request_token=name, external_meeting_id=name
                )
            )
        ).meeting
        sids = [await _chimed_session(chimed, meeting, "chimed-0")]
        chimed_joins = []
        for i in range(joins):
            if i:
                await chimed.sessions.Stop(S.StopRequest(session_id=sids[0]))
            chimed_joins.append(await chimed_join_s(chimed, sids[0]))
        chimed_id = (
            await chimed.sessions.GetSession(S.GetSessionRequest(session_id=sids[0]))
        ).session.attendee_id

        async with Browser() as browser:
            assert browser.pid is not None
            browser_pid = browser.pid
            browser_group = Group("browser", lambda: process_tree(browser_pid))
            page = await browser.open(embedded.url + "/", TIMEOUT)
            browser_joins = []
            for i in range(joins):
                if i:
                    await page.eval("chimedPage.leave()", TIMEOUT)
                seconds, browser_id = await browser_join_s(page, name)
                browser_joins.append(seconds)
            await audio_flowing(chimed, sids[0], page, chimed_id, browser_id)
            await asyncio.sleep(SETTLE_S)
            windows = [
                await measure([browser_group, chimed_group, service_group], steady_s)
                for _ in range(WINDOWS)
            ]
            one = median_windows(windows)
            with contextlib.suppress(BrowserError, TimeoutError):
                await page.eval("chimedPage.leave()", TIMEOUT)

        # (b) N sessions in the daemon, all sending a tone, in the same meeting.
        for i in range(1, sessions):
            sid = await _chimed_session(chimed, meeting, f"chimed-{i}")
            await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
            sids.append(sid)
        await asyncio.sleep(SETTLE_S)
        many = await measure([chimed_group, service_group], steady_s)
        for sid in sids:
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))

    browser_fig = one["browser"]
    chimed_one = minus(one["chimed"], idle, 1)
    chimed_many = minus(many["chimed"], idle, sessions)
    out.update(
        {
            "join": {
                "browser": _join_summary(browser_joins),
                "chimed": _join_summary(chimed_joins),
            },
            "browser": browser_fig,
            "one_session_windows_cpu_percent": [
                {g: w[g]["cpu_percent"] for g in ("browser", "chimed")} for w in windows
            ],
            "chimed_idle_daemon": idle,
            "chimed_daemon_one_session": one["chimed"],
            "chimed_one_session": chimed_one,
            f"chimed_daemon_{sessions}_sessions": many["chimed"],
            f"chimed_per_session_at_{sessions}": chimed_many,
            "embedded_service": {
                "with_browser_and_one_session": one["embedded_service"],
                f"with_{sessions}_sessions": many["embedded_service"],
                "note": "its own process; not counted for either attendee",
            },
            "targets": TARGETS,
            "vs_browser": {
                "one_session": _ratios(chimed_one, browser_fig),
                f"per_session_at_{sessions}": _ratios(chimed_many, browser_fig),
            },
        }
    )
    return out
