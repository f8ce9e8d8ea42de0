"""Opus for listener tracks, encoded at most once per distinct mix.

aiortc's sender encodes every frame a track returns (in a worker thread, stereo, 96 kbps) but
sends an `av.Packet` as it is. So when the answer picked Opus, a listener track hands over
packets: a fixed 3-byte Opus silence frame when the mix is silent (no encoding at all), the
meeting's shared encoding of the full mix for every listener that is not speaking (one encode
per tick however many listen), and its own encoder's output only for a speaking listener,
who hears everyone but itself. Every packet carries the track's own timestamp, so switching
between the three keeps the RTP clock continuous.
"""

from __future__ import annotations

from collections import deque

from chimed.media.opus import DEFAULT_COMPLEXITY, OPUS_SILENCE, new_encoder


class OpusStream:
    """One libopus encoder: 20 ms of mono s16 48 kHz in, one Opus packet payload out.

    Silence goes out as OPUS_SILENCE without this encoder, so after silence its state is
    still that of the last speech while the receiver's decoder has heard silence: the next
    packets would decode ramped down for a frame or two (20-40 ms of onset lost). `encode(pcm,
    after_silence=True)` starts from a reset encoder that has just encoded silence instead."""

    def __init__(self, complexity: int = DEFAULT_COMPLEXITY) -> None:
        self._codec = new_encoder(complexity)

    def encode(self, pcm: bytes, after_silence: bool = False) -> bytes:
        if after_silence:
            self._codec.reset()
            self._codec.encode(bytes(len(pcm)))  # what the decoder heard last; not sent
        return self._codec.encode(pcm) or OPUS_SILENCE


class SharedOpus:
    """A meeting's shared encoding: the same PCM object (one tick's full mix) encodes once.

    Listeners read a tick at different moments (each track has its own 20 ms clock), so the
    last few ticks' payloads are kept, matched by identity.
    """

    def __init__(self, complexity: int = DEFAULT_COMPLEXITY, keep: int = 8) -> None:
        self._complexity = complexity
        self._stream: OpusStream | None = None
        self._recent: deque[tuple[bytes, bytes]] = deque(maxlen=keep)

    def encode(self, pcm: bytes, after_silence: bool = False) -> bytes:
        """`after_silence`: the tick before this one was silent (see OpusStream); only the
        first listener to reach a tick encodes it, and it read the tick before."""
        for seen, payload in self._recent:
            if seen is pcm:
                return payload
        if self._stream is None:
            self._stream = OpusStream(self._complexity)
        payload = self._stream.encode(pcm, after_silence)
        self._recent.append((pcm, payload))
        return payload
