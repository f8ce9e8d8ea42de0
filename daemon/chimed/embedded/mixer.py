"""One meeting's audio mix: every listener hears every other unmuted speaker, never itself.

Speakers' decoded frames go into a small per-speaker jitter buffer (mono s16 48 kHz). The mix
advances in ticks of one frame (20 ms): the first listener to ask for the next tick computes it
-- the sum of every speaker that has sound -- and the others read the same tick from a short
history, so the sum is done once per tick whatever the number of listeners. A listener that is
not speaking gets the shared full mix (saturated and packed once per tick); a speaking listener
gets the sum minus its own part. Silent and absent speakers cost nothing, and a listener with
nothing to hear gets None, so its sender can skip encoding.

Plain state, no I/O: the media server pushes frames as they arrive and its listener tracks pull
on their own 20 ms clocks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from av import AudioFrame, AudioResampler

from chimed.audio_format import FRAME_SAMPLES, SAMPLE_RATE
from chimed.embedded.audio_levels import LevelMeter

PRIME_FRAMES = 1  # a speaker plays once this much is buffered (again after an underrun)
MAX_FRAMES = 5  # beyond this the oldest audio is dropped: latency stays bounded
TRIM_TICKS = 50  # audio buffered through this many ticks (1 s) in a row is dropped as delay
HISTORY_TICKS = 8  # how far a listener may lag the newest tick before it skips ahead
# A chunk below this RMS (about -80 dBFS) is stored as silence: decoders' near-zero noise
# must not keep listeners encoding.
SILENCE_RMS = 3.3
INT16_MAX = 32767
KNEE = 24576  # soft clipping starts here (-2.5 dBFS); the curve approaches full scale

Pcm = npt.NDArray[np.int16]
Sum = npt.NDArray[np.int32]


def saturate(mix: Sum) -> bytes:
    """int16 PCM of a sum of int16 signals, with a tanh knee instead of hard clipping."""
    if int(mix.max()) <= KNEE and int(mix.min()) >= -KNEE:
        return mix.astype(np.int16).tobytes()
    x = mix.astype(np.float32)
    magnitude = np.abs(x)
    loud = magnitude > KNEE
    headroom = INT16_MAX - KNEE
    squashed = KNEE + headroom * np.tanh((magnitude[loud] - KNEE) / headroom)
    x[loud] = np.copysign(squashed, x[loud])
    return np.rint(x).astype(np.int16).tobytes()


def is_native(frame: AudioFrame) -> bool:
    """s16 48 kHz mono or stereo (packed), what aiortc's Opus decoder gives: no resampling."""
    return bool(
        frame.format.name == "s16"
        and not frame.format.is_planar
        and frame.sample_rate == SAMPLE_RATE
        and frame.layout.name in ("mono", "stereo")
    )


def frame_to_mono(frame: AudioFrame, resampler: AudioResampler | None = None) -> Pcm:
    """The frame as mono s16 48 kHz samples (`resampler` is needed unless `is_native`)."""
    if is_native(frame):
        channels = 2 if frame.layout.name == "stereo" else 1
        count = frame.samples * channels
        raw = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16, count=count)
        if channels == 1:
            return raw
        return ((raw[0::2].astype(np.int32) + raw[1::2]) >> 1).astype(np.int16)
    assert resampler is not None
    pieces = [
        np.frombuffer(memoryview(f.planes[0]), dtype=np.int16, count=f.samples)
        for f in resampler.resample(frame)
    ]
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int16)


class JitterBuffer:
    """A speaker's queued samples: arrays, or ints standing for runs of silence."""

    def __init__(self, prime: int, limit: int) -> None:
        self.prime = prime
        self.limit = limit
        self.chunks: deque[Pcm | int] = deque()
        self.buffered = 0
        self.playing = False
        self.dropped = 0  # samples dropped at the bound
        self.trimmed = 0  # samples dropped as standing delay
        self._low = -1  # fewest samples left after a take, this trim window
        self._window = 0

    def put(self, chunk: Pcm | int) -> None:
        n = chunk if isinstance(chunk, int) else len(chunk)
        if n == 0:
            return
        self.chunks.append(chunk)
        self.buffered += n
        self.dropped += self._drop_oldest(self.buffered - self.limit)  # never block or grow

    def _drop_oldest(self, excess: int) -> int:
        dropped = 0
        while excess > 0:
            head = self.chunks[0]
            size = head if isinstance(head, int) else len(head)
            if size <= excess:
                self.chunks.popleft()
                cut = size
            else:
                self.chunks[0] = head - excess if isinstance(head, int) else head[excess:]
                cut = excess
            self.buffered -= cut
            dropped += cut
            excess -= cut
        return dropped

    def take(self, n: int) -> Pcm | None:
        """The next `n` samples, or None when silent, unprimed or run dry."""
        if not self.playing:
            if self.buffered < self.prime:
                return None
            self.playing = True
        out = self._take(n)
        self._trim(n)
        return out

    def _trim(self, n: int) -> None:
        """Drop whole ticks of audio that stayed buffered through a whole TRIM_TICKS window:
        delay left over from a burst of arrivals, not jitter the buffer needs to absorb."""
        self._low = self.buffered if self._low < 0 else min(self._low, self.buffered)
        self._window += 1
        if self._window >= TRIM_TICKS:
            self.trimmed += self._drop_oldest(self._low - self._low % n)
            self._low, self._window = -1, 0

    def _take(self, n: int) -> Pcm | None:
        pieces: list[Pcm | int] = []
        need = n
        while need > 0 and self.chunks:
            head = self.chunks.popleft()
            size = head if isinstance(head, int) else len(head)
            if size > need:
                rest: Pcm | int
                if isinstance(head, int):
                    head, rest = need, head - need
                else:
                    head, rest = head[:need], head[need:]
                self.chunks.appendleft(rest)
                size = need
            pieces.append(head)
            need -= size
        self.buffered -= n - need
        if need > 0:  # ran dry: play what there is, then wait to prime again
            self.playing = False
        if all(isinstance(p, int) for p in pieces):
            return None
        if len(pieces) == 1 and need == 0:
            only = pieces[0]
            assert not isinstance(only, int)
            return only
        out = np.zeros(n, np.int16)
        at = 0
        for p in pieces:
            if isinstance(p, int):
                at += p
            else:
                out[at : at + len(p)] = p
                at += len(p)
        return out

    def clear(self) -> None:
        self.chunks.clear()
        self.buffered = 0
        self.playing = False
        self._low, self._window = -1, 0


