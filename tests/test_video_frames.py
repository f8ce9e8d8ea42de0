"""What a view gets (conversion, scaling, rate limiting) and sizes read from keyframe headers."""

from __future__ import annotations

import random
from typing import Any

import av
import numpy as np
import pytest
from chime.v1 import video_pb2
from chimed.devices.video_inputs import PatternSource
from chimed.errors import InvalidArgument
from chimed.media import video_bitstream as bitstream
from chimed.media.video_frames import FrameConverter, RateLimiter, fit_within

I420 = video_pb2.FRAME_FORMAT_I420
RGB24 = video_pb2.FRAME_FORMAT_RGB24
JPEG = video_pb2.FRAME_FORMAT_JPEG


def pattern_frame(width: int = 640, height: int = 480) -> av.VideoFrame:
    return PatternSource(width, height, label="viewer test").draw()


def y_plane(frame: av.VideoFrame) -> np.ndarray:
    return frame.reformat(format="yuv420p").to_ndarray()[: frame.height].astype(np.int16)


# --- conversion --------------------------------------------------------------------------------


def test_fit_within_never_scales_up_and_keeps_the_aspect() -> None:
    assert fit_within(640, 480) == (640, 480)
    assert fit_within(640, 480, 2000, 2000) == (640, 480)
    assert fit_within(640, 480, 320, 0) == (320, 240)
    assert fit_within(640, 480, 0, 120) == (160, 120)
    assert fit_within(1280, 720, 640, 640) == (640, 360)
    assert fit_within(640, 480, 100, 100) == (100, 74)  # 75, made even for 4:2:0
    assert fit_within(4000, 10, 20, 0) == (20, 2)


