"""The embedded media server: one aiortc peer connection per attendee session.

The server never offers; it answers each SUBSCRIBE's offer (a re-offer renegotiates the same
peer connection). Audio is sendrecv: the attendee's track is consumed (its first frame makes
the attendee present) and pushed to the meeting's mixer; the attendee receives one track,
`ListenerTrack`, that pulls its next 20 ms from the mixer. Video is forwarded, never decoded
(chimed.embedded.video_router): the camera section is answered `recvonly` while the session is
an admitted video sender, each `recvonly` section of the offer `sendonly` with the stream the
SUBSCRIBE asks for on it, any other video section inactive.

The mixer is the seam for real mixing: `Mixer.push` takes a speaker's decoded frames,
`Mixer.pull` gives a listener's next chunk of PCM (chimed.embedded.mixer.AudioMixer). Every
`metadata_interval` the meeting's speaker levels and receivers' packet loss become
AUDIO_METADATA attendee states, handed to `on_audio_metadata`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from chime.signaling import signaling_pb2 as pb

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.config import LOOPBACK_MEDIA, MediaConfig
from chimed.embedded.audio_levels import MetadataTracker
from chimed.embedded.mixer import AudioMixer
from chimed.embedded.opus_out import OpusStream, SharedOpus
from chimed.embedded.sdp_sections import receive_capabilities, sections, video_layout
from chimed.embedded.video_router import VideoRouter, VideoTrack
from chimed.media import shortcuts
from chimed.media.ice import rtc_configuration
from chimed.media.opus import OPUS_SILENCE, first_audio_codec
from chimed.media.opus import packet as opus_packet

log = logging.getLogger(__name__)

METADATA_INTERVAL = 0.2  # the real service sends AUDIO_METADATA every 100-200 ms

# (meeting id, attendee states): one AUDIO_METADATA frame's content for the whole meeting.
MetadataSink = Callable[[str, list[pb.SdkAudioAttendeeState]], None]


class Mixer(Protocol):
    """One meeting's audio: speakers' frames in, each listener's PCM out (keys: stream ids)."""

    def push(self, speaker: int, frame: AudioFrame) -> None: ...

    def pull(self, listener: int, samples: int) -> bytes | None:
        """`samples` of s16 mono 48 kHz PCM for this listener, or None for silence."""
        ...

    def remove(self, stream_id: int) -> None: ...

    def set_muted(self, stream_id: int, muted: bool) -> None: ...

    def take_levels(self) -> dict[int, float]:
        """dBFS per speaker over what was pushed since the last call (-inf when muted)."""
        ...

    def is_shared(self, pcm: bytes) -> bool:
        """Whether `pcm` (from `pull`) is a mix every non-speaking listener gets, as is."""
        ...


class ListenerTrack(MediaStreamTrack):
    """What one attendee hears: every 20 ms, its chunk from the meeting mixer."""

    kind = "audio"

    def __init__(self, mixer: Mixer, listener: int, complexity: int) -> None:
        super().__init__()
        self._mixer = mixer
        self._complexity = complexity  # of its own encoder (libopus, 0-10)
        self._listener = listener
        self._start: float | None = None
        self._pts = 0
        # Set once Opus is negotiated: recv() then hands the sender packets (see opus_out).
        self.opus: SharedOpus | None = None
        self._own: OpusStream | None = None
        self._last = "silence"  # which encoder made the last packet (see OpusStream)

    async def recv(self) -> AudioFrame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        # Pace at real time: the sender encodes whatever recv() returns at once.
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            delay = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        pcm = self._mixer.pull(self._listener, FRAME_SAMPLES)
        if self.opus is not None:
            last = self._last
            if pcm is None:
                self._last = "silence"
                return opus_packet(OPUS_SILENCE, self._pts)
            if self._mixer.is_shared(pcm):
                self._last = "shared"
                return opus_packet(self.opus.encode(pcm, last == "silence"), self._pts)
            if self._own is None:
                self._own = OpusStream(self._complexity)
            self._last = "own"  # its encoder's state is stale unless it made the last packet
            return opus_packet(self._own.encode(pcm, last != "own"), self._pts)
        frame = AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm if pcm is not None else bytes(FRAME_SAMPLES * 2))
        frame.pts = self._pts
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


@dataclass(frozen=True)
class VideoPlan:
    """What a SUBSCRIBE asks of video: the stream the session may send (its admitted source's
    id, None when it sends none or was refused), and the streams it asks to receive."""

    send_stream_id: int | None = None
    receive_stream_ids: tuple[int, ...] = ()


