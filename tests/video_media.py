"""Video files and X servers for the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest


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


@dataclass
class Display:
    name: str
    process: subprocess.Popen[bytes]


def run_xvfb() -> Iterator[Display]:
    """An Xvfb server of its own on a free display number, the root window a plain red."""
    if shutil.which("Xvfb") is None or shutil.which("xsetroot") is None:
        pytest.skip("Xvfb and xsetroot are not installed (Debian: xvfb, x11-xserver-utils)")
    read, write = os.pipe()
    # -noreset: else the server resets the root colour when xsetroot disconnects.
    command = "Xvfb -screen 0 320x240x24 -nolisten tcp -noreset -displayfd".split()
    process = subprocess.Popen(
        [*command, str(write)],
        pass_fds=(write,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        name = ":" + pipe.readline().strip()
    try:
        env = {**os.environ, "DISPLAY": name}
        subprocess.run(["xsetroot", "-solid", "#ff0000"], env=env, check=True, timeout=10)
        yield Display(name, process)
    finally:
        process.terminate()
        process.wait(10)
