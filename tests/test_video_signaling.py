"""What chimed's video says and reads on the signaling channel, as plain code: the SUBSCRIBE
video send descriptor and receive ids, PAUSE/RESUME, and which INDEX sources it receives."""

from __future__ import annotations

from chime.signaling import signaling_pb2 as sig
from chimed.session.video_index import wanted_sources
from chimed.signaling import messages


def source(
    stream_id: int,
    group_id: int,
    attendee: str,
    media_type: sig.SdkStreamMediaType.ValueType = sig.VIDEO,
) -> sig.SdkStreamDescriptor:
    return sig.SdkStreamDescriptor(
        stream_id=stream_id,
        group_id=group_id,
        attendee_id=attendee,
        media_type=media_type,
        max_bitrate_kbps=1500,
    )


def test_subscribe_sending_video_carries_the_web_clients_descriptor() -> None:
    sub = messages.subscribe(
        "v=0\r\n", "host", False, "me", send_video=True, receive_stream_ids=[0, 5, 9]
    ).sub
    assert sub.duplex == sig.DUPLEX
    audio, video = sub.send_streams
    assert audio.media_type == sig.AUDIO
    assert (video.stream_id, video.group_id, video.track_label) == (
        2,
        2,
        "AmazonChimeExpressVideo",
    )
    assert (video.media_type, video.attendee_id, video.framerate) == (sig.VIDEO, "me", 15)
    assert video.max_bitrate_kbps > 0
    assert list(sub.receive_stream_ids) == [0, 5, 9]


def test_pause_and_resume_name_the_streams() -> None:
    paused = messages.pause([7, 8], True)
    assert paused.type == sig.SdkSignalFrame.PAUSE and list(paused.pause.stream_ids) == [7, 8]
    resumed = messages.pause([7], False)
    assert resumed.type == sig.SdkSignalFrame.RESUME and list(resumed.pause.stream_ids) == [7]


def test_index_keeps_the_newest_group_per_remote_video_attendee() -> None:
    index = sig.SdkIndexFrame(
        sources=[
            source(9, 4, "bob"),
            source(3, 2, "bob"),  # an older session of bob's
            source(5, 3, "carol"),
            source(6, 3, "carol", media_type=sig.AUDIO),
            source(7, 5, "me"),
            source(8, 6, "me#content"),
            source(11, 7, "bob#content"),
        ]
    )
    wanted = wanted_sources(index, "me")
    assert list(wanted) == [5, 9, 11]
    assert wanted[9].attendee_id == "bob"
    assert list(wanted_sources(index, "me", limit=2)) == [5, 9]
    assert wanted_sources(sig.SdkIndexFrame(), "me") == {}
