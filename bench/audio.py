"""Meeting audio benchmarks, each figure beside a baseline measured in the same run.

- Mouth-to-ear latency: A's input is a PCM feed (AudioService/StreamInput) paced in 20 ms
  chunks on the bench's monotonic clock, with tone bursts starting at chunk boundaries; B's
  output is a PCM feed (AudioService/StreamOutput). Latency = arrival of B's first chunk whose
  level crosses the onset threshold minus the moment A's chunk carrying the onset was written.
  Baseline: the same measure through a bare aiortc pair (one Opus encode, one decode, no relay).
- Active-speaker detection: the same bursts; onset at A to `active_speaker_detected` naming A
  at B's observer stream. The stream asks for speaker_weight 0.3 / cutoff 0.2 so A drops out
  of the list between bursts; the onset rule is the default policy's (the first update above
  the silence threshold already crosses the cutoff with the default weights too).
- Density: CPU and RSS of one daemon holding 1, 10 and 25 sessions of one meeting (one sends
  a tone, the others their default silence; outputs the default null sink) over a steady
  window; the embedded service runs in its own process and is measured apart. Baseline: a
  bare aiortc pair carrying one Opus stream (two RTCPeerConnections in one process, loopback,
  no ICE servers, tone in, decoded and dropped out), in its own process.

`python -m bench.audio pair --seconds S` / `--bursts N` runs the baseline pair alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from chime.client import AsyncChimed, connect_aio
from chime.v1 import audio_pb2, meeting_pb2, session_pb2
from chimed.media.ice import pin_host_addresses, rtc_configuration

from bench.stats import cpu_seconds, paced, percentile, rss_mb
from tests.daemon_proc import DaemonProcess, EmbeddedProcess

S = session_pb2
A = audio_pb2
RATE = 48000
CHUNK = 960  # 20 ms
CHUNK_S = CHUNK / RATE
TONE_HZ = 440.0
TONE_LEVEL = 10 ** (-20 / 20) * 32767  # -20 dBFS peak
ONSET_RMS = 300.0  # a -20 dBFS sine has an RMS of ~2300; digital silence and Opus noise ~0
BURST_S = 0.5
PERIOD_S = 2.5  # A leaves the active-speaker list well within the gap
TONE = "virtual:tone?frequency=440&level=-20"
TIMEOUT = 30.0
SETTLE_S = 3.0
TARGETS = {
    "mouth_to_ear_p50_ms": 150.0,
    "active_speaker_p50_ms": 500.0,
    "cores_at_25_sessions": 1.0,
    "rss_mb_per_session_beyond_first": 20.0,
}


def _ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "n": len(values),
    }


class BurstSource:
    """20 ms chunks of s16 mono: silence with a 440 Hz burst of BURST_S every PERIOD_S
    (starting at chunk boundaries); `onsets` holds each burst's chunk send time."""

    def __init__(self) -> None:
        self.index = 0
        self.onsets: list[float] = []
        self._burst_chunks = round(BURST_S / CHUNK_S)
        self._period_chunks = round(PERIOD_S / CHUNK_S)
        t = np.arange(CHUNK) / RATE
        self._chunks = [
            np.round(TONE_LEVEL * np.sin(2 * math.pi * TONE_HZ * (t + k * CHUNK_S))).astype("<i2")
            for k in range(self._burst_chunks)
        ]
        self._silence = np.zeros(CHUNK, dtype="<i2")

    def next(self, now: float) -> np.ndarray[Any, np.dtype[np.int16]]:
        k = self.index % self._period_chunks
        # The first period is silent: the path settles before the first burst.
        burst = self.index >= self._period_chunks and k < self._burst_chunks
        if burst and k == 0:
            self.onsets.append(now)
        self.index += 1
        return self._chunks[k] if burst else self._silence


