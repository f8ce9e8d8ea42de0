"""Video benchmarks (640x480 at 15 fps throughout, the test pattern everywhere), each chimed
figure beside a baseline measured in the same run, its target and whether it meets it.

Baselines (bench/video_pair.py): a bare aiortc VP8 sender and a bare aiortc receiver, each a
process of its own; a receiver that never reads its track (aiortc decodes and queues every
frame regardless: its memory grows); aiortc's frame latency.
chimed (two daemons and a `chimed embedded` service, each its own process; sender A in the
first daemon, R receivers in the second, so each daemon's CPU is one side's):
- frame latency: numbered frames (bench/video_marks.py) fed to A through StreamInput at 60
  fps, read back from B's BindView I420 stream; A's source sends the newest frame at each of
  its 15 ticks a second, so a frame left between its feed and the next one's: the figure is
  from the middle of the two to the frame's first arrival (the bounds beside it);
- CPU per sent stream: A's daemon with A sending minus the same with A in the meeting, silent;
- a received stream with no view: the receivers' daemon with the tiles there and unviewed,
  minus the same before StartRemote, per stream; and its RSS growth over the window;
- a view: the receivers' daemon with one tile bound (I420, then JPEG, at most 15 fps), minus
  the unviewed window, plus one unviewed stream: the whole cost of a viewed stream;
- the embedded service: its CPU with the video forwarded minus without, per stream per receiver.
The browser comparison (one attendee sending the pattern and viewing one remote tile, chimed
against Chromium running the official client) is in bench/video_browser.py.

Run: python -m bench --video-only [--video-steady-seconds 8] [--video-latency-seconds 10]
[--video-receivers 2] [--no-browser]  (make bench-video)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from chime.client import AsyncChimed, connect_aio
from chime.v1 import meeting_pb2, session_pb2, video_pb2
from chimed.media.video_frames import I420, JPEG, FrameConverter, FrameFormat

from bench.browser import Group, create_session, measure
from bench.stats import paced, rss_mb, summary
from bench.video_marks import Arrivals, MarkedPattern, latencies, read_i420
from bench.video_pair import video_pair
from tests.daemon_proc import DaemonProcess, EmbeddedProcess

S = session_pb2
V = video_pb2
WIDTH, HEIGHT, FPS = 640, 480, 15
PATTERN = f"virtual:pattern?width={WIDTH}&height={HEIGHT}&fps={FPS}"
FRAMES = f"virtual:frames?width={WIDTH}&height={HEIGHT}&fps={FPS}"
SETTLE_S = 3.0  # ICE, bandwidth estimation and the first keyframes settle
TIMEOUT = 30.0
RSS_INTERVAL_S = 0.5
TARGETS = {
    "frame_latency_p50_ms_max": 50.0,
    "sender_cpu_ratio_max": 1.0,  # chimed per sent stream / the bare aiortc sender
    "no_view_cpu_percent_max": 0.5,
    "no_view_rss_growth_mb_per_s_max": 0.1,  # "flat": the bare receiver that never reads grows ~6.6
    "view_i420_cpu_ratio_max": 1.1,  # chimed per viewed stream / the bare aiortc receiver
    "service_cpu_percent_per_stream_per_receiver_max": 1.0,
}


WINDOW_FIGURES = (
    "sender_cpu",
    "no_view_cpu",
    "no_view_rss_growth",
    "view_i420_cpu",
    "view_jpeg_cpu",
    "service_cpu",
)


def judged(value: float | None, limit: float, **context: Any) -> dict[str, Any]:
    """One figure: its value, what it is compared with, the limit and whether it is met."""
    ok = value is not None and math.isfinite(value) and value <= limit
    return {"value": value, **context, "max": limit, "pass": ok}


def video_input(device_id: str) -> S.DeviceSelection:
    return S.DeviceSelection(video_input_device_id=device_id)


def missing(why: str) -> dict[str, Any]:
    return {"value": None, "missing": why, "pass": None}


def ms(values: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds (none of a list that is empty)."""
    return summary(values, 50, 95) if values else {"n": 0}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b > 0 else None


