"""Volume and signal-strength indicators from AUDIO_METADATA, as the JS client derives them.

Normalization (DefaultVolumeIndicatorAdapter): a state's `volume` V (positive dB below full
scale) becomes `1 - (V - 14) / 28` clipped to 0..1; `signal_strength` s becomes s / 2. Streams
the frame does not mention count as volume 0 and (when the frame carries signal strengths at
all) full signal, 1.0. Per attendee, changes are then merged the way DefaultRealtimeController
does: muting forces volume 0, a muted attendee's volume is ignored, and only changed fields are
reported (the active speaker detector consumes those as `VolumeIndicator`s).

Levels for the RealtimeObserver (the mobile SDKs' VolumeLevel/SignalStrength), with v the
normalized volume:
  MUTED when muted; NOT_SPEAKING when v == 0 (V >= 42); LOW when 0 < v < 1/3 (V > 32.67);
  MEDIUM when 1/3 <= v < 2/3 (V > 23.33); HIGH when v >= 2/3.
  Signal: NONE when s/2 == 0, LOW when 0 < s/2 < 1, HIGH when s/2 == 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from chime.signaling import signaling_pb2
from chime.v1 import events_pb2, types_pb2

Level: TypeAlias = types_pb2.VolumeLevel.ValueType
Signal: TypeAlias = types_pb2.SignalStrength.ValueType

MAX_VOLUME_DB = 14  # V at or below this is full volume
MIN_VOLUME_DB = 42  # V at or above this is silence
MAX_SIGNAL_STRENGTH = 2
IMPLICIT_VOLUME = 0.0
IMPLICIT_SIGNAL = 1.0
LOW_BELOW = 1 / 3
MEDIUM_BELOW = 2 / 3


def normalized_volume(volume_db: int) -> float:
    return min(max(1.0 - (volume_db - MAX_VOLUME_DB) / (MIN_VOLUME_DB - MAX_VOLUME_DB), 0.0), 1.0)


def normalized_signal(signal_strength: int) -> float:
    return min(max(signal_strength / MAX_SIGNAL_STRENGTH, 0.0), 1.0)


def volume_level(volume: float, muted: bool) -> Level:
    if muted:
        return types_pb2.VOLUME_LEVEL_MUTED
    if volume <= 0:
        return types_pb2.VOLUME_LEVEL_NOT_SPEAKING
    if volume < LOW_BELOW:
        return types_pb2.VOLUME_LEVEL_LOW
    if volume < MEDIUM_BELOW:
        return types_pb2.VOLUME_LEVEL_MEDIUM
    return types_pb2.VOLUME_LEVEL_HIGH


def signal_level(signal: float) -> Signal:
    if signal <= 0:
        return types_pb2.SIGNAL_STRENGTH_NONE
    if signal < 1:
        return types_pb2.SIGNAL_STRENGTH_LOW
    return types_pb2.SIGNAL_STRENGTH_HIGH


@dataclass(frozen=True)
class VolumeIndicator:
    """One attendee's changed fields (None = unchanged), as the JS volume indicator callback."""

    attendee_id: str
    volume: float | None
    muted: bool | None
    signal_strength: float | None


@dataclass
class Changes:
    volume_updates: list[events_pb2.VolumeUpdate] = field(default_factory=list)
    signal_updates: list[events_pb2.SignalUpdate] = field(default_factory=list)
    indicators: list[VolumeIndicator] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.volume_updates or self.signal_updates or self.indicators)


@dataclass
class _State:
    volume: float | None = None
    muted: bool | None = None
    signal: float | None = None
    level: Level | None = None
    signal_level: Signal | None = None


class VolumeTracker:
    """Per-attendee indicator state; feed it frames, get only what changed."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def apply_metadata(
        self,
        attendee_states: Iterable[signaling_pb2.SdkAudioAttendeeState],
        attendees: Mapping[int, types_pb2.AttendeeInfo],
        muted: Mapping[str, bool] | None = None,
    ) -> Changes:
        """One AUDIO_METADATA frame. `attendees` maps the present audio stream ids to attendees
        (from AUDIO_STREAM_ID_INFO); `muted` is the known mute state by attendee id."""
        volumes: dict[str, float] | None = None
        signals: dict[str, float] | None = None
        for state in attendee_states:
            info = attendees.get(state.audio_stream_id) if state.audio_stream_id else None
            if state.HasField("volume"):
                volumes = {} if volumes is None else volumes
                if info is not None:
                    volumes[info.attendee_id] = normalized_volume(state.volume)
            if state.HasField("signal_strength"):
                signals = {} if signals is None else signals
                if info is not None:
                    signals[info.attendee_id] = normalized_signal(state.signal_strength)
        changes = Changes()
        for info in attendees.values():
            attendee_id = info.attendee_id
            volume = None if volumes is None else volumes.get(attendee_id, IMPLICIT_VOLUME)
            signal = None if signals is None else signals.get(attendee_id, IMPLICIT_SIGNAL)
            mute = None if muted is None else muted.get(attendee_id)
            self._update(info, volume, mute, signal, changes)
        return changes

    def apply_muted(self, attendee: types_pb2.AttendeeInfo, muted: bool) -> Changes:
        """A mute change (AUDIO_STREAM_ID_INFO or local mute)."""
        changes = Changes()
        self._update(attendee, None, muted, None, changes)
        return changes

    def remove(self, attendee_id: str) -> None:
        """Forget an attendee that left, so a rejoin reports afresh."""
        self._states.pop(attendee_id, None)

    def _update(
        self,
        info: types_pb2.AttendeeInfo,
        volume: float | None,
        muted: bool | None,
        signal: float | None,
        changes: Changes,
    ) -> None:
        state = self._states.setdefault(info.attendee_id, _State())
        volume_changed = muted_changed = signal_changed = False
        if muted is not None and state.muted != muted:
            state.muted = muted
            muted_changed = True
            if muted and state.volume != 0.0:
                state.volume = 0.0
                volume_changed = True
        if not state.muted and volume is not None:
            if state.volume != volume:
                state.volume = volume
                volume_changed = True
            if state.muted is None:
                state.muted = False
                muted_changed = True
        if signal is not None and state.signal != signal:
            state.signal = signal
            signal_changed = True
        if volume_changed or muted_changed or signal_changed:
            changes.indicators.append(
                VolumeIndicator(
                    info.attendee_id,
                    state.volume if volume_changed else None,
                    state.muted if muted_changed else None,
                    state.signal if signal_changed else None,
                )
            )
        if state.volume is not None or state.muted:
            level = volume_level(state.volume or 0.0, bool(state.muted))
            if level != state.level:
                state.level = level
                attendee = types_pb2.AttendeeInfo()
                attendee.CopyFrom(info)
                changes.volume_updates.append(
                    events_pb2.VolumeUpdate(attendee=attendee, volume_level=level)
                )
        if state.signal is not None:
            strength = signal_level(state.signal)
            if strength != state.signal_level:
                state.signal_level = strength
                attendee = types_pb2.AttendeeInfo()
                attendee.CopyFrom(info)
                changes.signal_updates.append(
                    events_pb2.SignalUpdate(attendee=attendee, signal_strength=strength)
                )
