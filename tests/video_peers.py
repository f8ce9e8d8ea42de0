"""Raw aiortc attendees of an embedded meeting, for the media server's video: chimed's signaling
client and frame builders, a plain RTCPeerConnection laid out as the JS client lays out its
(audio, camera, one recvonly section per remote video), and SUBSCRIBEs as the JS client fills
them (CHIME_VIDEO_AND_RECONNECT.md 2.1-2.3). Test helpers, not production code."""

from __future__ import annotations

import asyncio
import fractions
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import VideoFrame
from chime.signaling import signaling_pb2 as pb
from chimed.embedded.meetings import Attendee, Meeting
from chimed.embedded.service import EmbeddedChime
from chimed.media.ice import rtc_configuration
from chimed.signaling import messages
from chimed.signaling.client import SignalingClient

Frame = pb.SdkSignalFrame
TIMEOUT = 15.0
VIDEO_LABEL = "AmazonChimeExpressVideo"


class PatternTrack(MediaStreamTrack):
    """Frames of one size at 15 fps: a moving gradient (something for an encoder to do)."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += 6000  # 90 kHz / 15 fps
            await asyncio.sleep(max(0.0, self._start + self._pts / 90000 - time.monotonic()))
        shade = (np.arange(self.width, dtype=np.uint16) + self._pts // 600) % 256
        rgb = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        rgb[:, :, 0] = shade.astype(np.uint8)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


@dataclass
class Received:
    """A recvonly section's remote track, and the frames decoded from it."""

    stream_id: int
    transceiver: RTCRtpTransceiver
    track: MediaStreamTrack | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def frames(self, count: int, timeout: float = TIMEOUT) -> list[tuple[int, int]]:
        """Wait until `count` frames were decoded (in total); their sizes."""
        deadline = time.monotonic() + timeout
        while len(self.sizes) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"stream {self.stream_id}: {len(self.sizes)} frames")
            await asyncio.sleep(0.02)
        return self.sizes[:count]


class VideoPeer:
    """One attendee session: a signaling socket and a peer connection."""

    def __init__(self, attendee_id: str, signaling_url: str, join_token: str) -> None:
        self.attendee_id = attendee_id
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()
        self.closed: tuple[int | None, str] | None = None
        self.signaling = SignalingClient(signaling_url, join_token, self._on_frame, self._on_close)
        configuration = rtc_configuration()
        # As the JS client bundles; with aiortc's balanced policy a second video section of
        # a first offer keeps a transport of its own that the BUNDLE answer leaves unused.
        configuration.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        self.pc = RTCPeerConnection(configuration)
        self.audio = self.pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        self.camera = self.pc.addTransceiver("video", direction="inactive")
        self.sending: PatternTrack | None = None
        self.received: dict[int, Received] = {}
        self.pc.on("track", self._on_track)

    # --- signaling -------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        self._arrived.set()

    def _on_close(self, code: int | None, reason: str) -> None:
        self.closed = (code, reason)
        self._arrived.set()

    async def expect(
        self,
        kind: int,
        match: Callable[[Frame], bool] = lambda _f: True,
        timeout: float = TIMEOUT,
        drop_earlier: bool = False,
    ) -> Frame:
        """The first frame of `kind` that matches, taken from the ones received (with
        `drop_earlier`, the frames of `kind` before it are dropped too)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if frame.type == kind and match(frame):
                    rest = self.frames[i + 1 :]
                    before = self.frames[:i]
                    if drop_earlier:
                        before = [f for f in before if f.type != kind]
                    self.frames = before + rest
                    return frame
            if self.closed is not None:
                raise AssertionError(f"signaling closed {self.closed} awaiting {kind}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise AssertionError(f"no frame of type {kind} matching") from None

    async def index(self, match: Callable[[pb.SdkIndexFrame], bool] = lambda _i: True) -> Any:
        """The first INDEX received that satisfies `match`; the INDEX frames before it are
        dropped (each replaces the one before), those after it stay to be read."""
        frame = await self.expect(Frame.INDEX, lambda f: match(f.index), drop_earlier=True)
        return frame.index

    async def join(self) -> Any:
        await self.signaling.connect()
        await self.signaling.send(messages.join(random.getrandbits(32)))
        await self.expect(Frame.JOIN_ACK)
        return await self.index()

    async def send(self, frame: Frame) -> None:
        await self.signaling.send(frame)

    # --- media -----------------------------------------------------------------------------
    def start_camera(self, width: int = 320, height: int = 240, codec: str = "VP8") -> None:
        """Send a pattern on the camera section (from the next SUBSCRIBE), in `codec` only."""
        self.sending = PatternTrack(width, height)
        self.camera.sender.replaceTrack(self.sending)
        self.camera.direction = "sendrecv"
        # The preferred codec first (what aiortc then sends), the others still offered.
        caps = RTCRtpSender.getCapabilities("video").codecs
        caps.sort(key=lambda c: c.mimeType.lower() != f"video/{codec.lower()}")
        self.camera.setCodecPreferences(caps)

    def stop_camera(self) -> None:
        self.camera.direction = "inactive"

    def receive(self, stream_id: int) -> Received:
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        received = Received(stream_id, transceiver)
        self.received[stream_id] = received
        return received

    def _on_track(self, track: MediaStreamTrack) -> None:
        for received in self.received.values():
            if received.transceiver.receiver.track is track and received.reader is None:
                received.track = track
                received.reader = asyncio.ensure_future(self._read(received, track))

    async def _read(self, received: Received, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                received.sizes.append((frame.width, frame.height))

    async def subscribe(self, status: int = 0) -> Any:
        """Offer, SUBSCRIBE as the JS client does, apply the answer; the SUBSCRIBE_ACK frame."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sending = self.camera.direction == "sendrecv"
        sub = messages.subscribe(self.pc.localDescription.sdp, "", False, self.attendee_id)
        if sending:
            sub.sub.duplex = pb.DUPLEX
            sub.sub.send_streams.add(
                stream_id=2,
                group_id=2,
                framerate=15,
                max_bitrate_kbps=1500,
                track_label=VIDEO_LABEL,
                attendee_id=self.attendee_id,
                media_type=pb.VIDEO,
            )
        del sub.sub.receive_stream_ids[:]
        sub.sub.receive_stream_ids.append(0)  # the camera section
        for transceiver in self.pc.getTransceivers()[2:]:
            ids = [r.stream_id for r in self.received.values() if r.transceiver is transceiver]
            sub.sub.receive_stream_ids.append(ids[0] if ids else 0)
        await self.send(sub)
        ack = await self.expect(Frame.SUBSCRIBE_ACK)
        assert ack.error.status == status, ack.error
        await self.pc.setRemoteDescription(RTCSessionDescription(ack.suback.sdp_answer, "answer"))
        return ack

    async def close(self) -> None:
        for received in self.received.values():
            if received.reader is not None:
                received.reader.cancel()
        if self.sending is not None:
            self.sending.stop()
        await self.signaling.close()
        await self.pc.close()


def signaling_url(service: EmbeddedChime, meeting: Meeting) -> str:
    placement = meeting.to_json(*service.urls())["MediaPlacement"]
    assert isinstance(placement, dict)
    return str(placement["SignalingUrl"])


def peer(
    service: EmbeddedChime, meeting: Meeting, attendee: Attendee, token: str = ""
) -> VideoPeer:
    """A peer for `attendee` (`token`: a join token of its own, e.g. for `#content`)."""
    attendee_id = attendee.attendee_id + ("#content" if token.endswith("#content") else "")
    return VideoPeer(attendee_id, signaling_url(service, meeting), token or attendee.join_token)