class OnsetDetector:
    """Arrival times of silence-to-tone transitions in a stream of chunks."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self._loud = False

    def add(self, samples: np.ndarray[Any, Any], now: float) -> None:
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0
        loud = rms > ONSET_RMS
        if loud and not self._loud:
            self.onsets.append(now)
        self._loud = loud


def match_onsets(sent: list[float], heard: list[float], limit: float = 2.0) -> list[float]:
    """For each sent onset, the first heard onset after it (within `limit`)."""
    out = []
    for t in sent:
        later = [h - t for h in heard if 0 <= h - t < limit]
        if later:
            out.append(min(later))
    return out


# --- through chimed ----------------------------------------------------------------------------
async def _meeting(chimed: AsyncChimed, name: str) -> Any:
    r = await chimed.meetings.CreateMeeting(
        meeting_pb2.CreateMeetingRequest(external_meeting_id=f"{name}-{os.getpid()}")
    )
    return r.meeting


async def _session(
    chimed: AsyncChimed, meeting: Any, user: str, input_id: str = "", output_id: str = ""
) -> S.Session:
    a = await chimed.meetings.CreateAttendee(
        meeting_pb2.CreateAttendeeRequest(meeting_id=meeting.meeting_id, external_user_id=user)
    )
    devices = S.DeviceSelection(audio_input_device_id=input_id, audio_output_device_id=output_id)
    s = await chimed.sessions.CreateSession(
        S.CreateSessionRequest(meeting=meeting, attendee=a.attendee, devices=devices)
    )
    await chimed.sessions.Start(S.StartRequest(session_id=s.session.session_id, wait=True))
    return s.session


async def _delete(chimed: AsyncChimed, sessions: list[S.Session]) -> None:
    for s in sessions:
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


async def latency(chimed: AsyncChimed, bursts: int) -> dict[str, Any]:
    """Mouth-to-ear and active-speaker detection latency, A to B through one daemon."""
    meeting = await _meeting(chimed, "bench-audio-latency")
    a = await _session(chimed, meeting, "mouth", input_id="virtual:pcm")
    b = await _session(chimed, meeting, "ear")
    source, ear = BurstSource(), OnsetDetector()
    detected: list[float] = []
    fmt = A.PcmFormat(sample_rate=RATE, channels=1)
    speakers = chimed.sessions.AddActiveSpeakerObserver(
        S.AddActiveSpeakerObserverRequest(
            session_id=b.session_id, speaker_weight=0.3, cutoff_threshold=0.2
        )
    )
    output = chimed.audio.StreamOutput(A.StreamOutputRequest(session_id=b.session_id, format=fmt))
    feed = chimed.audio.StreamInput()

    async def read_output() -> None:
        async for chunk in output:
            ear.add(np.frombuffer(chunk.pcm, dtype="<i2"), time.monotonic())

    async def read_speakers() -> None:
        listed = False
        async for event in speakers:
            if event.WhichOneof("event") != "active_speaker_detected":
                continue
            now = time.monotonic()
            ids = {x.attendee_id for x in event.active_speaker_detected.attendees}
            if a.attendee_id in ids and not listed:
                detected.append(now)
            listed = a.attendee_id in ids

    readers = [asyncio.create_task(read_output()), asyncio.create_task(read_speakers())]
    try:
        await speakers.initial_metadata()  # the observer is registered
        await feed.write(A.StreamInputRequest(session_id=a.session_id, format=fmt))

        async def step(now: float) -> None:
            await feed.write(A.StreamInputRequest(pcm=source.next(now).tobytes()))

        chunks = round((bursts + 1) * PERIOD_S / CHUNK_S)
        await paced(CHUNK_S, chunks, step)
        await feed.done_writing()
        await asyncio.wait_for(feed, TIMEOUT)
    finally:
        output.cancel()
        speakers.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await _delete(chimed, [a, b])
    return {
        "mouth_to_ear": _ms(match_onsets(source.onsets, ear.onsets)),
        "active_speaker_detection": _ms(match_onsets(source.onsets, detected, PERIOD_S)),
        "bursts": len(source.onsets),
    }


async def density(
    chimed: AsyncChimed, pid: int, service_pid: int, counts: list[int], steady_s: float
) -> dict[str, Any]:
    """CPU and RSS of the daemon with 1, 10, 25 sessions in one meeting (one speaks)."""
    meeting = await _meeting(chimed, "bench-audio-density")
    sessions: list[S.Session] = []
    out: dict[str, Any] = {"idle_rss_mb": round(rss_mb(pid), 1), "steady_seconds": steady_s}
    try:
        for n in counts:
            while len(sessions) < n:
                i = len(sessions)
                sessions.append(
                    await _session(chimed, meeting, f"d{i}", input_id=TONE if i == 0 else "")
                )
            await asyncio.sleep(SETTLE_S)  # ICE, jitter buffers and bitrate estimates settle
            d0, s0, t0 = cpu_seconds(pid), cpu_seconds(service_pid), time.monotonic()
            await asyncio.sleep(steady_s)
            d1, s1, t1 = cpu_seconds(pid), cpu_seconds(service_pid), time.monotonic()
            out[str(n)] = {
                "cores": round((d1 - d0) / (t1 - t0), 3),
                "rss_mb": round(rss_mb(pid), 1),
                "service_cores": round((s1 - s0) / (t1 - t0), 3),
            }
    finally:
        await _delete(chimed, sessions)
    first, last = out[str(counts[0])], out[str(counts[-1])]
    if counts[-1] > counts[0]:
        extra = counts[-1] - counts[0]
        out["rss_mb_per_session_beyond_first"] = round(
            (last["rss_mb"] - first["rss_mb"]) / extra, 2
        )
        out["cores_per_session_beyond_first"] = round((last["cores"] - first["cores"]) / extra, 4)
    return out


# --- the baseline: a bare aiortc pair ----------------------------------------------------------
@dataclass
class _PairStats:
    sent_onsets: list[float] = field(default_factory=list)
    heard_onsets: list[float] = field(default_factory=list)


async def _pair(seconds: float, bursts: int, ready: Callable[[], None]) -> _PairStats:
    """One Opus stream from one RTCPeerConnection to another, both in this process."""
    pin_host_addresses(["127.0.0.1"])
    stats = _PairStats()
    continuous = bursts == 0

    class Mouth(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.source = BurstSource()
            self.start: float | None = None
            self.pts = 0
            t = np.arange(RATE) / RATE
            self.tone = np.round(TONE_LEVEL * np.sin(2 * math.pi * TONE_HZ * t)).astype("<i2")

        async def recv(self) -> AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            if self.start is None:
                self.start = time.monotonic()
            delay = self.start + self.pts / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if continuous:
                offset = self.pts % RATE
                pcm = np.resize(np.roll(self.tone, -offset), CHUNK)
            else:
                pcm = self.source.next(time.monotonic())
            frame = AudioFrame(format="s16", layout="mono", samples=CHUNK)
            frame.planes[0].update(pcm.astype("<i2").tobytes())
            frame.sample_rate = RATE
            frame.time_base = fractions.Fraction(1, RATE)
            frame.pts = self.pts
            self.pts += CHUNK
            return frame

    mouth = Mouth()
    ear = OnsetDetector()
    sender = RTCPeerConnection(rtc_configuration([]))
    receiver = RTCPeerConnection(rtc_configuration([]))
    got_track = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def drain(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not continuous and isinstance(frame, AudioFrame):
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    ear.add(pcm, time.monotonic())

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        tasks.append(asyncio.create_task(drain(track)))
        got_track.set()

    try:
        sender.addTrack(mouth)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(got_track.wait(), TIMEOUT)
        ready()
        if continuous:
            await asyncio.sleep(seconds)
        else:
            await asyncio.sleep((bursts + 2) * PERIOD_S)  # a silent period first, then bursts
    finally:
        mouth.stop()
        await sender.close()
        await receiver.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stats.sent_onsets, stats.heard_onsets = mouth.source.onsets, ear.onsets
    return stats


def pair_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.audio pair")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--bursts", type=int, default=0, help="measure latency instead of load")
    args = p.parse_args(argv)
    stats = asyncio.run(_pair(args.seconds, args.bursts, lambda: print("ready", flush=True)))
    if args.bursts:
        print(json.dumps(_ms(match_onsets(stats.sent_onsets, stats.heard_onsets))), flush=True)
    return 0


class PairProcess:
    """The baseline pair in its own process, so its CPU and RSS are its own."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.audio", "pair", *args],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    async def line(self, timeout: float = TIMEOUT) -> str:
        assert self.proc.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not text:
            raise RuntimeError("the baseline pair process ended early")
        return text.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def pair_load(steady_s: float) -> dict[str, Any]:
    pair = PairProcess("--seconds", str(SETTLE_S + steady_s + 5))
    try:
        if await pair.line() != "ready":
            raise RuntimeError("the baseline pair did not start")
        await asyncio.sleep(SETTLE_S)
        c0, t0 = cpu_seconds(pair.proc.pid), time.monotonic()
        await asyncio.sleep(steady_s)
        c1, t1 = cpu_seconds(pair.proc.pid), time.monotonic()
        return {"cores": round((c1 - c0) / (t1 - t0), 3), "rss_mb": round(rss_mb(pair.proc.pid), 1)}
    finally:
        pair.stop()


