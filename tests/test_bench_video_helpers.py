"""The video benchmarks' helpers: frame numbers read back through the codecs and scalings the
bench uses, and the Y4M file Chromium's fake camera plays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from chimed.devices.video_inputs import PatternSource
from chimed.media.video_frames import I420, JPEG, FrameConverter

from bench.video import feed_latency
from bench.video_marks import (
    MODULO,
    Arrivals,
    MarkedPattern,
    latencies,
    read_frame,
    read_i420,
    stamp,
    unwrap,
)
from bench.y4m import pattern_y4m


def marked(n: int) -> av.VideoFrame:
    frame = PatternSource(640, 480, label="marks@example.com").draw()
    stamp(frame, n)
    return frame


@pytest.mark.parametrize("n", [0, 1, 4660, MODULO - 1])
def test_a_stamped_number_reads_back_from_i420_at_full_and_quarter_size(n: int) -> None:
    for box in ((0, 0), (320, 240), (160, 120)):
        picture = FrameConverter(I420, *box).convert(marked(n))
        assert read_i420(picture.data, picture.width, picture.height) == n


def test_numbers_survive_vp8_and_jpeg() -> None:
    encoder: Any = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 480, "yuv420p"
    encoder.bit_rate = 300_000  # below what aiortc starts a stream at
    decoder: Any = av.CodecContext.create("libvpx", "r")
    numbers = [7, 8, 9, 300, 301]
    decoded: list[int | None] = []
    for pts, n in enumerate(numbers):
        frame = marked(n)
        frame.pts = pts
        for packet in encoder.encode(frame):
            decoded.extend(read_frame(f) for f in decoder.decode(packet))
    assert decoded == numbers
    jpeg = FrameConverter(JPEG).convert(marked(1234))
    (picture,) = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpeg.data))
    assert read_frame(picture) == 1234


def test_a_picture_without_marks_reads_as_none() -> None:
    picture = FrameConverter(I420).convert(PatternSource(640, 480).draw())
    assert read_i420(picture.data, 640, 480) is None
    assert read_i420(b"\x10" * (640 * 480), 640, 480) is None  # black: no complement row
    assert read_i420(picture.data, 32, 24) is None  # too small to hold the blocks


def test_numbers_unwrap_in_order_and_latencies_pair_send_and_first_arrival() -> None:
    assert unwrap(3, MODULO - 2) == MODULO + 3
    assert unwrap(MODULO - 1, 2) == -1
    assert unwrap(5, 4) == 5
    arrivals = Arrivals()
    for n, t in ((MODULO - 1, 1.0), (MODULO - 1, 1.5), (None, 1.6), (0, 2.0)):
        arrivals.add(n, t)
    assert arrivals.first == {MODULO - 1: 1.0, MODULO: 2.0}
    assert arrivals.unreadable == 1
    sent = {MODULO - 1: 0.9, MODULO: 1.75, MODULO + 1: 2.1}
    assert latencies(sent, arrivals.first) == pytest.approx([0.1, 0.25])


def test_the_marked_pattern_numbers_its_frames_from_zero() -> None:
    pattern = MarkedPattern(320, 240)
    assert [read_frame(pattern.draw()) for _ in range(3)] == [0, 1, 2]


def test_the_y4m_file_holds_the_pattern_at_its_size_and_rate(tmp_path: Path) -> None:
    path = tmp_path / "pattern.y4m"
    assert pattern_y4m(path, 640, 480, 15, 1.0, "chromium") == 15
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 15
        frames = list(container.decode(stream))
    assert len(frames) == 15
    assert {(f.width, f.height) for f in frames} == {(640, 480)}
    expected = PatternSource(640, 480, 15, "chromium")
    first = FrameConverter(I420).convert(expected.draw()).data
    assert FrameConverter(I420).convert(frames[0]).data == first
    assert FrameConverter(I420).convert(frames[1]).data != first  # the box moved


def test_feed_latency_takes_the_middle_of_the_feeds_around_the_sent_frame() -> None:
    fed = {n: n / 60 for n in range(10)}  # fed at 60 fps
    arrivals = Arrivals()
    arrivals.add(0, 0.05)  # before the window: not counted
    arrivals.add(4, 4 / 60 + 0.050)  # sent between the feeds of 4 and 5
    arrivals.add(8, 8 / 60 + 0.050)
    arrivals.add(9, 1.0)  # the last frame fed: no next feed to bound it
    result = feed_latency(fed, arrivals, start=3 / 60, feed_fps=60)
    half = 1000 / 120
    assert result["n"] == 2
    assert result["upper_bound_p50_ms"] == pytest.approx(50, abs=0.01)
    assert result["lower_bound_p50_ms"] == pytest.approx(50 - 2 * half, abs=0.01)
    assert result["p50_ms"] == pytest.approx(50 - half, abs=0.01)
    assert result["resolution_ms"] == round(half, 1)
