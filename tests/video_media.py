"""Video files for the tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, frames: int, size: tuple[int, int] = (160, 120), rate: int = 30
) -> None:
    """A small VP8 WebM whose frame i is uniformly grey at level 16 + 8 * i."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            grey = np.full((size[1], size[0]), 16 + 8 * i, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(grey, format="gray").reformat(format="yuv420p")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
