"""The forwarding state machine of one meeting (chimed.embedded.video_forwarding), fed packets
as the media server feeds it: numbering per receiver section, keyframe starts, pause and
resume, codecs, keyframe requests."""

from __future__ import annotations

from chimed.embedded.video_forwarding import (
    H264,
    KEYFRAME_RETRY_S,
    VP8,
    Forwarding,
    Section,
    codec_key,
    keyframe_start,
)

VP8_KEY = (
    b"\x10"
    + b"\x00\x00\x00\x9d\x01\x2a"
    + (320).to_bytes(2, "little")
    + (240).to_bytes(2, "little")
)
VP8_DELTA = b"\x10" + b"\x01\x00\x00" + bytes(8)
VP8_MIDDLE = b"\x00" + bytes(10)  # a later packet of a frame (S = 0)


def section(receiver: int = 2, mid: str = "2", stream_id: int = 7, vp8: int = 96) -> Section:
    return Section(receiver, mid, stream_id, {VP8: vp8})


def forwarding(*sections: Section) -> Forwarding:
    f = Forwarding()
    f.add_source(7)
    for s in sections:
        f.subscribe(s.receiver, [s])
    return f


def test_a_section_starts_at_a_keyframe_and_renumbers_for_its_receiver() -> None:
    bob, carol = section(2, "2", vp8=96), section(3, "4", vp8=120)
    f = forwarding(bob, carol)
    assert f.packet(7, VP8, 1000, 5000, VP8_DELTA, 0.0).outgoing == []  # no picture yet
    first = f.packet(7, VP8, 1001, 6000, VP8_KEY, 0.1)
    assert [(o.section, o.payload_type) for o in first.outgoing] == [(bob, 96), (carol, 120)]
    assert first.size == (320, 240)
    after = f.packet(7, VP8, 1002, 6000, VP8_MIDDLE, 0.1).outgoing
    assert after[0].sequence_number == first.outgoing[0].sequence_number + 1
    assert after[0].timestamp == first.outgoing[0].timestamp


def test_numbering_stays_continuous_across_pause_and_resume() -> None:
    bob = section()
    f = forwarding(bob)
    out = f.packet(7, VP8, 100, 90000, VP8_KEY, 0.0).outgoing[0]
    f.pause(2, {7}, paused=True)
    assert f.packet(7, VP8, 101, 96000, VP8_DELTA, 0.1).outgoing == []
    assert f.pause(2, {7}, paused=False) == [7]  # a keyframe, asked at once
    assert f.packet(7, VP8, 150, 180000, VP8_DELTA, 1.0).outgoing == []  # waits for it
    resumed = f.packet(7, VP8, 151, 186000, VP8_KEY, 1.0).outgoing[0]
    assert resumed.sequence_number == out.sequence_number + 1  # no gap for the paused packets
    assert resumed.timestamp == out.timestamp + 90000  # the clock ran on for the second
    # A late packet from before the pause is dropped: its number is taken.
    assert f.packet(7, VP8, 120, 100000, VP8_DELTA, 1.0).outgoing == []


def test_pause_is_per_receiver() -> None:
    bob, carol = section(2, "2"), section(3, "2")
    f = forwarding(bob, carol)
    f.pause(2, {7}, paused=True)
    out = f.packet(7, VP8, 1, 0, VP8_KEY, 0.0).outgoing
    assert [o.section for o in out] == [carol]


def test_a_receiver_without_the_senders_codec_gets_nothing() -> None:
    vp8_only = section()
    f = forwarding(vp8_only)
    sps = bytes([0x67, 0x42, 0xE0, 0x1F]) + bytes(8)  # an H.264 SPS starts a keyframe
    assert keyframe_start(H264, sps)
    assert f.packet(7, H264, 1, 0, sps, 0.0).outgoing == []


def test_keyframes_are_asked_for_on_subscribe_and_again_while_waiting() -> None:
    f = Forwarding()
    f.add_source(7)
    assert f.subscribe(2, [section()]) == [7]
    f.requested(7, 0.0)
    assert f.packet(7, VP8, 1, 0, VP8_DELTA, 0.5).keyframe_wanted is False
    assert f.packet(7, VP8, 2, 0, VP8_DELTA, KEYFRAME_RETRY_S + 0.1).keyframe_wanted is True
    # A receiver's own request (PLI) passes, but not twice in a row at once.
    f.packet(7, VP8, 3, 0, VP8_KEY, 2.0)
    assert f.feedback(2, "2", 3.0) == 7
    assert f.feedback(2, "2", 3.01) is None
    # A re-negotiation that keeps the section keeps its state: no new request.
    assert f.subscribe(2, [section()]) == []


def test_codecs_forwarded_and_keyframe_starts() -> None:
    assert codec_key("vp8", {}) == VP8
    assert codec_key("H264", {"packetization-mode": 1}) == H264
    assert codec_key("H264", {}) is None  # mode 0 (single NAL units) is not negotiated
    assert codec_key("VP9", {}) is None
    assert keyframe_start(VP8, VP8_KEY) and not keyframe_start(VP8, VP8_DELTA)
    idr_fragment = bytes([0x7C, 0x85]) + bytes(8)  # FU-A, start bit, IDR
    assert keyframe_start(H264, idr_fragment)
    assert not keyframe_start(H264, bytes([0x7C, 0x05]) + bytes(8))  # a later fragment
    assert not keyframe_start(H264, bytes([0x41]) + bytes(8))  # a non-IDR slice
    sps, pps = bytes([0x67, 0x42, 0xE0, 0x1F]), bytes([0x68, 0xCE, 0x3C, 0x80])
    stap = bytes([0x78]) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert keyframe_start(H264, stap)
    assert not keyframe_start(H264, bytes([0x78, 0x00, 0x04]) + pps)  # parameters, no SPS


def test_a_sources_average_bitrate_is_measured_per_window() -> None:
    f = forwarding(section())
    for i in range(20):  # 20 packets of 1000 bytes over 2 s
        f.packet(7, VP8, i, 0, VP8_KEY + bytes(1000 - len(VP8_KEY)), i * 0.1)
    assert f.bitrate(7, 2.0) == 20 * 1000 * 8 // 2
    assert f.bitrate(7, 10.0) == 0  # nothing since


def test_a_receivers_nack_names_the_sources_own_numbers() -> None:
    f = forwarding(section())
    f.packet(7, VP8, 100, 0, VP8_KEY, 0.0)
    f.pause(2, {7}, paused=True)
    f.pause(2, {7}, paused=False)
    resumed = f.packet(7, VP8, 500, 9000, VP8_KEY, 1.0).outgoing[0]
    f.packet(7, VP8, 501, 9000, VP8_MIDDLE, 1.0)
    assert resumed.sequence_number == 101
    # 101 and 102 went out as 500 and 501; 100 was before the resume, 103 never went out.
    assert f.lost(2, "2", [100, 101, 102, 103]) == (7, [500, 501])
    assert f.lost(2, "9", [101]) == (None, [])
