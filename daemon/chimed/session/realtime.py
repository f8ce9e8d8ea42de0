"""A session's realtime audio events: volumes, signal strengths and active speakers.

RealtimeAudio sits between the session core and its ObserverHub (it is the core's EventSink):
every event passes through to the hub, and presence and mute events also update the volume
state. AUDIO_METADATA frames (the core's on_audio_metadata seam) go through a VolumeTracker,
whose changes become REALTIME volume_changed / signal_strength_changed events and feed one
ActiveSpeakerDetector per active-speaker stream, each with its request's weights and score
interval. One asyncio task runs the detectors' timers, and only while such streams exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

from chime.signaling import signaling_pb2 as sig
from chime.v1 import events_pb2, session_pb2, types_pb2
from google.protobuf.message import Message

from chimed.errors import InvalidArgument
from chimed.session.active_speaker import (
    ActiveSpeakerDetector,
    ActiveSpeakersDetected,
    DefaultActiveSpeakerPolicy,
    Event,
)
from chimed.session.events import ObserverKind
from chimed.session.observers import Observer, ObserverHub
from chimed.session.roster import Roster
from chimed.session.volume import Changes, VolumeTracker

REALTIME = ObserverKind.REALTIME
ACTIVE_SPEAKER = ObserverKind.ACTIVE_SPEAKER
MIN_SCORE_INTERVAL_MS = 50


def speaker_policy(
    request: session_pb2.AddActiveSpeakerObserverRequest | None,
) -> tuple[DefaultActiveSpeakerPolicy, float]:
    """The policy (zero weights take the SDK defaults) and score interval (s) a stream asks for;
    InvalidArgument naming the field when one is out of range."""
    policy = DefaultActiveSpeakerPolicy()
    if request is None:
        return policy, 0.0
    for name in ("speaker_weight", "cutoff_threshold", "silence_threshold", "takeover_rate"):
        value = getattr(request, name)
        if math.isnan(value) or not 0 <= value <= 1:
            raise InvalidArgument(
                f"{name} must be between 0 and 1 (0 takes the default), not {value}"
            )
        if value:
            setattr(policy, name, value)
    interval_ms = request.score_callback_interval_ms
    if 0 < interval_ms < MIN_SCORE_INTERVAL_MS:
        raise InvalidArgument(
            f"score_callback_interval_ms must be 0 (no scores) or at least "
            f"{MIN_SCORE_INTERVAL_MS}, not {interval_ms}"
        )
    return policy, interval_ms / 1000


@dataclass(eq=False)
class _Speakers:
    observer: Observer
    detector: ActiveSpeakerDetector


class RealtimeAudio:
    def __init__(
        self,
        hub: ObserverHub,
        roster: Callable[[], Roster],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._hub = hub
        self._roster = roster
        self._clock = clock
        self._tracker = VolumeTracker()
        # Last known (volume, muted) and identity of each attendee, to seed new detectors.
        self._volumes: dict[str, tuple[float | None, bool | None]] = {}
        self._known: dict[str, types_pb2.AttendeeInfo] = {}
        self._speakers: dict[Observer, _Speakers] = {}
        self._ticker: asyncio.Task[None] | None = None
        hub.watch(ACTIVE_SPEAKER, self._speaker_added, self._speaker_removed)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # --- EventSink -------------------------------------------------------------------------
    def emit(self, kind: ObserverKind, field: str, payload: Message) -> None:
        self._hub.emit(kind, field, payload)
        if kind is REALTIME:
            attendees = list(getattr(payload, "attendees", ()))
            for info in attendees:
                self._known[info.attendee_id] = info
            if field in ("attendees_muted", "attendees_unmuted"):
                for info in attendees:
                    self._publish(self._tracker.apply_muted(info, field == "attendees_muted"))
            elif field in ("attendees_left", "attendees_dropped"):
                now = self._now()
                for info in attendees:
                    self._tracker.remove(info.attendee_id)
                    self._volumes.pop(info.attendee_id, None)
                    for s in list(self._speakers.values()):
                        self._deliver(s, s.detector.on_presence(info.attendee_id, False, now))
        elif kind is ObserverKind.AUDIO_VIDEO and field == "audio_session_stopped":
            self._tracker = VolumeTracker()  # a rejoin reports every level afresh
            self._volumes.clear()

    # --- AUDIO_METADATA --------------------------------------------------------------------
    def on_audio_metadata(self, frame: sig.SdkAudioMetadataFrame) -> None:
        roster = self._roster()
        streams = roster.streams()
        muted_ids = {a.attendee_id for a in roster.muted_attendees()}
        muted = {info.attendee_id: info.attendee_id in muted_ids for info in streams.values()}
        for info in streams.values():
            self._known[info.attendee_id] = info
        self._publish(self._tracker.apply_metadata(frame.attendee_states, streams, muted))

    def _publish(self, changes: Changes) -> None:
        if changes.volume_updates:
            self._hub.emit(
                REALTIME,
                "volume_changed",
                events_pb2.VolumeChanged(volume_updates=changes.volume_updates),
            )
        if changes.signal_updates:
            self._hub.emit(
                REALTIME,
                "signal_strength_changed",
                events_pb2.SignalStrengthChanged(signal_updates=changes.signal_updates),
            )
        if not changes.indicators:
            return
        now = self._now()
        for ind in changes.indicators:
            volume, muted = self._volumes.get(ind.attendee_id, (None, None))
            self._volumes[ind.attendee_id] = (
                ind.volume if ind.volume is not None else volume,
                ind.muted if ind.muted is not None else muted,
            )
            for s in list(self._speakers.values()):
                self._deliver(s, s.detector.on_volume(ind.attendee_id, ind.volume, ind.muted, now))

    # --- active speaker streams ------------------------------------------------------------
    def _speaker_added(self, observer: Observer) -> None:
        policy, interval = speaker_policy(observer.options)
        now = self._now()
        detector = ActiveSpeakerDetector(policy, now, scores_interval=interval)
        for attendee_id, (volume, muted) in self._volumes.items():
            detector.on_volume(attendee_id, volume, muted, now)  # the state as it is now
        self._speakers[observer] = _Speakers(observer, detector)
        self._hub.emit_to(
            observer, "active_speaker_detected", self._detected(detector.active_speakers or ())
        )
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick(), name="chimed-active-speaker"
            )

    def _speaker_removed(self, observer: Observer) -> None:
        self._speakers.pop(observer, None)
        if not self._speakers and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        while self._speakers:
            due = min(s.detector.next_deadline() for s in self._speakers.values())
            await asyncio.sleep(max(due - self._now(), 0.0))
            now = self._now()
            for s in list(self._speakers.values()):
                self._deliver(s, s.detector.advance(now))

    def _deliver(self, speakers: _Speakers, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, ActiveSpeakersDetected):
                self._hub.emit_to(
                    speakers.observer,
                    "active_speaker_detected",
                    self._detected(event.attendee_ids),
                )
            else:
                scores = [
                    events_pb2.ActiveSpeakerScore(attendee=self._info(aid), score=score)
                    for aid, score in event.scores.items()
                ]
                self._hub.emit_to(
                    speakers.observer,
                    "active_speaker_score_changed",
                    events_pb2.ActiveSpeakerScoreChanged(scores=scores),
                )

    def _info(self, attendee_id: str) -> types_pb2.AttendeeInfo:
        known = self._known.get(attendee_id)
        out = types_pb2.AttendeeInfo(attendee_id=attendee_id, external_user_id=attendee_id)
        if known is not None:
            out.CopyFrom(known)
        return out

    def _detected(self, attendee_ids: tuple[str, ...]) -> events_pb2.ActiveSpeakerDetected:
        return events_pb2.ActiveSpeakerDetected(attendees=[self._info(a) for a in attendee_ids])

    async def close(self) -> None:
        task, self._ticker = self._ticker, None
        self._speakers.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
