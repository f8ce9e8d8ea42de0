"""Small audio tracks of the client path: silence to send when there is no input, and a gate
that sends silence in place of the input while the attendee is muted.

Once the peer knows Opus was negotiated (`GateTrack.opus`), the gate hands aiortc's sender
Opus packets instead of frames (the sender sends an `av.Packet` as it is): a fixed 3-byte
Opus silence frame for digital silence or while muted (no encoding at all, so a meeting of
silent bots costs no codec work), and its own mono speech encoder's output otherwise. aiortc's
encoder would encode every frame, silence included, stereo at 96 kb/s in a worker thread.
A source with `read_mono()` (chimed's inputs) is read as raw 20 ms chunks, None for silence:
no frame is built for silence and no sample is scanned to find it.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.media.opus import DEFAULT_COMPLEXITY, OPUS_SILENCE, new_encoder
from chimed.media.opus import packet as opus_packet

ZERO_CHUNK = bytes(2 * FRAME_SAMPLES)


def is_digital_silence(frame: AudioFrame) -> bool:
    """True when every sample of an s16 frame is zero (what virtual silence sends)."""
    if frame.format.name != "s16":
        return False
    count = frame.samples * len(frame.layout.channels)
    return not np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16, count=count).any()


class OpusMonoEncoder:
    """20 ms mono Opus packets from raw chunks, or from audio frames of any s16/flt layout and
    rate (resampled)."""

    def __init__(self, complexity: int = DEFAULT_COMPLEXITY) -> None:
        self._codec = new_encoder(complexity)
        self._resampler: Any = None
        self.restart()

    def restart(self) -> None:
        """Start over from silence: after OPUS_SILENCE packets the receiver's decoder has heard
        silence, but this encoder's state is still that of the last speech, and its next
        packets would decode ramped down for a frame or two (20-40 ms of onset lost)."""
        self._codec.reset()
        self._codec.encode(ZERO_CHUNK)  # the packet is not sent: the decoder had OPUS_SILENCE

    def encode_chunk(self, pcm: bytes) -> bytes:
        """The packet of one 20 ms mono s16 chunk at 48 kHz."""
        return self._codec.encode(pcm)

    def encode(self, frame: AudioFrame) -> list[bytes]:
        """Payloads of the packets this frame completes (none while the resampler buffers)."""
        if (frame.format.name, frame.layout.name, frame.sample_rate, frame.samples) == (
            "s16",
            "mono",
            SAMPLE_RATE,
            FRAME_SAMPLES,
        ):
            return [self._codec.encode(bytes(frame.planes[0])[: 2 * FRAME_SAMPLES])]
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=FRAME_SAMPLES
            )
        return [
            self._codec.encode(bytes(f.planes[0])[: 2 * f.samples])
            for f in self._resampler.resample(frame)
        ]


def silent_frame(samples: int, sample_rate: int, layout: str = "stereo") -> AudioFrame:
    frame = AudioFrame(format="s16", layout=layout, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = sample_rate
    frame.time_base = fractions.Fraction(1, sample_rate)
    return frame


class SilenceTrack(MediaStreamTrack):
    """Real-time paced silence at 48 kHz stereo, the Opus encoder's own rate (no resampling).

    An attendee that sends no audio is never present in a Chime meeting, so this is what is
    sent when the caller gives no input."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        await self.read_mono()
        frame = silent_frame(FRAME_SAMPLES, SAMPLE_RATE)
        frame.pts = self._pts
        return frame

    async def read_mono(self) -> bytes | None:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            await asyncio.sleep(self._start + self._pts / SAMPLE_RATE - time.monotonic())
        return None


