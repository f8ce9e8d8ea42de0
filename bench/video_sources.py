"""Per-frame costs of the video groundwork at 640x480, each beside a baseline from this run.

- pattern: PatternSource.draw() (move the box, redraw the counter, copy into a fresh frame).
  Baseline: what aiortc's own VideoStreamTrack does for each frame (a fresh 640x480 frame
  whose planes are filled from zero bytes).
- view conversions: FrameConverter to I420, RGB24 and JPEG, full size and scaled to 320x240.
  Baseline: frame.to_ndarray() (PyAV's own copy-out of the same frame).
- keyframe sizes: vp8_payload_size and h264_payload_size on a real keyframe's first packet.

Run: python -m bench.video_sources [--frames 300] [--out FILE]; prints JSON (ns a frame, the
median of five rounds).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
from chime.v1 import video_pb2
from chimed.devices.video_inputs import PatternSource
from chimed.media import video_bitstream
from chimed.media.video_frames import FrameConverter

WIDTH, HEIGHT = 640, 480


def ns_per_call(call: Callable[[], object], count: int, rounds: int = 5) -> int:
    """Median over `rounds` of the mean nanoseconds of one call, `count` calls a round."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(count):
            call()
        results.append((time.perf_counter_ns() - start) / count)
    return round(statistics.median(results))


def aiortc_blank_frame() -> av.VideoFrame:
    """aiortc.mediastreams.VideoStreamTrack.recv()'s picture, without its pacing."""
    frame = av.VideoFrame(width=WIDTH, height=HEIGHT)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


def first_packet(codec: str, frame: av.VideoFrame) -> bytes:
    encoder: Any = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.framerate = 15
    frame.pts = 0
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)][:1])


def run(frames: int) -> dict[str, Any]:
    pattern = PatternSource(WIDTH, HEIGHT, label="bench@example.com")
    picture = pattern.draw()
    results: dict[str, Any] = {
        "size": f"{WIDTH}x{HEIGHT}",
        "pattern_ns_per_frame": ns_per_call(pattern.draw, frames),
        "baseline_aiortc_blank_frame_ns": ns_per_call(aiortc_blank_frame, frames),
        "baseline_to_ndarray_ns": ns_per_call(picture.to_ndarray, frames),
    }
    formats = {"i420": video_pb2.FRAME_FORMAT_I420, "rgb24": video_pb2.FRAME_FORMAT_RGB24}
    formats["jpeg"] = video_pb2.FRAME_FORMAT_JPEG
    for name, frame_format in formats.items():
        for label, box in (("", (0, 0)), ("_320x240", (320, 240))):
            convert = FrameConverter(frame_format, *box).convert
            key = f"convert_{name}{label}_ns_per_frame"
            results[key] = ns_per_call(functools.partial(convert, picture), frames // 3)
    vp8 = b"\x10" + first_packet("libvpx", picture)[:64]
    annexb = first_packet("libx264", picture)
    sps = next(u for u in annexb.split(b"\x00\x00\x01") if u and u[0] & 0x1F == 7)
    results["vp8_keyframe_size_ns"] = ns_per_call(
        lambda: video_bitstream.vp8_payload_size(vp8), frames * 10
    )
    results["h264_sps_size_ns"] = ns_per_call(
        lambda: video_bitstream.h264_payload_size(sps.rstrip(b"\x00")), frames * 10
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.video_sources")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    text = json.dumps(run(args.frames), indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