# --- measurements ------------------------------------------------------------------------------
async def rss_growth(pid: int, seconds: float) -> float:
    """RSS growth (MB/s) of a process over `seconds`: the least-squares slope of samples."""
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        samples.append((now, rss_mb(pid)))
        await asyncio.sleep(RSS_INTERVAL_S)
    samples.append((time.monotonic(), rss_mb(pid)))
    t0 = samples[0][0]
    xs = [t - t0 for t, _ in samples]
    ys = [m for _, m in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 3)


async def window(
    groups: list[Group], seconds: float, growth_of: int | None = None
) -> dict[str, Any]:
    """CPU and memory of the groups over one window (and one process's RSS growth)."""
    if growth_of is None:
        return dict(await measure(groups, seconds))
    figures, growth = await asyncio.gather(measure(groups, seconds), rss_growth(growth_of, seconds))
    return {**figures, "rss_growth_mb_per_s": growth}


# --- the baselines -----------------------------------------------------------------------------
async def baseline_load(steady_s: float) -> dict[str, Any]:
    """The bare sender and a bare receiver that reads (and drops) every frame."""
    async with video_pair("read") as pair:
        await asyncio.sleep(SETTLE_S)
        sender, receiver = pair.sender_pid, pair.receiver_pid
        figures = await measure(
            [Group("sender", lambda: [sender]), Group("receiver", lambda: [receiver])], steady_s
        )
    return figures


async def baseline_ignoring(steady_s: float) -> dict[str, Any]:
    """A bare receiver that never reads its track."""
    async with video_pair("ignore") as pair:
        await asyncio.sleep(SETTLE_S)
        receiver = pair.receiver_pid
        figures = await window([Group("receiver", lambda: [receiver])], steady_s, receiver)
    return {**figures["receiver"], "rss_growth_mb_per_s": figures["rss_growth_mb_per_s"]}


async def baseline_latency(seconds: float) -> dict[str, Any]:
    """Send time of each numbered frame to its first decoded arrival, bare aiortc."""
    async with video_pair("marks") as pair:
        await asyncio.sleep(SETTLE_S)
        start = time.monotonic()
        await asyncio.sleep(seconds)
    sent = {n: t for n, t in pair.sent.items() if t >= start}
    values = latencies(sent, pair.arrived)
    return {**ms(values), "sent": len(sent), "unreadable": pair.unreadable}


# --- chimed ------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """The embedded service and two daemons (senders, receivers), each its own process."""

    service: EmbeddedProcess
    senders: DaemonProcess
    receivers: DaemonProcess
    a: AsyncChimed  # a client of `senders`
    b: AsyncChimed  # a client of `receivers`
    made: list[tuple[AsyncChimed, str]] = field(default_factory=list)

    def groups(self) -> list[Group]:
        pids = {
            "senders": self.senders.proc.pid if self.senders.proc else 0,
            "receivers": self.receivers.proc.pid if self.receivers.proc else 0,
            "service": self.service.proc.pid,
        }
        return [Group(name, functools.partial(list, [pid])) for name, pid in pids.items()]

    @property
    def receivers_pid(self) -> int:
        assert self.receivers.proc is not None
        return self.receivers.proc.pid

    async def meeting(self, name: str) -> Any:
        r = await self.a.meetings.CreateMeeting(
            meeting_pb2.CreateMeetingRequest(external_meeting_id=f"{name}-{os.getpid()}")
        )
        return r.meeting

    async def session(self, chimed: AsyncChimed, meeting: Any, user: str, video: str = "") -> str:
        """A started session (its video input `video`, if given) of `chimed`'s daemon."""
        sid = await create_session(chimed, meeting, user, video_input(video))
        self.made.append((chimed, sid))
        await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
        return sid

    async def delete_sessions(self) -> None:
        made, self.made = self.made, []
        for chimed, sid in made:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    service = EmbeddedProcess()
    senders = DaemonProcess(args=["--control-plane", service.url])
    receivers = DaemonProcess(args=["--control-plane", service.url])
    try:
        senders.start()
        receivers.start()
        async with connect_aio(senders.target) as a, connect_aio(receivers.target) as b:
            c = Cluster(service, senders, receivers, a, b)
            try:
                yield c
            finally:
                await c.delete_sessions()
    finally:
        receivers.stop()
        senders.stop()
        service.stop()


