"""Foundation benchmarks: join latency, data message latency, daemon memory.

Baselines in the same run: a raw gRPC unary round trip (Health/Check on the same socket) and a
raw WebSocket echo round trip (aiohttp, loopback), so the figures read against the floor the
transport sets on this machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web
from chime.client import AsyncChimed, connect_aio
from chime.v1 import events_pb2, meeting_pb2, session_pb2
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.stats import rss_mb, summary
from tests.daemon_proc import DaemonProcess, EmbeddedProcess

S = session_pb2

TARGETS = {
    "join_p50_ms": 300.0,
    "data_message_p50_ms": 3.0,
    "data_message_p99_ms": 15.0,
    "idle_rss_mb": 100.0,
}


async def _meeting(chimed: AsyncChimed, name: str) -> Any:
    r = await chimed.meetings.CreateMeeting(
        meeting_pb2.CreateMeetingRequest(external_meeting_id=name)
    )
    return r.meeting


async def _session(chimed: AsyncChimed, meeting: Any, user: str) -> str:
    a = await chimed.meetings.CreateAttendee(
        meeting_pb2.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id=user)
    )
    s = await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting=meeting, attendee=a.attendee)
    )
    return str(s.session.session_id)


async def join_latency(chimed: AsyncChimed, joins: int) -> dict[str, float]:
    """Start to audio_session_started on the observer stream."""
    meeting = await _meeting(chimed, "bench-joins")
    await _session(chimed, meeting, "host")  # someone already in the meeting
    times: list[float] = []
    for i in range(joins):
        sid = await _session(chimed, meeting, f"joiner-{i}")
        call = chimed.sessions.AddAudioVideoObserver(S.AddAudioVideoObserverRequest(session_id=sid))
        await call.initial_metadata()  # the observer is registered
        t0 = time.perf_counter()
        await chimed.sessions.Start(S.StartRequest(session_id=sid))
        async for event in call:
            if event.WhichOneof("event") == "audio_session_started":
                times.append(time.perf_counter() - t0)
                break
            if event.WhichOneof("event") == "audio_session_stopped":
                raise RuntimeError(f"join failed: {event}")
        call.cancel()
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
    return summary(times, 50, 95)


async def data_message_latency(chimed: AsyncChimed, count: int) -> dict[str, float]:
    """SendMessage on one session to the event on another session's stream."""
    meeting = await _meeting(chimed, "bench-messages")
    a = await _session(chimed, meeting, "receiver")
    b = await _session(chimed, meeting, "sender")
    for sid in (a, b):
        await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True))
    call = chimed.sessions.AddDataMessageObserver(S.AddDataMessageObserverRequest(session_id=a))
    await call.initial_metadata()
    times: list[float] = []
    message = struct_pb2.Struct()
    for i in range(count):
        message.update({"i": i})
        t0 = time.perf_counter()
        await chimed.sessions.SendMessage(S.SendMessageRequest(session_id=b, message=message))
        event = await call.read()
        times.append(time.perf_counter() - t0)
        assert isinstance(event, events_pb2.DataMessageEvent)
        assert event.data_message_received.data_message.json["i"] == i
        # Stay below the service's throttle (100/s, burst 200) as a real sender must.
        await asyncio.sleep(0.011)
    call.cancel()
    return summary(times, 50, 99)


async def grpc_unary_baseline(chimed: AsyncChimed, count: int) -> dict[str, float]:
    health = health_pb2_grpc.HealthStub(chimed.channel)
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest())
        times.append(time.perf_counter() - t0)
    return summary(times, 50, 99)


async def websocket_echo_baseline(count: int) -> dict[str, float]:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    times = []
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}/") as ws:
        payload = b"x" * 64
        for _ in range(count):
            t0 = time.perf_counter()
            await ws.send_bytes(payload)
            await ws.receive()
            times.append(time.perf_counter() - t0)
    await runner.cleanup()
    return summary(times, 50, 99)


async def memory(chimed: AsyncChimed, pid: int, sessions: int) -> dict[str, Any]:
    idle = rss_mb(pid)
    meeting = await _meeting(chimed, "bench-memory")
    sids = [await _session(chimed, meeting, f"m{i}") for i in range(sessions)]
    for sid in sids:
        await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True))
    await asyncio.sleep(2)  # let media settle into its steady state
    loaded = rss_mb(pid)
    for sid in sids:
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
    return {
        "idle_rss_mb": round(idle, 1),
        "rss_with_sessions_mb": round(loaded, 1),
        "sessions": sessions,
        "rss_per_session_mb": round((loaded - idle) / sessions, 2),
    }


async def idle_rss(daemon: DaemonProcess) -> float:
    """RSS once the daemon answers calls and has settled (no sessions, no calls in flight)."""
    assert daemon.proc is not None
    async with connect_aio(daemon.target) as chimed:
        await chimed.sessions.ListSessions(S.ListSessionsRequest())
    await asyncio.sleep(1)
    return round(rss_mb(daemon.proc.pid), 1)


async def run(joins: int, messages: int, sessions: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The daemon proper, as with AWS or a shared `chimed embedded`: the service runs apart.
    embedded = EmbeddedProcess()
    daemon = DaemonProcess(args=["--control-plane", embedded.url]).start()
    try:
        assert daemon.proc is not None
        idle = await idle_rss(daemon)
        async with connect_aio(daemon.target) as chimed:
            out["join"] = await join_latency(chimed, joins)
            out["data_message"] = await data_message_latency(chimed, messages)
            out["baseline_grpc_unary"] = await grpc_unary_baseline(chimed, messages)
            out["baseline_websocket_echo"] = await websocket_echo_baseline(messages)
            out["memory"] = await memory(chimed, daemon.proc.pid, sessions)
        out["memory"]["idle_rss_mb"] = idle
        out["memory"]["note"] = (
            "the daemon process alone; the embedded service ran in its own process. "
            "rss_per_session counts the client side only."
        )
    finally:
        daemon.stop()
        embedded.stop()
    # `make run`'s default: the embedded service inside the daemon.
    inprocess = DaemonProcess().start()
    try:
        out["memory"]["idle_rss_with_embedded_in_process_mb"] = await idle_rss(inprocess)
    finally:
        inprocess.stop()
    out["targets"] = TARGETS
    out["meets_targets"] = {
        "join_p50": out["join"]["p50_ms"] <= TARGETS["join_p50_ms"],
        "data_message_p50": out["data_message"]["p50_ms"] <= TARGETS["data_message_p50_ms"],
        "data_message_p99": out["data_message"]["p99_ms"] <= TARGETS["data_message_p99_ms"],
        "idle_rss": out["memory"]["idle_rss_mb"] <= TARGETS["idle_rss_mb"],
    }
    return out
