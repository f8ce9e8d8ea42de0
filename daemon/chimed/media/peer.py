"""The one aiortc peer connection of a Chime attendee: the official web client's m-section
layout: audio (sendrecv), the camera slot (inactive until a video input is set, then
sendrecv), then one recvonly video transceiver per remote stream received, appended in
ascending stream-id order and made inactive (never reused) when the stream is dropped. All
bundled on one transport.

The client always offers (the Chime media server never does); ICE servers are exactly the
TURN servers JOIN_ACK names, or none at all, never aiortc's public STUN default. The audio
input and output are seams for the devices layer: set_audio_input(track) swaps what is sent,
set_audio_output(consumer) swaps what consumes the received mix.

Work per session is kept small, since one daemon holds many: the gate track hands the sender
Opus packets (no encoding of silence; see tracks.py), sent by chimed's own RTP loop
(rtp_send.py); received RTP is handled in the datagram callback (rtp_receive.py); and while
no consumer is set (set_audio_output(None)) received RTP is dropped before decoding:
statistics, RTCP and NACKs go on, but no Opus decoding and no thread hand-off per packet for
a mix nobody hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiortc import (
    RTCBundlePolicy,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.config import LOOPBACK_MEDIA, MediaConfig
from chimed.media import decode_gate, shortcuts
from chimed.media.decode_gate import VideoDecodeGate
from chimed.media.ice import rtc_configuration
from chimed.media.opus import first_audio_codec
from chimed.media.tracks import GateTrack, SilenceTrack

log = logging.getLogger(__name__)

AudioConsumer = Callable[[MediaStreamTrack], Awaitable[None]]
StateHandler = Callable[[str], None]
VideoTrackHandler = Callable[[int, MediaStreamTrack], None]  # (stream id, received track)
VideoSizeHandler = Callable[[int, int, int], None]  # (stream id, width, height)

# Closing deletes the TURN allocation, and a TURN server that is gone is retried for up to
# ~30 s (RFC 8489 timers). The close goes on in the background past this bound, so a stop
# never waits on a dead relay; drain_closing() collects what is left at shutdown.
CLOSE_WAIT_S = 2.0
_closing: set[asyncio.Task[None]] = set()


async def drain_closing(timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait (bounded) for peer connections still closing in the background."""
    if _closing:
        await asyncio.wait(set(_closing), timeout=timeout)