async def attendee_id(chimed: AsyncChimed, sid: str) -> str:
    r = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=sid))
    return str(r.session.attendee_id)


async def remote_tile(chimed: AsyncChimed, sid: str, of_attendee: str) -> int:
    """StartRemote, then the id of the tile that shows `of_attendee` (from the tile observer)."""
    call = chimed.sessions.AddTileObserver(S.AddTileObserverRequest(session_id=sid))
    try:
        await call.initial_metadata()  # the observer is registered
        await chimed.video.StartRemote(V.StartRemoteRequest(session_id=sid))
        try:
            async with asyncio.timeout(TIMEOUT):
                async for event in call:
                    if event.WhichOneof("event") != "video_tile_added":
                        continue
                    state = event.video_tile_added.tile_state
                    if state.attendee_id == of_attendee and not state.is_local_tile:
                        return int(state.tile_id)
        except TimeoutError:
            raise TimeoutError(f"no tile for {of_attendee} within {TIMEOUT:g} s") from None
        raise RuntimeError("the tile observer stream ended before the tile came")
    finally:
        call.cancel()


class View:
    """A BindView stream read in the background: frames counted, and (I420) numbers read."""

    def __init__(
        self, chimed: AsyncChimed, sid: str, tile: int, fmt: FrameFormat, max_fps: int = 0
    ) -> None:
        self.call = chimed.video.BindView(
            V.BindViewRequest(session_id=sid, tile_id=tile, format=fmt, max_fps=max_fps)
        )
        self.fmt = fmt
        self.frames = 0
        self.arrivals = Arrivals()
        self.first = asyncio.Event()
        self.size = (0, 0)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            async for frame in self.call:
                now = time.monotonic()
                self.frames += 1
                self.size = (frame.width, frame.height)
                if self.fmt == I420:
                    self.arrivals.add(read_i420(frame.data, frame.width, frame.height), now)
                self.first.set()

    async def wait_first(self) -> None:
        try:
            await asyncio.wait_for(self.first.wait(), TIMEOUT)
        except TimeoutError:
            raise TimeoutError(f"BindView gave no frame within {TIMEOUT:g} s") from None

    async def close(self) -> None:
        self.call.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Feeder:
    """Numbered pattern frames written to a StreamInput call at `fps` until stopped; `fed[n]`
    is the monotonic time frame n was handed to the call."""

    def __init__(self, chimed: AsyncChimed, sid: str, fps: float) -> None:
        self.fed: dict[int, float] = {}
        self._pattern = MarkedPattern(WIDTH, HEIGHT, FPS, "latency")
        self._to_i420 = FrameConverter(I420).convert
        self._call = chimed.video.StreamInput()
        self._fps = fps
        self._task = asyncio.create_task(self._run(sid))

    async def _run(self, sid: str) -> None:
        async def step(_: float) -> None:
            number = self._pattern.count
            data = self._to_i420(self._pattern.draw()).data
            self.fed[number] = time.monotonic()
            await self._call.write(stream_input_frame(sid, data))

        await paced(1 / self._fps, 1 << 30, step)

    async def stop(self) -> None:
        """Stop feeding; raises what the feeding met (the call's error)."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        finally:
            self._call.cancel()
            self._pattern.stop()


async def chimed_latency(c: Cluster, seconds: float, feed_fps: float) -> dict[str, Any]:
    """Numbered frames fed to A (StreamInput) at `feed_fps` to B's BindView I420 stream."""
    meeting = await c.meeting("bench-video-latency")
    a = await c.session(c.a, meeting, "latency-a", FRAMES)
    b = await c.session(c.b, meeting, "latency-b")
    feeder = Feeder(c.a, a, feed_fps)
    view: View | None = None
    try:
        await c.a.video.StartLocal(V.StartLocalRequest(session_id=a))
        view = View(c.b, b, await remote_tile(c.b, b, await attendee_id(c.a, a)), I420)
        await view.wait_first()
        await asyncio.sleep(SETTLE_S)
        start = time.monotonic()
        await asyncio.sleep(seconds)
    finally:
        await feeder.stop()
        if view is not None:
            await view.close()
    return feed_latency(feeder.fed, view.arrivals, start, feed_fps)