@dataclass(eq=False)
class _Speaker:
    buffer: JitterBuffer
    meter: LevelMeter = field(default_factory=LevelMeter)
    muted: bool = False
    resampler: AudioResampler | None = None


@dataclass(eq=False)
class _Tick:
    index: int
    total: Sum | None  # every contributing speaker summed
    parts: dict[int, Sum]  # each contributing speaker's own samples
    full: bytes | None = None  # packed on first use
    _full_done: bool = False

    def for_listener(self, listener: int) -> bytes | None:
        own = self.parts.get(listener)
        if own is None:
            if not self._full_done:  # packed once, shared by every non-speaking listener
                self.full = saturate(self.total) if self.total is not None else None
                self._full_done = True
            return self.full
        if len(self.parts) == 1:
            return None  # only its own voice
        assert self.total is not None
        return saturate(self.total - own)


class AudioMixer:
    """`Mixer` for MediaServer: stream ids are speakers and listeners alike."""

    def __init__(
        self,
        frame_samples: int = FRAME_SAMPLES,
        prime_frames: int = PRIME_FRAMES,
        max_frames: int = MAX_FRAMES,
        history: int = HISTORY_TICKS,
    ) -> None:
        self.frame_samples = frame_samples
        self._prime = prime_frames * frame_samples
        self._limit = max_frames * frame_samples
        self._speakers: dict[int, _Speaker] = {}
        self._muted: set[int] = set()  # kept apart: mute may come before any audio
        self._cursors: dict[int, int] = {}  # listener -> next tick index it reads
        self._ticks: deque[_Tick] = deque(maxlen=history)
        self._newest = -1

    # --- speakers --------------------------------------------------------------------------
    def push(self, speaker: int, frame: AudioFrame) -> None:
        if speaker in self._muted:
            return
        state = self._speakers.get(speaker)
        if state is None:
            state = self._speakers[speaker] = _Speaker(JitterBuffer(self._prime, self._limit))
        if state.resampler is None and not is_native(frame):
            state.resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        pcm = frame_to_mono(frame, state.resampler)
        n = len(pcm)
        if n == 0:
            return
        as_float = pcm.astype(np.float32)
        energy = float(np.dot(as_float, as_float))
        state.meter.add(energy, n)
        state.buffer.put(n if energy <= SILENCE_RMS * SILENCE_RMS * n else pcm)

    def set_muted(self, stream_id: int, muted: bool) -> None:
        """A muted speaker is left out of every mix (and of the levels) until unmuted."""
        if muted:
            self._muted.add(stream_id)
            state = self._speakers.get(stream_id)
            if state is not None:
                state.buffer.clear()
                state.meter.take()
        else:
            self._muted.discard(stream_id)

    def take_levels(self) -> dict[int, float]:
        """dBFS per speaker over the audio pushed since the last call (muted: -inf)."""
        levels: dict[int, float] = {}
        for stream_id, state in self._speakers.items():
            level = -math.inf if stream_id in self._muted else state.meter.take()
            if level is not None:
                levels[stream_id] = level
        return levels

    def is_shared(self, pcm: bytes) -> bool:
        """Whether `pcm` is a recent tick's full mix, given as is to every non-speaker."""
        return any(tick.full is pcm for tick in reversed(self._ticks))

    def remove(self, stream_id: int) -> None:
        self._speakers.pop(stream_id, None)
        self._muted.discard(stream_id)
        self._cursors.pop(stream_id, None)

    # --- listeners -------------------------------------------------------------------------
    def pull(self, listener: int, samples: int) -> bytes | None:
        if samples != self.frame_samples:
            raise ValueError(f"the mix advances in ticks of {self.frame_samples} samples")
        index = self._cursors.get(listener, self._newest if self._ticks else 0)
        if index > self._newest:
            self._advance()
            index = self._newest
        elif index < self._ticks[0].index:
            index = self._newest  # fell behind the history: skip to the present
        self._cursors[listener] = index + 1
        return self._ticks[index - self._ticks[0].index].for_listener(listener)

    def _advance(self) -> None:
        total: Sum | None = None
        parts: dict[int, Sum] = {}
        for stream_id, state in self._speakers.items():
            pcm = state.buffer.take(self.frame_samples)
            if pcm is None:
                continue
            part = pcm.astype(np.int32)
            parts[stream_id] = part
            total = part.copy() if total is None else np.add(total, part, out=total)
        self._newest += 1
        self._ticks.append(_Tick(self._newest, total, parts))
