"""The baseline: a bare aiortc VP8 sender and a bare aiortc receiver, each a process of its own
(so /proc gives each one's CPU and memory), joined over loopback with no relay.

  python -m bench.video_pair send [--marked]
      sends the test pattern (640x480, 15 fps; with --marked, frame numbers stamped in);
      prints its offer as a JSON line, reads the answer as one, prints "ready" once connected
  python -m bench.video_pair receive --mode read|ignore|marks
      reads the offer, prints the answer; on the track: `read` takes every frame (decoded by
      aiortc) and drops it, `ignore` never reads it (aiortc decodes and queues regardless),
      `marks` reads the frame numbers back; prints "ready" at the first frame (on the track
      for `ignore`)
Both stop at "stop" (or the end of stdin) and print a last JSON line: the sender its send times
({"sent": {n: t}}), the receiver its first arrivals ({"arrived": {n: t}, "unreadable": k}),
on the monotonic clock, which all processes of the machine share.

video_pair() runs the two from the bench and relays the SDP between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from chimed.devices.video_inputs import PatternSource
from chimed.media.ice import pin_host_addresses, rtc_configuration

from bench.video_marks import Arrivals, MarkedPattern, read_frame

WIDTH, HEIGHT, FPS = 640, 480, 15.0
LABEL = "baseline@example.com"
TIMEOUT = 30.0


def _line(data: Any) -> None:
    print(data if isinstance(data, str) else json.dumps(data), flush=True)


async def _stdin_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def _until_stop() -> None:
    while (await _stdin_line()) not in ("stop", ""):
        pass


def _prefer_vp8(pc: RTCPeerConnection) -> None:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    for transceiver in pc.getTransceivers():
        transceiver.setCodecPreferences(
            [c for c in codecs if c.mimeType in ("video/VP8", "video/rtx")]
        )


async def send(marked: bool) -> None:
    pin_host_addresses(["127.0.0.1"])
    track: PatternSource = (
        MarkedPattern(WIDTH, HEIGHT, FPS, LABEL)
        if marked
        else PatternSource(WIDTH, HEIGHT, FPS, LABEL)
    )
    pc = RTCPeerConnection(rtc_configuration([]))
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    try:
        pc.addTrack(track)
        _prefer_vp8(pc)
        await pc.setLocalDescription(await pc.createOffer())
        _line({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
        answer = json.loads(await _stdin_line())
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(connected.wait(), TIMEOUT)
        _line("ready")
        await _until_stop()
    finally:
        track.stop()
        await pc.close()
    _line({"sent": track.sent if isinstance(track, MarkedPattern) else {}})


async def receive(mode: str) -> None:
    pin_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(rtc_configuration([]))
    arrivals = Arrivals()
    flowing = asyncio.Event()  # a frame came (for `ignore`: the connection is up)
    tasks: list[asyncio.Task[None]] = []

    async def read(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if mode == "marks":
                    arrivals.add(read_frame(frame), time.monotonic())  # type: ignore[arg-type]
                flowing.set()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and mode != "ignore":
            tasks.append(asyncio.create_task(read(track)))

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and mode == "ignore":
            flowing.set()

    try:
        offer = json.loads(await _stdin_line())
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        await pc.setLocalDescription(await pc.createAnswer())
        _line({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
        await asyncio.wait_for(flowing.wait(), TIMEOUT)
        _line("ready")
        await _until_stop()
    finally:
        await pc.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    _line({"arrived": arrivals.first, "unreadable": arrivals.unreadable})


class _Child:
    """One side of the pair: a `python -m bench.video_pair` process talking JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.video_pair",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def read(self, timeout: float = TIMEOUT) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a baseline video process ended early")
        return line.decode().strip()

    async def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def finish(self) -> dict[str, Any]:
        """Ask it to stop; its last line (the JSON results)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.write("stop")
        result: dict[str, Any] = {}
        with contextlib.suppress(RuntimeError, TimeoutError, json.JSONDecodeError):
            while True:
                line = await self.read(15)
                if line.startswith("{"):
                    result = json.loads(line)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 15)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        return result


class VideoPair:
    """Both processes of a pair: `sender_pid`, `receiver_pid`; once finished, `sent` and
    `arrived` (marks mode)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent: dict[int, float] = {}
        self.arrived: dict[int, float] = {}
        self.unreadable = 0
        self._sender: _Child | None = None
        self._receiver: _Child | None = None

    @property
    def sender_pid(self) -> int:
        assert self._sender is not None
        return self._sender.pid

    @property
    def receiver_pid(self) -> int:
        assert self._receiver is not None
        return self._receiver.pid

    async def start(self) -> None:
        marked = ["--marked"] if self.mode == "marks" else []
        self._sender = await _Child.start("send", *marked)
        self._receiver = await _Child.start("receive", "--mode", self.mode)
        await self._receiver.write(await self._sender.read())  # the offer
        await self._sender.write(await self._receiver.read())  # the answer
        if await self._sender.read() != "ready" or await self._receiver.read() != "ready":
            raise RuntimeError("the baseline video pair did not connect")

    async def finish(self) -> None:
        if self._sender is not None:
            sent = (await self._sender.finish()).get("sent", {})
            self.sent = {int(n): t for n, t in sent.items()}
        if self._receiver is not None:
            result = await self._receiver.finish()
            self.arrived = {int(n): t for n, t in result.get("arrived", {}).items()}
            self.unreadable = result.get("unreadable", 0)


@contextlib.asynccontextmanager
async def video_pair(mode: str = "read") -> AsyncIterator[VideoPair]:
    """A pair with video flowing (the receiver said "ready"); both stopped at the end."""
    pair = VideoPair(mode)
    try:
        await pair.start()
        yield pair
    finally:
        await pair.finish()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.video_pair")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("send")
    s.add_argument("--marked", action="store_true")
    r = sub.add_parser("receive")
    r.add_argument("--mode", choices=("read", "ignore", "marks"), default="read")
    args = p.parse_args(argv)
    if args.role == "send":
        asyncio.run(send(args.marked))
    else:
        asyncio.run(receive(args.mode))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
