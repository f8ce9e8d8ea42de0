"""The one aiortc peer connection of a Chime attendee: one sendrecv audio transceiver.

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
import queue
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from chimed.media import fastpath, jitter, rtp_receive, rtp_send
from chimed.media.ice import rtc_configuration
from chimed.media.opus import first_audio_codec
from chimed.media.tracks import GateTrack, SilenceTrack

log = logging.getLogger(__name__)

AudioConsumer = Callable[[MediaStreamTrack], Awaitable[None]]
StateHandler = Callable[[str], None]

# Closing deletes the TURN allocation, and a TURN server that is gone is retried for up to
# ~30 s (RFC 8489 timers). The close goes on in the background past this bound, so a stop
# never waits on a dead relay; drain_closing() collects what is left at shutdown.
CLOSE_WAIT_S = 2.0
_closing: set[asyncio.Task[None]] = set()


async def drain_closing(timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait (bounded) for peer connections still closing in the background."""
    if _closing:
        await asyncio.wait(set(_closing), timeout=timeout)


async def drain(track: MediaStreamTrack) -> None:
    """The default audio output: read and drop the received audio until the track ends."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class DecodeGate:
    """Stands in for an aiortc receiver's decoder queue: while `decoding` is off, encoded
    frames are dropped instead of queued for the decoder thread; the end-of-stream marker
    (None) always passes, so the track still ends."""

    def __init__(self, inner: queue.Queue[Any]) -> None:
        self.inner = inner
        self.decoding = True
        self.dropped = 0

    def put(self, item: Any) -> None:
        if item is None or self.decoding:
            self.inner.put(item)
        else:
            self.dropped += 1

    def get(self) -> Any:
        return self.inner.get()


# aiortc (1.16) keeps the queue in a private attribute; without it decoding simply stays on.
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


def _gate_decoder(receiver: Any) -> DecodeGate | None:
    inner = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(inner, queue.Queue):
        return None
    gate = DecodeGate(inner)
    setattr(receiver, _DECODER_QUEUE, gate)
    return gate


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
        jitter_depth: int | None = None,
    ) -> None:
        fastpath.install()
        self._pc = RTCPeerConnection(rtc_configuration(turn_uris, username, password))
        self._on_state = on_state
        self._silence = SilenceTrack()
        self._gate = GateTrack(audio_input if audio_input is not None else self._silence)
        self._gate.muted = muted
        self._transceiver = self._pc.addTransceiver(self._gate, direction="sendrecv")
        # chimed's own RTP paths for this audio stream (each off if aiortc is not the expected
        # one): the send loop of rtp_send.py, and received RTP handled inline (rtp_receive.py)
        send_loop = rtp_send.install(self._transceiver.sender, self._gate)
        self._send_loop = send_loop
        self.own_rtp = send_loop is not None
        receiver = self._transceiver.receiver
        # Installed before the receiver starts, so its decoder thread reads through it.
        self._decode_gate = _gate_decoder(receiver)
        self.inline_receive = rtp_receive.install(
            receiver.transport,
            receiver,
            self._decode_gate,
            on_rtp=send_loop.nudge if send_loop is not None else None,
        )
        # Shallow receive buffering where the network allows it (see chimed.media.jitter).
        depth = jitter_depth if jitter_depth is not None else jitter.default_depth()
        jitter.install(self._transceiver.receiver, depth)
        self._output: AudioConsumer = drain
        self._set_output(audio_output)
        self._remote: MediaStreamTrack | None = None
        self._output_task: asyncio.Task[None] | None = None
        self._closed = False
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

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
        if track.kind != "audio" or self._closed:
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
