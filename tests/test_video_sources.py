"""Video sources and video device ids: pattern, file, fed frames, X11 screen, V4L2 ids."""

from __future__ import annotations

import fractions
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from chime.v1 import types_pb2, video_pb2
from chimed.devices import video_ids, video_listing, video_opening
from chimed.devices.video_font import text_mask
from chimed.devices.video_inputs import (
    FileSource,
    FramesSource,
    PatternSource,
    ScreenSource,
    VideoInput,
)
from chimed.errors import InvalidArgument, NotFound

from tests.video_media import Display, write_video


def luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as sent (limited range: black is 16)."""
    return frame.reformat(format="yuv420p").to_ndarray()[: frame.height]


async def take(source: VideoInput, count: int) -> list[av.VideoFrame]:
    return [await source.recv() for _ in range(count)]


# --- font and pattern --------------------------------------------------------------------------


def test_font_has_a_distinct_glyph_for_every_printable_character() -> None:
    glyphs = {text_mask(chr(c)).tobytes() for c in range(32, 127)}
    assert len(glyphs) == 95
    assert not text_mask(" ").any()
    assert text_mask("\u00e9").tobytes() == text_mask("?").tobytes()
    assert text_mask("ab", scale=3).shape == (21, 36)


async def test_pattern_frames_are_paced_i420_at_90khz() -> None:
    source = PatternSource(320, 240, fps=30, label="bot")
    frames = await take(source, 4)
    source.stop()
    assert [(f.width, f.height, f.format.name) for f in frames] == [(320, 240, "yuv420p")] * 4
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000]
    assert all(f.time_base == fractions.Fraction(1, 90000) for f in frames)
    with pytest.raises(MediaStreamError):
        await source.recv()


async def test_pattern_moves_and_counts_and_shows_its_label() -> None:
    alice = await take(PatternSource(label="alice@example.com"), 3)
    bob = await take(PatternSource(label="bob"), 3)
    pictures = [luma(f) for f in alice]
    bars = slice(0, 320)  # the top two thirds: bars and the moving box
    band = slice(320, 480)  # the bottom third: label and counter
    assert not np.array_equal(pictures[0][bars], pictures[1][bars])
    assert not np.array_equal(pictures[1][band], pictures[2][band])  # the counter
    # The label rows differ between attendees; the bars of the same frame number do not.
    assert np.array_equal(pictures[2][bars], luma(bob[2])[bars])
    label_rows = slice(328, 356)
    assert not np.array_equal(pictures[2][label_rows], luma(bob[2])[label_rows])
    assert (pictures[2][label_rows] > 200).sum() > (luma(bob[2])[label_rows] > 200).sum()


def test_pattern_rejects_odd_and_oversized_sizes() -> None:
    with pytest.raises(InvalidArgument, match="width"):
        PatternSource(641, 480)
    with pytest.raises(InvalidArgument, match="height"):
        PatternSource(640, 8192)
    with pytest.raises(InvalidArgument, match="fps"):
        PatternSource(fps=0)


# --- files -------------------------------------------------------------------------------------


async def test_file_source_plays_once_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "five.webm"
    write_video(path, 5)
    source = FileSource(path)
    assert (source.width, source.height, source.fps) == (160, 120, 30)
    frames = await take(source, 5)
    levels = [int(np.median(luma(f))) for f in frames]
    assert levels == sorted(levels) and levels[-1] - levels[0] >= 24
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000, 12000]
    with pytest.raises(MediaStreamError):
        await source.recv()
    assert source.readyState == "ended"


async def test_file_source_loops(tmp_path: Path) -> None:
    path = tmp_path / "three.webm"
    write_video(path, 3)
    source = FileSource(path, loop=True)
    levels = [int(np.median(luma(f))) for f in await take(source, 7)]
    source.stop()
    assert levels[0:3] == levels[3:6] and levels[6] == levels[0]


async def test_looped_file_that_goes_away_ends_the_track(tmp_path: Path) -> None:
    path = tmp_path / "three.webm"
    write_video(path, 3)
    source = FileSource(path, loop=True)
    path.unlink()  # the open pass plays on; the next one cannot start
    with pytest.raises(MediaStreamError):
        for _ in range(10):
            await source.recv()
    assert source.readyState == "ended"
    assert source.error == f"video file {str(path)!r} does not exist"


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        FileSource(tmp_path / "missing.webm")
    garbage = tmp_path / "garbage.webm"
    garbage.write_bytes(b"not a video at all" * 10)
    with pytest.raises(InvalidArgument, match="cannot decode"):
        FileSource(garbage)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), "s16", "mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
    with pytest.raises(InvalidArgument, match="no video stream"):
        FileSource(audio)


# --- fed frames --------------------------------------------------------------------------------


async def test_frames_source_sends_the_newest_frame_and_repeats_it() -> None:
    source = FramesSource(32, 16, fps=30)
    first = luma(await source.recv())
    assert first.shape == (16, 32) and (first == 16).all()  # black before any frame
    gradient = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    chroma = np.full(16 * 8 * 2, 128, dtype=np.uint8)
    source.feed(gradient.tobytes() + chroma.tobytes(), video_pb2.FRAME_FORMAT_I420)
    sent = [luma(f) for f in await take(source, 2)]
    assert np.array_equal(sent[0], gradient) and np.array_equal(sent[1], gradient)
    red = np.zeros((16, 32, 3), dtype=np.uint8)
    red[..., 0] = 255
    source.feed(red.tobytes(), video_pb2.FRAME_FORMAT_RGB24)
    frame = await source.recv()
    source.stop()
    rgb = frame.to_ndarray(format="rgb24")
    assert rgb[..., 0].min() > 230 and rgb[..., 1:].max() < 25
    assert source.fed == 2


def test_frames_source_rejects_wrong_sizes_and_formats() -> None:
    source = FramesSource(32, 16)
    with pytest.raises(InvalidArgument, match="frame is 769 bytes; I420 at 32x16 is 768"):
        source.feed(bytes(32 * 16 * 3 // 2 + 1), video_pb2.FRAME_FORMAT_I420)
    with pytest.raises(InvalidArgument, match="RGB24 at 32x16 is 1536"):
        source.feed(bytes(768), video_pb2.FRAME_FORMAT_RGB24)
    with pytest.raises(InvalidArgument, match="got FRAME_FORMAT_JPEG"):
        source.feed(b"\xff\xd8", video_pb2.FRAME_FORMAT_JPEG)
    with pytest.raises(InvalidArgument, match="got 42"):
        source.feed(b"", 42)  # type: ignore[arg-type]
    assert source.fed == 0


# --- X11 ---------------------------------------------------------------------------------------


@pytest.mark.xvfb
async def test_screen_source_captures_the_display(xvfb: Display) -> None:
    source = video_opening.open_video_input(f"x11:{xvfb.name}?fps=10")
    assert isinstance(source, ScreenSource)
    assert source.wait_first(10)
    frames = await take(source, 2)
    source.stop()
    assert [(f.width, f.height) for f in frames] == [(320, 240)] * 2
    rgb = frames[1].to_ndarray(format="rgb24")
    assert rgb[..., 0].min() > 230 and rgb[..., 1:].max() < 25
    ids = [d.id for d in video_listing.video_devices()]
    assert f"x11:{xvfb.name}" in ids


@pytest.mark.xvfb
async def test_screen_source_crops_to_a_size(xvfb: Display) -> None:
    source = ScreenSource(xvfb.name, fps=10, size=(160, 120))
    frame = (await take(source, 1))[0]
    source.stop()
    assert (frame.width, frame.height) == (160, 120)


@pytest.mark.xvfb
async def test_screen_source_ends_when_the_server_goes(xvfb: Display) -> None:
    source = ScreenSource(xvfb.name, fps=10)
    assert source.wait_first(10)
    await source.recv()
    xvfb.process.terminate()
    xvfb.process.wait(10)
    with pytest.raises(MediaStreamError):
        for _ in range(100):  # the capture thread notices within a frame or two
            await source.recv()
    assert source.readyState == "ended"
    assert source.error == f"capture from {xvfb.name!r} failed: the device went away"


def test_screen_source_without_a_server() -> None:
    with pytest.raises(NotFound, match="x11grab"):
        video_opening.open_video_input("x11::4095")


# --- ids and listing ---------------------------------------------------------------------------


def test_parse_video_device_ids() -> None:
    parse = video_ids.parse
    pattern = parse("virtual:pattern")
    assert (pattern.width, pattern.height, pattern.fps) == (640, 480, 15)
    assert parse("virtual:pattern?width=320&height=180&fps=30").width == 320
    assert parse("virtual:file?path=%2Ftmp%2Fa%26b.mp4&loop=1").path == "/tmp/a&b.mp4"
    assert parse("virtual:file?path=/x.mp4").loop is False
    assert parse("virtual:frames?width=64&height=32").height == 32
    screen = parse("x11::99.0?fps=5")
    assert (screen.name, screen.fps, screen.width) == (":99.0", 5, None)
    assert parse("v4l2:/dev/video2?width=1280&height=720").name == "/dev/video2"


@pytest.mark.parametrize(
    ("device_id", "error", "message"),
    [
        ("virtual:pattern?width=abc", InvalidArgument, "width must be a whole number"),
        ("virtual:pattern?width=0", InvalidArgument, "width must be an even number"),
        ("virtual:pattern?height=479", InvalidArgument, "height must be an even number"),
        ("virtual:pattern?fps=0", InvalidArgument, "fps must be above 0"),
        ("virtual:pattern?fps=fast", InvalidArgument, "fps must be a number"),
        ("virtual:pattern?colour=red", InvalidArgument, "unknown parameter.*colour"),
        ("virtual:pattern?width", InvalidArgument, "malformed parameters"),
        ("virtual:file", InvalidArgument, "needs a path parameter"),
        ("virtual:file?path=/x.mp4&loop=2", InvalidArgument, "loop must be 0 or 1"),
        ("virtual:frames?height=0", InvalidArgument, "height must be an even number"),
        ("x11:99", InvalidArgument, "display must look like"),
        ("x11::0?width=640", InvalidArgument, "height is missing"),
        ("v4l2:video0", InvalidArgument, "device path like /dev/video0"),
        ("avf:FaceTime", InvalidArgument, "AVFoundation index like 0"),
        ("avf:0?zoom=2", InvalidArgument, "unknown parameter.*zoom"),
        ("virtual:hologram", NotFound, "unknown video device"),
        ("webcam:front", NotFound, "unknown video device"),
    ],
)
def test_bad_video_device_ids(device_id: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        video_opening.open_video_input(device_id)


def test_v4l2_camera_that_is_not_there() -> None:
    with pytest.raises(NotFound, match="no camera at /dev/video9: the device does not exist"):
        video_opening.open_video_input("v4l2:/dev/video9?fps=30")
    # A device node that is no camera gets as far as FFmpeg's V4L2 input, which refuses it.
    with pytest.raises(NotFound, match="cannot open video4linux2 device '/dev/null'"):
        video_opening.open_video_input("v4l2:/dev/null")


async def test_open_virtual_sources(tmp_path: Path) -> None:
    path = tmp_path / "clip.webm"
    write_video(path, 2, size=(64, 48))
    pattern = video_opening.open_video_input("virtual:pattern?width=64&height=48", label="x")
    assert isinstance(pattern, PatternSource) and pattern.label == "x"
    clip = video_opening.open_video_input(f"virtual:file?path={path}&loop=1")
    assert isinstance(clip, FileSource) and clip.loop
    frames = video_opening.open_video_input("virtual:frames?width=64&height=48&fps=5")
    assert isinstance(frames, FramesSource) and frames.fps == 5
    assert not video_opening.blocks("virtual:pattern?width=64&height=48")
    assert all(
        map(video_opening.blocks, ("x11::0", "v4l2:/dev/video0", f"virtual:file?path={path}"))
    )
    for source in (pattern, clip, frames):
        frame = await source.recv()
        source.stop()
        assert (frame.width, frame.height) == (64, 48)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS has AVFoundation cameras")
def test_avfoundation_camera_elsewhere_than_macos() -> None:
    """macOS cameras (avf:<index>) through FFmpeg's avfoundation input: parsed everywhere,
    listed and opened only where that input exists; here it is refused before any device."""
    parsed = video_ids.parse("avf:1?fps=30&width=1280&height=720")
    assert (parsed.scheme, parsed.name, parsed.fps) == ("avf", "1", 30.0)
    assert (parsed.width, parsed.height) == (1280, 720)
    assert video_opening.blocks("avf:0")
    with pytest.raises(NotFound, match="this FFmpeg has no avfoundation input"):
        video_opening.open_video_input("avf:0")
    with pytest.raises(NotFound, match="no AVFoundation here"):
        video_opening.check_present("avf:0")
    assert not [d for d in video_listing.video_devices() if d.id.startswith("avf:")]


def test_video_devices_list_the_virtual_sources() -> None:
    devices = {d.id: d for d in video_listing.video_devices()}
    for name in ("pattern", "file", "frames"):
        device = devices[f"virtual:{name}"]
        assert device.virtual and device.kind == types_pb2.MEDIA_KIND_VIDEO
        assert device.direction == types_pb2.DEVICE_DIRECTION_INPUT
    cameras = [d for d in devices.values() if d.id.startswith("v4l2:")]
    assert all(d.type == types_pb2.MEDIA_DEVICE_TYPE_VIDEO_EXTERNAL_CAMERA for d in cameras)
    assert len(cameras) == len(video_listing.cameras())
