"""Active speaker detection, as amazon-chime-sdk-js does it by default.

DefaultActiveSpeakerPolicy, per volume update of attendee A (volume in 0..1 or None):
  v := 0 if muted or volume is None; then v := 1 if v > silence_threshold else 0;
  score[A] := score[A] * speaker_weight + v * (1 - speaker_weight);
  for every other attendee B: score[B] := max(score[B] - takeover_rate * v, 0);
  the returned score is 0 when below cutoff_threshold, else score[A].

DefaultActiveSpeakerDetector:
  - a volume indicator (changed fields only; see volume.py) stamps A's update time and rescores
    A; a presence "left" sets A's score to 0;
  - every `update_interval` (200 ms) each attendee whose last update is more than
    `wait_interval` (1000 ms) old is rescored with volume 0 (decay);
  - when A's score changes and A crosses between zero and non-zero relative to the last
    reported list (or nothing was reported yet), the list of attendees with a score > 0, highest
    first, is reported;
  - every `scores_interval` (if non-zero) all scores are reported.

This is a plain object driven by explicit timestamps (seconds, any monotonic clock): the caller
feeds events with `now` and calls `advance(now)` by `next_deadline()`; no asyncio inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DefaultActiveSpeakerPolicy:
    speaker_weight: float = 0.9
    cutoff_threshold: float = 0.01
    silence_threshold: float = 0.2
    takeover_rate: float = 0.2
    _volumes: dict[str, float] = field(default_factory=dict, repr=False)

    def calculate_score(self, attendee_id: str, volume: float | None, muted: bool | None) -> float:
        level = 0.0 if muted or volume is None else volume
        self._volumes.setdefault(attendee_id, 0.0)
        active = 1.0 if level > self.silence_threshold else 0.0
        score = self._volumes[attendee_id] * self.speaker_weight + active * (
            1 - self.speaker_weight
        )
        self._volumes[attendee_id] = score
        for other, value in self._volumes.items():
            if other != attendee_id:
                self._volumes[other] = max(value - self.takeover_rate * active, 0.0)
        return 0.0 if score < self.cutoff_threshold else score


@dataclass(frozen=True)
class ActiveSpeakersDetected:
    at: float
    attendee_ids: tuple[str, ...]  # most active first


@dataclass(frozen=True)
class ScoresReported:
    at: float
    scores: dict[str, float]


Event = ActiveSpeakersDetected | ScoresReported


class ActiveSpeakerDetector:
    def __init__(
        self,
        policy: DefaultActiveSpeakerPolicy,
        start: float,
        *,
        update_interval: float = 0.2,
        wait_interval: float = 1.0,
        scores_interval: float = 0.0,
    ) -> None:
        if update_interval <= 0 or scores_interval < 0:
            raise ValueError("intervals must be positive (scores_interval 0 disables scores)")
        self.policy = policy
        self._start = start
        self._update_interval = update_interval
        self._wait_interval = wait_interval
        self._scores_interval = scores_interval
        self._activity_ticks = 0
        self._score_ticks = 0
        self.scores: dict[str, float] = {}
        self._updated: dict[str, float] = {}
        self._muted: dict[str, bool] = {}
        self.active_speakers: tuple[str, ...] | None = None

    # --- inputs --------------------------------------------------------------------------

    def on_volume(
        self, attendee_id: str, volume: float | None, muted: bool | None, now: float
    ) -> list[Event]:
        """A volume indicator change for an attendee (fields None when unchanged)."""
        events = self.advance(now)
        self._updated[attendee_id] = now
        if muted is not None:
            self._muted[attendee_id] = muted
        self._rescore(attendee_id, volume, muted, now, events)
        return events

    def on_presence(self, attendee_id: str, present: bool, now: float) -> list[Event]:
        events = self.advance(now)
        if not present:
            self.scores[attendee_id] = 0.0
            self._updated[attendee_id] = now
            self._report_if_needed(attendee_id, now, events)
        return events

    def advance(self, now: float) -> list[Event]:
        """Run the timers due at or before `now`, in time order."""
        events: list[Event] = []
        while True:
            activity_at = self._start + (self._activity_ticks + 1) * self._update_interval
            scores_at = (
                self._start + (self._score_ticks + 1) * self._scores_interval
                if self._scores_interval
                else float("inf")
            )
            if min(activity_at, scores_at) > now:
                return events
            if activity_at <= scores_at:  # the activity timer was started first
                self._activity_ticks += 1
                self._decay(activity_at, events)
            else:
                self._score_ticks += 1
                events.append(ScoresReported(scores_at, dict(self.scores)))

    def next_deadline(self) -> float:
        activity_at = self._start + (self._activity_ticks + 1) * self._update_interval
        if not self._scores_interval:
            return activity_at
        return min(activity_at, self._start + (self._score_ticks + 1) * self._scores_interval)

    # --- internals -----------------------------------------------------------------------

    def _decay(self, now: float, events: list[Event]) -> None:
        for attendee_id in list(self.scores):
            # The epsilon keeps "exactly wait_interval ago" not-yet-stale, as with JS's
            # integer milliseconds, despite float timestamps.
            if now - self._updated[attendee_id] > self._wait_interval + 1e-9:
                self._rescore(attendee_id, 0.0, self._muted.get(attendee_id), now, events)

    def _rescore(
        self,
        attendee_id: str,
        volume: float | None,
        muted: bool | None,
        now: float,
        events: list[Event],
    ) -> None:
        score = self.policy.calculate_score(attendee_id, volume, muted)
        if self.scores.get(attendee_id) != score:
            self.scores[attendee_id] = score
            self._updated[attendee_id] = now
            self._report_if_needed(attendee_id, now, events)

    def _report_if_needed(self, attendee_id: str, now: float, events: list[Event]) -> None:
        active = self.active_speakers
        score = self.scores[attendee_id]
        if active is not None and not (
            (score == 0 and attendee_id in active) or (score > 0 and attendee_id not in active)
        ):
            return
        ranked = sorted(self.scores.items(), key=lambda item: -item[1])  # stable, like JS sort
        self.active_speakers = tuple(a for a, s in ranked if s > 0)
        events.append(ActiveSpeakersDetected(now, self.active_speakers))