def test_i420_round_trip_keeps_the_picture() -> None:
    frame = pattern_frame()
    out = FrameConverter(I420).convert(frame)
    assert (out.width, out.height, len(out.data)) == (640, 480, 640 * 480 * 3 // 2)
    back = av.VideoFrame.from_ndarray(
        np.frombuffer(out.data, np.uint8).reshape(720, 640), format="yuv420p"
    )
    assert np.array_equal(y_plane(back), y_plane(frame))


def test_rgb24_scaled_round_trip() -> None:
    frame = pattern_frame()
    out = FrameConverter(RGB24, max_width=320).convert(frame)
    assert (out.width, out.height, len(out.data)) == (320, 240, 320 * 240 * 3)
    rgb = np.frombuffer(out.data, np.uint8).reshape(240, 320, 3)
    original = frame.reformat(320, 240, format="rgb24").to_ndarray()
    assert np.abs(rgb.astype(np.int16) - original).max() <= 2
    assert rgb[5, 5, 0] > 150 and rgb[5, 315, 2] > 150  # white bar left, blue bar right


@pytest.mark.parametrize(
    ("max_width", "max_height", "size"), [(0, 0, (640, 480)), (0, 240, (320, 240))]
)
def test_jpeg_decodes_to_the_size_and_picture(
    max_width: int, max_height: int, size: tuple[int, int]
) -> None:
    frame = pattern_frame()
    converter = FrameConverter(JPEG, max_width, max_height)
    first, second = converter.convert(frame), converter.convert(frame)
    assert first == second and first.data[:2] == b"\xff\xd8"
    decoded = av.CodecContext.create("mjpeg", "r").decode(av.Packet(first.data))[0]
    assert (decoded.width, decoded.height) == (first.width, first.height) == size
    expected = frame.reformat(*size, format="gray").to_ndarray().astype(np.int16)
    assert np.abs(decoded.to_ndarray(format="gray").astype(np.int16) - expected).mean() < 4


def test_converter_follows_size_changes_and_rejects_bad_formats() -> None:
    converter = FrameConverter(JPEG, max_width=200)
    for width, height in ((640, 480), (320, 180), (160, 120)):
        out = converter.convert(pattern_frame(width, height))
        decoded = av.CodecContext.create("mjpeg", "r").decode(av.Packet(out.data))[0]
        assert (decoded.width, decoded.height) == fit_within(width, height, 200)
    odd = av.VideoFrame.from_ndarray(np.zeros((61, 101, 3), np.uint8), format="rgb24")
    assert len(FrameConverter(RGB24).convert(odd).data) == 101 * 61 * 3
    i420 = FrameConverter(I420).convert(odd)  # 4:2:0 needs even sides: one column, one row less
    assert (i420.width, i420.height, len(i420.data)) == (100, 60, 9000)
    with pytest.raises(InvalidArgument, match="got FRAME_FORMAT_UNSPECIFIED"):
        FrameConverter(video_pb2.FRAME_FORMAT_UNSPECIFIED)
    with pytest.raises(InvalidArgument, match="got 9"):
        FrameConverter(9)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_width"):
        FrameConverter(I420, max_width=-1)


# --- rate limiting -----------------------------------------------------------------------------


def passed(limiter: RateLimiter, times: list[float]) -> list[float]:
    return [t for t in times if limiter.allow(t)]


def test_rate_limiter_passes_5_of_15_fps() -> None:
    times = [round(k * 90000 / 15) / 90000 for k in range(45)]  # 3 s at 15 fps, 90 kHz pts
    kept = passed(RateLimiter(5), times)
    assert len(kept) == 15
    assert kept == times[::3]


def test_rate_limiter_keeps_close_to_the_limit_and_restarts() -> None:
    thirty = [k / 30 for k in range(60)]
    assert len(passed(RateLimiter(25), thirty)) == 50
    assert passed(RateLimiter(0), thirty) == thirty
    assert len(passed(RateLimiter(30), thirty)) == 60
    limiter = RateLimiter(5)
    assert passed(limiter, [0.0, 0.1, 0.2]) == [0.0, 0.2]
    assert passed(limiter, [10.0, 10.1, 10.2]) == [10.0, 10.2]  # after a pause
    assert passed(limiter, [1.0, 1.1, 1.2]) == [1.0, 1.2]  # time went back (a looped file)
    with pytest.raises(InvalidArgument, match="max_fps"):
        RateLimiter(-1)


# --- keyframe headers: VP8 ---------------------------------------------------------------------


def encoded(codec: str, size: tuple[int, int], frames: int = 2, **options: str) -> list[bytes]:
    """`frames` frames of a moving pattern encoded at `size`, one bytes object each."""
    encoder: Any = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = size
    encoder.pix_fmt = options.pop("pix_fmt", "yuv420p")
    encoder.framerate = 15
    encoder.options = options
    source = PatternSource(640, 480)
    out: list[bytes] = []
    for index in range(frames):
        frame = source.draw().reformat(*size, format=encoder.pix_fmt)
        frame.pts = index
        out.extend(bytes(p) for p in encoder.encode(frame))
    out.extend(bytes(p) for p in encoder.encode(None))
    return out


VP8_SIZES = [(64, 48), (320, 180), (641, 359)]


@pytest.mark.parametrize("size", VP8_SIZES)
def test_vp8_keyframe_sizes_through_rtp_descriptors(size: tuple[int, int]) -> None:
    key, inter = encoded("libvpx", size)[:2]
    assert bitstream.vp8_frame_size(key) == size
    assert bitstream.vp8_frame_size(inter) is None
    descriptors = [
        b"\x10",  # S=1, PID 0
        b"\x90\x80\x05",  # X, I with a 7-bit picture id
        b"\x90\xe0\x81\x23\x07\x40",  # X, I (15-bit), L, T
        b"\x90\x10\x20",  # X, K only
    ]
    for descriptor in descriptors:
        assert bitstream.vp8_payload_size(descriptor + key[:40]) == size
        assert bitstream.vp8_payload_size(descriptor + inter[:40]) is None
    assert bitstream.vp8_payload_size(b"\x00" + key[:40]) is None  # not a partition start
    assert bitstream.vp8_payload_size(b"\x11" + key[:40]) is None  # partition 1


# --- keyframe headers: H.264 -------------------------------------------------------------------


def nal_units(stream: bytes) -> list[bytes]:
    return [u.rstrip(b"\x00") for u in stream.split(b"\x00\x00\x01")[1:] if u]


def stap_a(*units: bytes) -> bytes:
    return bytes([0x78]) + b"".join(len(u).to_bytes(2, "big") + u for u in units)


def fu_a_start(unit: bytes) -> bytes:
    return bytes([unit[0] & 0xE0 | 28, 0x80 | unit[0] & 0x1F]) + unit[1:]


H264_CASES = [
    ((176, 144), {"profile": "baseline"}),  # constrained baseline, no cropping
    ((100, 60), {"profile": "baseline"}),  # cropped right and bottom
    ((320, 180), {}),  # High profile: chroma format and scaling matrix fields
    ((1920, 1080), {"preset": "ultrafast"}),  # the classic 1088 -> 1080 crop
    ((101, 61), {"pix_fmt": "yuv444p"}),  # High 4:4:4: crop units of one pixel
]


@pytest.mark.parametrize(("size", "options"), H264_CASES)
def test_h264_sps_sizes_through_rtp_packetizations(
    size: tuple[int, int], options: dict[str, str]
) -> None:
    packets = encoded("libx264", size, frames=3, **{"tune": "zerolatency", **options})
    assert bitstream.h264_annexb_size(packets[0]) == size
    units = nal_units(packets[0])
    sps = next(u for u in units if u[0] & 0x1F == 7)
    pps = next(u for u in units if u[0] & 0x1F == 8)
    idr = next(u for u in units if u[0] & 0x1F == 5)
    assert bitstream.h264_sps_size(sps) == size
    assert bitstream.h264_payload_size(sps) == size
    assert bitstream.h264_payload_size(stap_a(sps, pps)) == size
    assert bitstream.h264_payload_size(stap_a(pps, sps)) == size
    assert bitstream.h264_payload_size(fu_a_start(sps)) == size
    assert bitstream.h264_payload_size(fu_a_start(idr)) is None
    assert bitstream.h264_payload_size(pps) is None
    later = [u for p in packets[1:] for u in nal_units(p)]
    assert later and all(bitstream.h264_payload_size(u) is None for u in later)
    assert bitstream.h264_annexb_size(packets[1]) is None


def test_emulation_prevention_bytes_are_removed() -> None:
    stream = encoded("libx264", (176, 144), 1, profile="baseline")[0]
    sps = next(u for u in nal_units(stream) if u[0] & 0x1F == 7)
    # Zero constraint flags and level put 00 00 before the size fields; an 03 after them is an
    # emulation prevention byte, which a decoder drops whatever follows it.
    crafted = sps[:2] + b"\x00\x00" + sps[4:]
    escaped = sps[:2] + b"\x00\x00\x03" + sps[4:]
    assert bitstream.h264_sps_size(escaped) == bitstream.h264_sps_size(crafted) == (176, 144)


def test_size_watcher_reports_each_new_size_once() -> None:
    small, small_inter = encoded("libvpx", (320, 180))[:2]
    large = encoded("libvpx", (640, 360), 1)[0]
    vp8 = bitstream.SizeWatcher("vp8")
    payloads = [small, small_inter, small, large, small_inter, small]
    seen = [vp8.feed(b"\x10" + p[:20]) for p in payloads]
    assert seen == [(320, 180), None, None, (640, 360), None, (320, 180)]
    assert vp8.size == (320, 180)
    h264 = bitstream.SizeWatcher("H264")
    units = nal_units(encoded("libx264", (176, 144), 1)[0])
    seen = [h264.feed(u) for u in units]  # SPS, PPS, SEI, IDR slices
    assert seen[0] == (176, 144) and seen[1:] == [None] * (len(units) - 1)
    with pytest.raises(ValueError, match="AV1"):
        bitstream.SizeWatcher("AV1")


def test_garbage_gives_none_and_never_raises() -> None:
    rng = random.Random(11)
    key = encoded("libvpx", (320, 180), 1)[0]
    sps = next(u for u in nal_units(encoded("libx264", (320, 180), 1)[0]) if u[0] & 0x1F == 7)
    parsers = [
        bitstream.vp8_frame_size,
        bitstream.vp8_payload_size,
        bitstream.h264_sps_size,
        bitstream.h264_payload_size,
        bitstream.h264_annexb_size,
    ]
    samples: list[bytes] = [b"", b"\x10", b"\x90", b"\x90\x80", b"\x78\x00", b"\x7c", b"\x67"]
    samples += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))) for _ in range(600)]
    for original in (key[:30], b"\x10" + key[:30], sps, stap_a(sps)):
        for _ in range(300):
            mutated = bytearray(original[: rng.randrange(1, len(original) + 1)])
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            samples.append(bytes(mutated))
    samples += [b"\x67" + b"\x00" * 40, b"\x67" + b"\xff" * 40, sps[:5], sps + b"\xff" * 8]
    sizes = []
    for sample in samples:
        for parse in parsers:
            size = parse(sample)
            assert size is None or (0 < size[0] <= 16384 and 0 < size[1] <= 16384)
            sizes.append(size)
    assert None in sizes
    assert bitstream.h264_sps_size(b"\x67" + b"\x00" * 40) is None
    assert bitstream.vp8_frame_size(b"\x00\x00\x00" + b"\x9d\x01\x2a" + b"\x00" * 4) is None


def test_jpeg_of_a_full_range_frame_leaves_the_frame_alone() -> None:
    """A frame that is already yuvj420p is shared with the sender and other views: the JPEG
    view must not restamp it."""
    frame = PatternSource(64, 48).draw().reformat(format="yuvj420p")
    frame.pts = 5
    out = FrameConverter(JPEG).convert(frame)
    assert out.data.startswith(b"\xff\xd8") and (out.width, out.height) == (64, 48)
    assert frame.pts == 5