async def pair_latency(bursts: int) -> dict[str, Any]:
    pair = PairProcess("--bursts", str(bursts))
    try:
        await pair.line()  # ready
        result: dict[str, Any] = json.loads(await pair.line((bursts + 2) * PERIOD_S + TIMEOUT))
        return result
    finally:
        pair.stop()


# --- the whole run -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _daemon() -> AsyncIterator[tuple[AsyncChimed, int, int]]:
    embedded = EmbeddedProcess()
    daemon = DaemonProcess(args=["--control-plane", embedded.url])
    try:
        daemon.start()
        assert daemon.proc is not None
        async with connect_aio(daemon.target) as chimed:
            yield chimed, daemon.proc.pid, embedded.proc.pid
    finally:
        daemon.stop()
        embedded.stop()


async def run(
    bursts: int = 15, steady_s: float = 15.0, counts: list[int] | None = None
) -> dict[str, Any]:
    counts = counts or [1, 10, 25]
    out: dict[str, Any] = {}
    async with _daemon() as (chimed, pid, service_pid):
        out["latency"] = await latency(chimed, bursts)
        out["density"] = await density(chimed, pid, service_pid, counts, steady_s)
    out["baseline_pair"] = {
        "mouth_to_ear": await pair_latency(bursts),
        **await pair_load(steady_s),
        "note": "two RTCPeerConnections in one process, loopback host candidates, no relay; "
        "one Opus stream (aiortc's encoder, stereo 96 kb/s) decoded and dropped",
    }
    lat, dens = out["latency"], out["density"]
    top = dens[str(counts[-1])]
    out["targets"] = TARGETS
    out["meets_targets"] = {
        "mouth_to_ear_p50": lat["mouth_to_ear"].get("p50_ms", math.inf)
        <= TARGETS["mouth_to_ear_p50_ms"],
        "active_speaker_p50": lat["active_speaker_detection"].get("p50_ms", math.inf)
        <= TARGETS["active_speaker_p50_ms"],
        f"cores_at_{counts[-1]}_sessions": top["cores"] <= TARGETS["cores_at_25_sessions"],
        "rss_per_session": dens.get("rss_mb_per_session_beyond_first", 0.0)
        <= TARGETS["rss_mb_per_session_beyond_first"],
    }
    out["note"] = (
        "latency: A's chunk write (StreamInput) to B's chunk arrival (StreamOutput), 20 ms chunks; "
        "density: the daemon alone (the embedded service ran apart: service_cores)"
    )
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["pair"]:
        return pair_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.audio")
    p.add_argument("--bursts", type=int, default=15)
    p.add_argument("--steady-seconds", type=float, default=15.0)
    p.add_argument("--sessions", default="1,10,25")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.sessions.split(",")]
    print(json.dumps(asyncio.run(run(args.bursts, args.steady_seconds, counts)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
