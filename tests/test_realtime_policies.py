"""Volume/signal indicators and the active speaker policy, on scripted frames and timestamps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from chime.signaling import signaling_pb2
from chime.v1 import types_pb2
from chimed.session.active_speaker import (
    ActiveSpeakerDetector,
    ActiveSpeakersDetected,
    DefaultActiveSpeakerPolicy,
    ScoresReported,
)
from chimed.session.volume import (
    VolumeIndicator,
    VolumeTracker,
    normalized_signal,
    normalized_volume,
    signal_level,
    volume_level,
)

A = types_pb2.AttendeeInfo(attendee_id="a", external_user_id="alice")
B = types_pb2.AttendeeInfo(attendee_id="b", external_user_id="bob")
STREAMS = {1: A, 2: B}


def frame(*states: tuple[int, int | None, int | None]) -> list[signaling_pb2.SdkAudioAttendeeState]:
    out = []
    for stream_id, volume, signal in states:
        state = signaling_pb2.SdkAudioAttendeeState(audio_stream_id=stream_id)
        if volume is not None:
            state.volume = volume
        if signal is not None:
            state.signal_strength = signal
        out.append(state)
    return out


def levels(changes_list: Sequence[object]) -> dict[str, int]:
    return {u.attendee.attendee_id: u.volume_level for u in changes_list}  # type: ignore[attr-defined]


def test_volume_normalization_matches_js_client() -> None:
    assert normalized_volume(14) == 1.0
    assert normalized_volume(42) == 0.0
    assert normalized_volume(28) == pytest.approx(0.5)
    assert normalized_volume(0) == 1.0  # clipped
    assert normalized_volume(60) == 0.0
    assert [normalized_signal(s) for s in (0, 1, 2, 3)] == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("volume", "muted", "level"),
    [
        (0.5, True, types_pb2.VOLUME_LEVEL_MUTED),
        (0.0, False, types_pb2.VOLUME_LEVEL_NOT_SPEAKING),
        (0.01, False, types_pb2.VOLUME_LEVEL_LOW),
        (0.333, False, types_pb2.VOLUME_LEVEL_LOW),
        (1 / 3, False, types_pb2.VOLUME_LEVEL_MEDIUM),
        (0.666, False, types_pb2.VOLUME_LEVEL_MEDIUM),
        (2 / 3, False, types_pb2.VOLUME_LEVEL_HIGH),
        (1.0, False, types_pb2.VOLUME_LEVEL_HIGH),
    ],
)
def test_volume_level_thresholds(volume: float, muted: bool, level: int) -> None:
    assert volume_level(volume, muted) == level


def test_signal_levels() -> None:
    assert signal_level(0.0) == types_pb2.SIGNAL_STRENGTH_NONE
    assert signal_level(0.5) == types_pb2.SIGNAL_STRENGTH_LOW
    assert signal_level(1.0) == types_pb2.SIGNAL_STRENGTH_HIGH


def test_tracker_emits_only_changes_and_counts_absent_streams_as_silent() -> None:
    tracker = VolumeTracker()
    first = tracker.apply_metadata(frame((1, 14, 2)), STREAMS)
    assert levels(first.volume_updates) == {
        "a": types_pb2.VOLUME_LEVEL_HIGH,
        "b": types_pb2.VOLUME_LEVEL_NOT_SPEAKING,  # absent: volume 0
    }
    assert first.volume_updates[0].attendee.external_user_id == "alice"
    assert {u.attendee.attendee_id: u.signal_strength for u in first.signal_updates} == {
        "a": types_pb2.SIGNAL_STRENGTH_HIGH,
        "b": types_pb2.SIGNAL_STRENGTH_HIGH,  # absent: implicit full signal
    }
    assert VolumeIndicator("a", 1.0, False, 1.0) in first.indicators

    again = tracker.apply_metadata(frame((1, 14, 2)), STREAMS)
    assert not again  # nothing changed, nothing reported

    # Volume moves within HIGH: an indicator (for the detector) but no level update.
    within = tracker.apply_metadata(frame((1, 16, 2)), STREAMS)
    assert within.volume_updates == [] and within.signal_updates == []
    [indicator] = within.indicators
    assert indicator.attendee_id == "a" and indicator.volume == pytest.approx(1 - 2 / 28)
    assert (indicator.muted, indicator.signal_strength) == (None, None)

    lower = tracker.apply_metadata(frame((1, 30, 1), (2, 40, 2)), STREAMS)
    assert levels(lower.volume_updates) == {
        "a": types_pb2.VOLUME_LEVEL_MEDIUM,  # 1 - 16/28 = 0.43
        "b": types_pb2.VOLUME_LEVEL_LOW,  # 1 - 26/28 = 0.07
    }
    assert [(u.attendee.attendee_id, u.signal_strength) for u in lower.signal_updates] == [
        ("a", types_pb2.SIGNAL_STRENGTH_LOW)
    ]


def test_tracker_mute_overrides_volume() -> None:
    tracker = VolumeTracker()
    tracker.apply_metadata(frame((1, 14, 2)), STREAMS)
    muted = tracker.apply_muted(A, True)
    assert levels(muted.volume_updates) == {"a": types_pb2.VOLUME_LEVEL_MUTED}
    assert muted.indicators == [VolumeIndicator("a", 0.0, True, None)]
    # While muted, metadata volume is ignored.
    assert tracker.apply_metadata(frame((1, 14, 2)), STREAMS).volume_updates == []
    unmuted = tracker.apply_metadata(frame((1, 14, 2)), STREAMS, muted={"a": False})
    assert levels(unmuted.volume_updates) == {"a": types_pb2.VOLUME_LEVEL_HIGH}
    # A frame without signal strengths leaves signal state alone.
    assert tracker.apply_metadata(frame((1, 14, None)), STREAMS).signal_updates == []


def test_policy_scores_exactly_as_the_sdk() -> None:
    policy = DefaultActiveSpeakerPolicy()
    assert policy.calculate_score("a", 0.8, False) == pytest.approx(0.1)
    assert policy.calculate_score("a", 0.8, False) == pytest.approx(0.19)
    assert policy.calculate_score("a", 0.2, False) == pytest.approx(0.171)  # not above 0.2
    # b talks: b rises, a is taken over by 0.2 (floored at 0 on the next b update).
    assert policy.calculate_score("b", 1.0, None) == pytest.approx(0.1)
    assert policy.calculate_score("a", 1.0, True) == 0.0  # muted counts as silent; 0 < 0.01
    assert policy.calculate_score("c", None, None) == 0.0
    custom = DefaultActiveSpeakerPolicy(speaker_weight=0.5, silence_threshold=0.5)
    assert custom.calculate_score("a", 0.6, False) == pytest.approx(0.5)
    assert custom.calculate_score("a", 0.5, False) == pytest.approx(0.25)


def speakers(events: Sequence[object]) -> list[tuple[float, tuple[str, ...]]]:
    return [(e.at, e.attendee_ids) for e in events if isinstance(e, ActiveSpeakersDetected)]


def test_detector_reports_only_zero_crossings_and_decays() -> None:
    detector = ActiveSpeakerDetector(DefaultActiveSpeakerPolicy(), start=0.0)
    assert speakers(detector.on_volume("a", 0.8, False, 0.05)) == [(0.05, ("a",))]
    # b starts: both scores are 0.1 now (a keeps its last score), listed in arrival order.
    assert speakers(detector.on_volume("b", 0.9, False, 0.10)) == [(0.10, ("a", "b"))]
    # a goes quiet: b's takeover already brought a's policy score to 0, so a leaves the list.
    assert speakers(detector.on_volume("a", 0.0, None, 0.30)) == [(0.30, ("b",))]
    # b keeps talking: its score changes (0.19) but it crosses nothing, so no report.
    assert speakers(detector.on_volume("b", 0.9, None, 0.45)) == []
    assert detector.scores["b"] == pytest.approx(0.19)
    # b gets no more updates: ticks run on the 200 ms grid and rescore b with volume 0 once
    # its last change is more than 1 s old (1.6 s, then every 1.2 s) until it falls under
    # the cutoff, which is reported as an empty list.
    reports = speakers(detector.advance(60.0))
    decays = 1
    score = 0.19 * 0.9
    while score >= 0.01:
        score *= 0.9
        decays += 1
    assert len(reports) == 1 and reports[0][1] == ()
    assert reports[0][0] == pytest.approx(1.6 + 1.2 * (decays - 1))
    assert detector.scores == {"a": 0.0, "b": 0.0}
    assert detector.next_deadline() > 60.0


def test_detector_first_report_presence_and_scores() -> None:
    detector = ActiveSpeakerDetector(DefaultActiveSpeakerPolicy(), start=10.0, scores_interval=0.5)
    # The first update always reports, even an empty list.
    assert speakers(detector.on_volume("a", 0.1, False, 10.01)) == [(10.01, ())]
    assert speakers(detector.on_volume("b", 1.0, False, 10.02)) == [(10.02, ("b",))]
    assert detector.next_deadline() == pytest.approx(10.2)
    events = detector.advance(11.0)
    scores = [e for e in events if isinstance(e, ScoresReported)]
    assert [e.at for e in scores] == [pytest.approx(10.5), pytest.approx(11.0)]
    assert scores[0].scores == {"a": 0.0, "b": pytest.approx(0.1)}
    # b leaves: score 0 and a report without b.
    assert speakers(detector.on_presence("b", False, 11.05)) == [(11.05, ())]
    assert speakers(detector.on_presence("c", True, 11.06)) == []