def feed_latency(
    fed: dict[int, float], arrivals: Arrivals, start: float, feed_fps: float
) -> dict[str, Any]:
    """Latency from the source to the view for frames fed from `start` on. The source sends
    the newest frame fed at each of its ticks, so frame n left between the feeds of n and
    n + 1: the figure takes the middle (within half a feed period, `resolution_ms`), beside
    the bounds (feed of n, feed of n + 1, to the arrival; a path faster than the feed period
    gives a lower bound below zero)."""
    arrived = arrivals.first
    seen = [n for n in sorted(arrived) if fed.get(n, 0.0) >= start and n + 1 in fed]
    return {
        **ms([arrived[n] - (fed[n] + fed[n + 1]) / 2 for n in seen]),
        "upper_bound_p50_ms": ms([arrived[n] - fed[n] for n in seen]).get("p50_ms"),
        "lower_bound_p50_ms": ms([arrived[n] - fed[n + 1] for n in seen]).get("p50_ms"),
        "resolution_ms": round(500 / feed_fps, 1),
        "feed_fps": feed_fps,
        "unreadable": arrivals.unreadable,
    }


def stream_input_frame(sid: str, data: bytes) -> V.VideoServiceStreamInputRequest:
    """One I420 frame for StreamInput; every message names the session, format and size."""
    return V.VideoServiceStreamInputRequest(
        session_id=sid, format=I420, width=WIDTH, height=HEIGHT, data=data
    )


async def chimed_load(c: Cluster, steady_s: float, receivers: int) -> dict[str, Any]:
    """The windows: in the meeting without video, A sending to unviewed tiles, one tile viewed
    in I420, then in JPEG. Returns each window's figures per process."""
    meeting = await c.meeting("bench-video-load")
    a = await c.session(c.a, meeting, "sender", PATTERN)
    bs = [await c.session(c.b, meeting, f"receiver-{i}") for i in range(receivers)]
    groups = c.groups()
    await asyncio.sleep(SETTLE_S)
    out: dict[str, Any] = {"no_video": await window(groups, steady_s, c.receivers_pid)}
    await c.a.video.StartLocal(V.StartLocalRequest(session_id=a))
    a_id = await attendee_id(c.a, a)
    tiles = [await remote_tile(c.b, b, a_id) for b in bs]
    await asyncio.sleep(SETTLE_S)
    out["unviewed"] = await window(groups, steady_s, c.receivers_pid)
    for name, fmt in (("view_i420", I420), ("view_jpeg", JPEG)):
        view = View(c.b, bs[0], tiles[0], fmt, FPS)
        try:
            await view.wait_first()
            await asyncio.sleep(SETTLE_S)
            before = view.frames
            out[name] = await window(groups, steady_s, c.receivers_pid)
            out[name]["view_fps"] = round((view.frames - before) / steady_s, 1)
            out[name]["view_size"] = f"{view.size[0]}x{view.size[1]}"
        finally:
            await view.close()
    return out


def _cpu(w: dict[str, Any], group: str) -> float:
    return float(w[group]["cpu_percent"])


def chimed_figures(load: dict[str, Any], receivers: int) -> dict[str, float]:
    off, on = load["no_video"], load["unviewed"]
    no_view = (_cpu(on, "receivers") - _cpu(off, "receivers")) / receivers
    figures = {
        "sender_cpu_percent": round(_cpu(on, "senders") - _cpu(off, "senders"), 2),
        "no_view_cpu_percent": round(no_view, 2),
        "no_view_rss_growth_mb_per_s": on["rss_growth_mb_per_s"],
        "service_cpu_percent_per_stream_per_receiver": round(
            (_cpu(on, "service") - _cpu(off, "service")) / receivers, 2
        ),
    }
    for view in ("view_i420", "view_jpeg"):
        if view in load:
            cost = _cpu(load[view], "receivers") - _cpu(on, "receivers") + no_view
            figures[f"{view}_cpu_percent"] = round(cost, 2)
    return figures