@dataclass
class MediaAnswer:
    sdp: str
    audio_ssrcs: list[int]  # SSRCs the offer announced on its audio m-line (for `tracks`)
    video_tracks: list[VideoTrack] = field(default_factory=list)  # sections sent on
    receive_codecs: frozenset[int] = frozenset()  # video codecs the offer can decode


@dataclass
class _Peer:
    meeting_id: str
    stream_id: int
    pc: RTCPeerConnection
    on_first_audio: Callable[[], None]
    outgoing: ListenerTrack | None = None
    consumers: list[asyncio.Task[None]] = field(default_factory=list)
    heard: bool = False
    shallow: set[Any] = field(default_factory=set)  # audio transceivers given our buffer


def offer_audio_ssrcs(sdp: str) -> list[int]:
    """The SSRCs of the first audio m-line of an SDP."""
    ssrcs: list[int] = []
    in_audio = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_audio:
                break
            in_audio = line.startswith("m=audio")
        elif in_audio:
            m = re.match(r"a=ssrc:(\d+) ", line)
            if m and int(m.group(1)) not in ssrcs:
                ssrcs.append(int(m.group(1)))
    return ssrcs


class MediaServer:
    def __init__(
        self,
        configuration: Callable[[], RTCConfiguration] = rtc_configuration,
        mixer_factory: Callable[[str], Mixer] = lambda _meeting_id: AudioMixer(),
        metadata_interval: float = METADATA_INTERVAL,
        media: MediaConfig = LOOPBACK_MEDIA,
    ) -> None:
        self._configuration = configuration
        self.media = media  # its peers' ICE settings, jitter depth and Opus complexity
        self.mixer_factory = mixer_factory
        self.metadata_interval = metadata_interval
        self.on_audio_metadata: MetadataSink | None = None
        self._mixers: dict[str, Mixer] = {}
        self._trackers: dict[str, MetadataTracker] = {}
        self._shared_opus: dict[str, SharedOpus] = {}
        self._peers: dict[tuple[str, int], _Peer] = {}
        self._metadata_task: asyncio.Task[None] | None = None
        self.video = VideoRouter()

    def mixer(self, meeting_id: str) -> Mixer:
        mixer = self._mixers.get(meeting_id)
        if mixer is None:
            mixer = self._mixers[meeting_id] = self.mixer_factory(meeting_id)
        return mixer

    def peer_connections(self, meeting_id: str) -> list[RTCPeerConnection]:
        """The peer connections answering the meeting's attendee sessions."""
        return [peer.pc for (meeting, _), peer in self._peers.items() if meeting == meeting_id]

    def set_muted(self, meeting_id: str, stream_id: int, muted: bool) -> None:
        """Mute state for the mix (signaling knows it); a meeting without media ignores it."""
        mixer = self._mixers.get(meeting_id)
        if mixer is not None:
            mixer.set_muted(stream_id, muted)

    async def answer(
        self,
        meeting_id: str,
        stream_id: int,
        offer_sdp: str,
        on_first_audio: Callable[[], None],
        video: VideoPlan = VideoPlan(),
    ) -> MediaAnswer:
        """Answer an attendee's (re-)offer; `on_first_audio` runs once, on its first frame."""
        offer = sections(offer_sdp)
        layout = video_layout(offer, list(video.receive_stream_ids))
        key = (meeting_id, stream_id)
        peer = self._peers.get(key)
        if peer is None:
            configuration = self._configuration()
            # Chime's clients bundle every section; aiortc's balanced policy would give a
            # second video section of a first offer a transport of its own, left unused.
            configuration.bundlePolicy = RTCBundlePolicy.MAX_BUNDLE
            pc = RTCPeerConnection(configuration)
            peer = _Peer(meeting_id, stream_id, pc, on_first_audio)
            self._peers[key] = peer
            pc.on("track", lambda track: self._on_track(peer, track))
            if self._metadata_task is None:
                self._metadata_task = asyncio.get_running_loop().create_task(self._metadata_loop())
        try:
            await peer.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            self._attach(peer)
            self.video.attach(meeting_id, stream_id, peer.pc, layout, video.send_stream_id)
            shortcuts.answer_passive(peer.pc)
            shortcuts.configure_ice(peer.pc, self.media)  # transports made, not yet gathering
            await peer.pc.setLocalDescription(await peer.pc.createAnswer())
            answer_sdp = peer.pc.localDescription.sdp
            tracks = self.video.answered(meeting_id, stream_id, answer_sdp, layout)
            if peer.outgoing is not None:  # the sender takes packets only for Opus
                opus = first_audio_codec(peer.pc.localDescription.sdp) == "opus"
                shared = self._shared_opus.get(meeting_id)
                if shared is None:
                    shared = SharedOpus(self.media.opus_complexity)
                    self._shared_opus[meeting_id] = shared
                peer.outgoing.opus = shared if opus else None
        except Exception:
            await self.close_peer(meeting_id, stream_id)
            raise
        return MediaAnswer(
            answer_sdp, offer_audio_ssrcs(offer_sdp), tracks, receive_capabilities(offer)
        )

    def _attach(self, peer: _Peer) -> None:
        """Audio sendrecv with the listener track (first audio m-line); any other audio
        section inactive (video: VideoRouter.attach)."""
        audio_done = False
        for transceiver in peer.pc.getTransceivers():
            if transceiver.kind == "audio" and not audio_done:
                audio_done = True
                if peer.outgoing is None:
                    mixer = self.mixer(peer.meeting_id)
                    complexity = self.media.opus_complexity
                    peer.outgoing = ListenerTrack(mixer, peer.stream_id, complexity)
                if transceiver.sender.track is None:
                    transceiver.sender.replaceTrack(peer.outgoing)
                transceiver.direction = "sendrecv"
                if transceiver not in peer.shallow:  # before its first packet, once
                    peer.shallow.add(transceiver)
                    shortcuts.shallow_jitter(transceiver.receiver, self.media.jitter_depth)
            elif transceiver.kind == "audio":
                transceiver.direction = "inactive"

    def _on_track(self, peer: _Peer, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        task = asyncio.get_running_loop().create_task(self._consume(peer, track))
        peer.consumers.append(task)

    async def _consume(self, peer: _Peer, track: MediaStreamTrack) -> None:
        mixer = self.mixer(peer.meeting_id)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not peer.heard:
                peer.heard = True
                try:
                    peer.on_first_audio()
                except Exception:
                    log.exception("presence callback failed")
            if isinstance(frame, AudioFrame):
                mixer.push(peer.stream_id, frame)

    async def close_peer(self, meeting_id: str, stream_id: int) -> None:
        self.video.close(meeting_id, stream_id)
        peer = self._peers.pop((meeting_id, stream_id), None)
        if peer is None:
            return
        for task in peer.consumers:
            task.cancel()
        if peer.outgoing is not None:
            peer.outgoing.stop()
        await peer.pc.close()
        for task in peer.consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        mixer = self._mixers.get(meeting_id)
        if mixer is not None:
            mixer.remove(stream_id)
        tracker = self._trackers.get(meeting_id)
        if tracker is not None:
            tracker.forget(stream_id)
        if not any(m == meeting_id for m, _ in self._peers):
            self._mixers.pop(meeting_id, None)
            self._trackers.pop(meeting_id, None)
            self._shared_opus.pop(meeting_id, None)
        if not self._peers and self._metadata_task is not None:
            task, self._metadata_task = self._metadata_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- AUDIO_METADATA --------------------------------------------------------------------
    async def _metadata_loop(self) -> None:
        while True:
            await asyncio.sleep(self.metadata_interval)
            for meeting_id, mixer in list(self._mixers.items()):
                try:
                    await self._meeting_metadata(meeting_id, mixer)
                except Exception:
                    log.exception("audio metadata of meeting %s failed", meeting_id)

    async def _meeting_metadata(self, meeting_id: str, mixer: Mixer) -> None:
        tracker = self._trackers.setdefault(meeting_id, MetadataTracker())
        levels = mixer.take_levels()
        strengths: dict[int, int] = {}
        for stream_id in levels:  # only speakers are named, so only theirs are measured
            peer = self._peers.get((meeting_id, stream_id))
            counts = await _receiver_counts(peer.pc) if peer is not None else None
            if counts is not None:
                strengths[stream_id] = tracker.loss.strength(stream_id, *counts)
        states = tracker.window(levels, strengths)
        if states is not None and self.on_audio_metadata is not None:
            self.on_audio_metadata(meeting_id, states)

    async def close(self) -> None:
        for meeting_id, stream_id in list(self._peers):
            await self.close_peer(meeting_id, stream_id)


async def _receiver_counts(pc: RTCPeerConnection) -> tuple[int, int] | None:
    """(packets received, packets lost) so far on the peer's first audio receiver."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            report = await transceiver.receiver.getStats()
            for stats in report.values():
                if stats.type == "inbound-rtp":
                    return int(stats.packetsReceived), max(0, int(stats.packetsLost))
            return None
    return None
