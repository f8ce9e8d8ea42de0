"""The decoder gate of a received video stream, in memory: nothing reaches the decoder while
no view is bound, sizes come from keyframe headers, keyframes are asked for, and decoding
starts on a keyframe."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

from chimed.media.decode_gate import VideoDecodeGate

from tests.test_video_frames import encoded


@dataclass
class Codec:
    mimeType: str


@dataclass
class Frame:
    data: bytes


VP8 = Codec("video/VP8")


def test_a_stream_nobody_views_is_dropped_but_sized() -> None:
    inner: queue.Queue[Any] = queue.Queue()
    sizes: list[tuple[int, int]] = []
    asked: list[int] = []
    gate = VideoDecodeGate(inner, lambda w, h: sizes.append((w, h)), lambda: asked.append(1))
    key, inter = encoded("libvpx", (320, 240))[:2]
    gate.put((VP8, Frame(inter)))  # a stream joined mid-way: no size yet, ask for a keyframe
    assert asked == [1] and sizes == []
    gate.put((VP8, Frame(key)))
    gate.put((VP8, Frame(inter)))
    assert sizes == [(320, 240)]
    assert inner.empty() and gate.dropped == 3
    gate.put(None)  # the end of the stream always passes
    assert inner.get_nowait() is None


def test_decoding_starts_on_a_keyframe() -> None:
    inner: queue.Queue[Any] = queue.Queue()
    asked: list[int] = []
    gate = VideoDecodeGate(inner, lambda w, h: None, lambda: asked.append(1))
    key, inter = encoded("libvpx", (160, 120))[:2]
    gate.put((VP8, Frame(key)))
    gate.set_decoding(True)
    gate.put((VP8, Frame(inter)))  # cannot be decoded without its keyframe
    assert inner.empty() and len(asked) == 1
    gate.put((VP8, Frame(key)))
    gate.put((VP8, Frame(inter)))
    assert [item[1].data for item in (inner.get_nowait(), inner.get_nowait())] == [key, inter]
    gate.set_decoding(False)
    gate.put((VP8, Frame(inter)))
    assert inner.empty()