def codecs_preferring(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs, `codec` (VP8, H264) first: what the camera is offered with."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    first = [c for c in codecs if c.mimeType.lower() == f"video/{codec.lower()}"]
    return first + [c for c in codecs if c not in first]


async def drain(track: MediaStreamTrack) -> None:
    """The default audio output: read and drop the received audio until the track ends."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class ChimePeer:
    def __init__(
        self,
        turn_uris: Sequence[str] = (),
        username: str | None = None,
        password: str | None = None,
        *,
        on_state: StateHandler | None = None,
        audio_input: MediaStreamTrack | None = None,
        audio_output: AudioConsumer | None = None,
        muted: bool = False,
        media: MediaConfig = LOOPBACK_MEDIA,
        video_input: MediaStreamTrack | None = None,
        on_video_track: VideoTrackHandler | None = None,
        on_video_size: VideoSizeHandler | None = None,
    ) -> None:
        self.media = media
        configuration = rtc_configuration(turn_uris, username, password)
        # One transport for every m-section (the media server bundles them all): a video
        # section added later gathers nothing and allocates no TURN relay of its own.
        configuration.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
        self._pc = RTCPeerConnection(configuration)
        self._on_state = on_state
        self._silence = SilenceTrack()
        source = audio_input if audio_input is not None else self._silence
        self._gate = GateTrack(source, media.opus_complexity)
        self._gate.muted = muted
        self._transceiver = self._pc.addTransceiver(self._gate, direction="sendrecv")
        self._camera = self._pc.addTransceiver("video", direction="inactive")
        self._camera.setCodecPreferences(codecs_preferring(media.video_codec))
        self.on_video_track = on_video_track
        self.on_video_size = on_video_size
        self._remote_video: dict[int, tuple[RTCRtpTransceiver, VideoDecodeGate | None]] = {}
        self.set_video_input(video_input)
        # chimed's own paths for this audio stream (each off if aiortc is not the expected
        # one): this peer's ICE settings, the send loop, the decode gate, received RTP handled
        # inline and shallow receive buffering where the network allows it.
        paths = shortcuts.install_peer(self._pc, self._transceiver, self._gate, media)
        self._send_loop = paths.send_loop
        self.own_rtp = paths.send_loop is not None
        self._decode_gate = paths.decode_gate
        self.inline_receive = paths.inline_receive
        self.shallow_jitter = paths.shallow_jitter
        self._output: AudioConsumer = drain
        self._set_output(audio_output)
        self._remote: MediaStreamTrack | None = None
        self._output_task: asyncio.Task[None] | None = None
        self._closed = False
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    @property
    def connection(self) -> RTCPeerConnection:
        """The aiortc peer connection (for inspection: chimed.media.shortcuts.applied)."""
        return self._pc

    @property
    def encoder_complexity(self) -> int:
        """The libopus complexity its speech is encoded at."""
        return self._gate.complexity

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    async def create_offer(self) -> str:
        """createOffer + setLocalDescription (which gathers every candidate): the offer SDP."""
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return str(self._pc.localDescription.sdp)

    @property
    def decoding(self) -> bool:
        """Whether received audio is decoded (false while no consumer is set)."""
        return self._decode_gate is None or self._decode_gate.decoding

    @property
    def undecoded(self) -> int:
        """Received packets dropped undecoded so far (while no consumer was set)."""
        return self._decode_gate.dropped if self._decode_gate is not None else 0

    async def apply_answer(self, sdp: str) -> None:
        # Before the sender starts: it must see packets or frames from its first recv() on.
        self._gate.opus = first_audio_codec(sdp) == "opus"
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def set_audio_input(self, track: MediaStreamTrack | None) -> None:
        """Send this track from now on (None: silence). The caller keeps owning the track."""
        self._gate.source = track if track is not None else self._silence

    def set_audio_output(self, consumer: AudioConsumer | None) -> None:
        """Hand the received audio to this consumer from now on (None: drop it undecoded)."""
        self._set_output(consumer)
        if self._remote is not None:
            self._start_output()

    def _set_output(self, consumer: AudioConsumer | None) -> None:
        self._output = consumer or drain
        if self._decode_gate is not None:
            self._decode_gate.decoding = consumer is not None

    # --- video ----------------------------------------------------------------------------
    @property
    def sends_video(self) -> bool:
        return self._camera.direction != "inactive"

    def set_video_input(self, track: MediaStreamTrack | None) -> None:
        """Send this video track (None: the camera slot goes inactive). Takes effect for the
        service at the next offer (renegotiate); the sender switches tracks at once."""
        self._camera.sender.replaceTrack(track)
        self._camera.direction = "sendrecv" if track is not None else "inactive"

    @property
    def remote_streams(self) -> list[int]:
        """The remote stream ids received (or to be, at the next offer), in m-section order."""
        return list(self._remote_video)

    def set_remote_streams(self, stream_ids: Sequence[int]) -> bool:
        """Receive exactly these remote streams from the next offer on; False if that is
        already so. New ones get a recvonly transceiver each (ascending ids), dropped ones go
        inactive for good."""
        wanted = sorted(set(stream_ids))
        if wanted == list(self._remote_video):
            return False
        for stream_id in list(self._remote_video):
            if stream_id not in wanted:
                transceiver, gate = self._remote_video.pop(stream_id)
                transceiver.direction = "inactive"
                if gate is not None:
                    gate.set_decoding(False)
        for stream_id in wanted:
            if stream_id not in self._remote_video:
                self._remote_video[stream_id] = self._add_receiver(stream_id)
        return True

    def _add_receiver(self, stream_id: int) -> tuple[RTCRtpTransceiver, VideoDecodeGate | None]:
        transceiver = self._pc.addTransceiver("video", direction="recvonly")

        def on_size(width: int, height: int) -> None:
            if self.on_video_size is not None and stream_id in self._remote_video:
                self.on_video_size(stream_id, width, height)

        # Before the receiver starts: nothing is decoded until a view asks (set_decoding).
        gate = shortcuts.video_gate(transceiver.receiver, on_size)
        return transceiver, gate

    def receive_stream_ids(self) -> list[int]:
        """SUBSCRIBE's receive_stream_ids: per video m-section in order, its stream id when it
        is a recvonly section, else 0 (the camera slot, dropped sections)."""
        by_transceiver = {id(t): s for s, (t, _) in self._remote_video.items()}
        return [
            by_transceiver.get(id(t), 0) for t in self._pc.getTransceivers() if t.kind == "video"
        ]

    def set_video_decoding(self, stream_id: int, decoding: bool) -> None:
        """Decode a received stream (a view is bound) or not; turning it on asks the sender
        for a keyframe, so the first picture comes at once."""
        transceiver, gate = self._remote_video.get(stream_id, (None, None))
        if transceiver is None or gate is None:
            return
        if decoding and not gate.decoding:
            gate.set_decoding(True)
            decode_gate.request_keyframe(transceiver.receiver)
        elif not decoding:
            gate.set_decoding(False)

    def set_muted(self, muted: bool) -> None:
        self._gate.muted = muted

    async def close(self) -> None:
        """Close the connection and release the output task and our own tracks; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._stop_output()
        closing = asyncio.create_task(self._pc.close(), name="chimed-peer-close")
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)
        done, _ = await asyncio.wait([closing], timeout=CLOSE_WAIT_S)
        if not done:
            log.info("peer connection still closing (TURN relay not answering); going on")
        self._gate.stop()
        self._silence.stop()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if self._closed:
            return
        if track.kind == "video":
            for stream_id, (transceiver, _) in self._remote_video.items():
                if transceiver.receiver.track is track and self.on_video_track is not None:
                    self.on_video_track(stream_id, track)
            return
        self._remote = track
        self._start_output()

    def _start_output(self) -> None:
        assert self._remote is not None
        previous = self._output_task
        if previous is not None:
            previous.cancel()
        self._output_task = asyncio.create_task(
            self._run_output(self._output, self._remote, previous), name="chimed-audio-output"
        )

    async def _run_output(
        self, consumer: AudioConsumer, track: MediaStreamTrack, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # one reader of the track at a time
        try:
            await consumer(track)
        except MediaStreamError:
            pass
        except Exception:
            log.exception("audio output consumer failed")

    async def _stop_output(self) -> None:
        task, self._output_task = self._output_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    def _on_connection_state(self) -> None:
        if self._on_state is not None and not self._closed:
            self._on_state(self.connection_state)
