"""YUV4MPEG2 files: the test pattern as Chromium's fake camera
(--use-file-for-fake-video-capture), which loops the file at its frame rate."""

from __future__ import annotations

import os
from collections.abc import Iterable

import av
from chimed.devices.video_inputs import PatternSource
from chimed.media.video_frames import I420, FrameConverter


def write_y4m(path: str | os.PathLike[str], frames: Iterable[av.VideoFrame], fps: int) -> int:
    """Write the frames (all of one size) as 4:2:0 planes; returns how many were written."""
    convert = FrameConverter(I420).convert
    count = 0
    with open(path, "wb") as out:
        for frame in frames:
            picture = convert(frame)
            if count == 0:
                # What FFmpeg writes for yuv420p: progressive, square pixels, MPEG-2 siting.
                out.write(
                    f"YUV4MPEG2 W{picture.width} H{picture.height} F{fps}:1 Ip A1:1 "
                    "C420mpeg2 XYSCSS=420MPEG2\n".encode()
                )
            out.write(b"FRAME\n" + picture.data)
            count += 1
    return count


def pattern_y4m(
    path: str | os.PathLike[str], width: int, height: int, fps: int, seconds: float, label: str
) -> int:
    """`seconds` of PatternSource (its box sweeps, its counter counts) as a Y4M file."""
    pattern = PatternSource(width, height, fps, label)
    return write_y4m(path, (pattern.draw() for _ in range(round(seconds * fps))), fps)