class GateTrack(MediaStreamTrack):
    """Forwards a source track; while muted, sends silence of the same shape and timing.

    With `opus` set it returns 20 ms Opus packets instead (see the module docstring), stamped
    with its own continuous clock, so silence and speech interleave on one RTP timeline.
    Stopping the gate leaves the source alone: its owner decides when it ends."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, complexity: int = DEFAULT_COMPLEXITY) -> None:
        super().__init__()
        self.source = source
        self.complexity = complexity  # of its speech encoder (libopus, 0-10)
        self.muted = False
        self.opus = False
        self._encoder: OpusMonoEncoder | None = None
        self._pending: deque[bytes] = deque()
        self._silent = False  # the last packet queued was OPUS_SILENCE
        self._pts = 0

    async def recv(self) -> AudioFrame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self.opus:
            return await self._next_packet()
        frame = await self._next_frame()
        if not self.muted:
            return frame
        silent = silent_frame(frame.samples, frame.sample_rate, frame.layout.name)
        silent.pts = frame.pts
        if frame.time_base is not None:
            silent.time_base = frame.time_base
        return silent

    async def _next_frame(self) -> AudioFrame:
        frame = await self.source.recv()
        if not isinstance(frame, AudioFrame):
            raise MediaStreamError("the audio input gave a frame that is not audio")
        return frame

    async def _next_packet(self) -> av.Packet[Any]:
        payload, pts = await self.next_payload()
        return opus_packet(payload, pts)

    async def next_payload(self) -> tuple[bytes, int]:
        """The next 20 ms Opus payload and its timestamp (48 kHz, from 0): what recv() hands
        aiortc's sender as an av.Packet, for chimed's own RTP loop (media/rtp_send.py)."""
        if self.readyState != "live":
            raise MediaStreamError
        while not self._pending:
            # read_mono(): the next 20 ms as 960 s16 mono samples in bytes, None for silence
            read_mono = getattr(self.source, "read_mono", None)
            if read_mono is not None:
                self._pending.append(self._payload(await read_mono()))
                continue
            frame = await self._next_frame()
            standard = frame.sample_rate == SAMPLE_RATE and frame.samples == FRAME_SAMPLES
            if standard and (self.muted or is_digital_silence(frame)):
                self._pending.append(self._payload(None))
                continue
            encoder = self._speech_encoder()
            if self.muted:  # a frame of another shape: encode silence of the same timing
                muted = silent_frame(frame.samples, frame.sample_rate, frame.layout.name)
                muted.pts, muted.time_base = frame.pts, frame.time_base
                frame = muted
            self._pending.extend(p for p in encoder.encode(frame) if p)
        pts = self._pts
        self._pts += FRAME_SAMPLES
        return self._pending.popleft(), pts

    def due(self, now: float) -> float | None:
        """When the next payload is due if the source runs on the Pacer's clock (see
        devices/audio_inputs.py), for a sender that keeps the time itself and then calls
        take_payload(); None otherwise (next_payload() waits for it)."""
        due = getattr(self.source, "due", None)
        if due is None or self._pending or self.readyState != "live":
            return None
        when: float | None = due(now)
        return when

    def take_payload(self) -> tuple[bytes, int]:
        """next_payload() without the wait, once due() has come."""
        if self.readyState != "live":
            raise MediaStreamError
        source: Any = self.source  # due() said it has take_mono()
        payload = self._payload(source.take_mono())
        pts = self._pts
        self._pts += FRAME_SAMPLES
        return payload, pts

    def _payload(self, pcm: bytes | None) -> bytes:
        """The Opus payload of a 20 ms mono chunk (None: digital silence)."""
        if self.muted or pcm is None or pcm == ZERO_CHUNK:
            self._silent = True
            return OPUS_SILENCE
        return self._speech_encoder().encode_chunk(pcm) or OPUS_SILENCE

    def _speech_encoder(self) -> OpusMonoEncoder:
        """The encoder for the next speech, started over if silence was sent since."""
        if self._encoder is None:
            self._encoder = OpusMonoEncoder(self.complexity)
        elif self._silent:
            self._encoder.restart()
        self._silent = False
        return self._encoder
