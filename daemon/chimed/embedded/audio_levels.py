"""Speaker levels and link quality for AUDIO_METADATA: plain arithmetic and state, no I/O.

The mixer feeds each speaker's `LevelMeter` as frames arrive; every metadata window the media
server takes the meters (dBFS of the window's RMS) and the receivers' packet counters, and a
meeting's `MetadataTracker` turns them into the frame's attendee states.

The web client maps a state's `volume` V (dB below full scale) to 1 - (V - 14) / 28, clipped to
0..1, and counts every stream missing from a frame as volume 0 -- but only when the frame names
at least one volume. So speaking streams are listed, silent ones are left out, and a stream that
just fell silent is listed once more with a volume the client reads as 0 (an all-silent frame
would otherwise change nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from chime.signaling import signaling_pb2 as pb

FULL_SCALE = 32768.0
# Quieter than this counts as not speaking: the client maps 42 dB down to volume 0.
SILENT_DBFS = -42.0
SILENT_VOLUME = 42
MAX_SIGNAL_STRENGTH = 2


def dbfs(energy: float, samples: int) -> float:
    """RMS level in dB relative to int16 full scale; -inf for digital silence."""
    if samples <= 0 or energy <= 0.0:
        return -math.inf
    return 10.0 * math.log10(energy / samples / (FULL_SCALE * FULL_SCALE))


def metadata_volume(level_dbfs: float) -> int:
    """The wire `volume`: a positive whole number of dB below full scale."""
    if level_dbfs == -math.inf:
        return SILENT_VOLUME
    return max(0, round(-level_dbfs))


def signal_strength(received: int, lost: int) -> int:
    """0..2 from one window's packet counts: 2 without loss, 0 when most is lost."""
    expected = received + lost
    if expected <= 0 or lost <= 0:
        return MAX_SIGNAL_STRENGTH
    loss = lost / expected
    if loss < 0.05:
        return 2
    if loss < 0.25:
        return 1
    return 0


class LevelMeter:
    """Sum of squares and sample count since the last `take`."""

    __slots__ = ("energy", "samples")

    def __init__(self) -> None:
        self.energy = 0.0
        self.samples = 0

    def add(self, energy: float, samples: int) -> None:
        self.energy += energy
        self.samples += samples

    def take(self) -> float | None:
        """The window's dBFS (None when nothing arrived), and a new window."""
        if self.samples == 0:
            return None
        level = dbfs(self.energy, self.samples)
        self.energy, self.samples = 0.0, 0
        return level


@dataclass
class _Counts:
    received: int = 0
    lost: int = 0


class LossCounter:
    """Per-stream signal strength from cumulative receiver counters (packets received/lost)."""

    def __init__(self) -> None:
        self._last: dict[int, _Counts] = {}

    def strength(self, stream_id: int, received: int, lost: int) -> int:
        last = self._last.setdefault(stream_id, _Counts())
        d_received, d_lost = received - last.received, lost - last.lost
        last.received, last.lost = received, lost
        return signal_strength(max(0, d_received), max(0, d_lost))

    def forget(self, stream_id: int) -> None:
        self._last.pop(stream_id, None)


class MetadataTracker:
    """One meeting's AUDIO_METADATA: which streams a window's frame names, and how."""

    def __init__(self) -> None:
        self._speaking: dict[int, pb.SdkAudioAttendeeState] = {}  # named in the last frame
        self._carried: set[int] = set()  # named again without audio in the last window
        self.loss = LossCounter()

    def window(
        self, levels: Mapping[int, float], strengths: Mapping[int, int]
    ) -> list[pb.SdkAudioAttendeeState] | None:
        """The attendee states for this window, or None when there is nothing to say.

        `levels`: dBFS per speaker that sent audio in the window (-inf when muted);
        `strengths`: signal strength per stream with a receiver. A speaker with no audio at
        all in one window (a stall on the way) keeps its last state for that window.
        """
        speaking: dict[int, pb.SdkAudioAttendeeState] = {}
        carried: set[int] = set()
        for stream_id, level in levels.items():
            if level >= SILENT_DBFS:
                speaking[stream_id] = pb.SdkAudioAttendeeState(
                    audio_stream_id=stream_id,
                    volume=metadata_volume(level),
                    muted=False,
                    signal_strength=strengths.get(stream_id, MAX_SIGNAL_STRENGTH),
                )
        silenced: list[pb.SdkAudioAttendeeState] = []
        for stream_id, last in self._speaking.items():
            if stream_id in speaking:
                continue
            if stream_id not in levels and stream_id not in self._carried:
                speaking[stream_id] = last
                carried.add(stream_id)
            else:  # fell silent or muted: named once more, as silent
                silenced.append(
                    pb.SdkAudioAttendeeState(
                        audio_stream_id=stream_id,
                        volume=SILENT_VOLUME,
                        signal_strength=strengths.get(stream_id, MAX_SIGNAL_STRENGTH),
                    )
                )
        self._speaking, self._carried = speaking, carried
        states = sorted([*speaking.values(), *silenced], key=lambda s: s.audio_stream_id)
        return states or None

    def forget(self, stream_id: int) -> None:
        """The stream left: the client has dropped its mapping, so never name it again."""
        self._speaking.pop(stream_id, None)
        self._carried.discard(stream_id)
        self.loss.forget(stream_id)