# --- the run -----------------------------------------------------------------------------------
async def run(
    steady_s: float = 8.0, latency_s: float = 10.0, receivers: int = 2, feed_fps: float = 60.0
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "picture": f"the test pattern, {WIDTH}x{HEIGHT} at {FPS} fps",
        "window_s": steady_s,
        "receivers": receivers,
    }
    load = await baseline_load(steady_s)
    base = {
        "sender": load["sender"],
        "receiver": load["receiver"],
        "receiver_never_reading": await baseline_ignoring(steady_s),
        "frame_latency": await baseline_latency(latency_s),
        "note": "bare aiortc 1.x, VP8, sender and receiver each a process of its own, loopback",
    }
    out["baseline_aiortc"] = base
    chimed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    async with cluster() as c:
        jobs: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("latency", functools.partial(chimed_latency, c, latency_s, feed_fps)),
            ("windows", functools.partial(chimed_load, c, steady_s, receivers)),
        ]
        for name, job in jobs:
            try:
                chimed[name] = await job()
            except (grpc.aio.AioRpcError, AttributeError, RuntimeError, TimeoutError) as e:
                errors[name] = failure(e)
            await c.delete_sessions()
    out["chimed"] = chimed
    if errors:
        out["chimed_errors"] = errors
    out["figures"] = figures(base, chimed, errors, receivers)
    out["targets"] = TARGETS
    return out


def failure(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


def figures(
    base: dict[str, Any], chimed: dict[str, Any], errors: dict[str, str], receivers: int
) -> dict[str, Any]:
    """Every chimed figure beside its baseline and target, with pass (None: not measured)."""
    out: dict[str, Any] = {}
    base_latency = base["frame_latency"].get("p50_ms")
    if "latency" in chimed:
        out["frame_latency_p50_ms"] = judged(
            chimed["latency"].get("p50_ms"),
            TARGETS["frame_latency_p50_ms_max"],
            baseline_aiortc=base_latency,
        )
    else:
        out["frame_latency_p50_ms"] = missing(errors.get("latency", "not run"))
    sender = _cpu(base, "sender")
    receiver = _cpu(base, "receiver")
    if "windows" not in chimed:
        why = errors.get("windows", "not run")
        for name in WINDOW_FIGURES:
            out[name] = missing(why)
        return out
    f = chimed_figures(chimed["windows"], receivers)
    out["sender_cpu"] = judged(
        ratio(f["sender_cpu_percent"], sender),
        TARGETS["sender_cpu_ratio_max"],
        unit="chimed / bare aiortc sender",
        chimed_cpu_percent=f["sender_cpu_percent"],
        baseline_cpu_percent=sender,
    )
    ignoring = base["receiver_never_reading"]
    out["no_view_cpu"] = judged(
        f["no_view_cpu_percent"],
        TARGETS["no_view_cpu_percent_max"],
        unit="% of a core per received stream",
        baseline_never_reading_cpu_percent=ignoring["cpu_percent"],
    )
    out["no_view_rss_growth"] = judged(
        f["no_view_rss_growth_mb_per_s"],
        TARGETS["no_view_rss_growth_mb_per_s_max"],
        unit="MB/s, the receivers' daemon",
        baseline_never_reading_mb_per_s=ignoring["rss_growth_mb_per_s"],
    )
    for view, limit in (("view_i420", TARGETS["view_i420_cpu_ratio_max"]), ("view_jpeg", None)):
        key = f"{view}_cpu_percent"
        context = {
            "unit": "chimed / bare aiortc receiver",
            "chimed_cpu_percent": f.get(key),
            "baseline_cpu_percent": receiver,
        }
        value = ratio(f[key], receiver) if key in f else None
        if limit is None:  # reported, no target of its own
            out[f"{view}_cpu"] = {"value": value, **context, "pass": None}
        else:
            out[f"{view}_cpu"] = judged(value, limit, **context)
    out["service_cpu"] = judged(
        f["service_cpu_percent_per_stream_per_receiver"],
        TARGETS["service_cpu_percent_per_stream_per_receiver_max"],
        unit="% of a core per forwarded stream per receiver",
    )
    return out
