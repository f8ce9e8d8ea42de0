"""A received video stream's paths, in memory: the jitter buffer releases a frame on its
last packet; the decoder gate lets nothing reach the decoder while no view is bound, reads
sizes from keyframe headers, asks for keyframes and starts decoding on one."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Any

from aiortc.rtp import RtpPacket
from chimed.media.decode_gate import VideoDecodeGate
from chimed.media.jitter import MarkerJitterBuffer

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


def rtp(seq: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(sequence_number=seq, timestamp=timestamp, marker=int(marker))
    packet._data = data  # type: ignore[attr-defined]  # noqa: SLF001 (what the receiver depayloads)
    return packet


def test_a_frame_is_released_on_its_last_packet() -> None:
    buffer = MarkerJitterBuffer()
    assert buffer.add(rtp(10, 900, False, b"a")) == (False, None)
    _, frame = buffer.add(rtp(11, 900, True, b"b"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 900)
    # Out of order: the frame is whole when its missing middle packet comes.
    assert buffer.add(rtp(12, 1800, False, b"c"))[1] is None
    assert buffer.add(rtp(14, 1800, True, b"e"))[1] is None
    frame = buffer.add(rtp(13, 1800, False, b"d"))[1]
    assert frame is not None and frame.data == b"cde"
    assert buffer.early == 2


def test_without_markers_frames_come_as_aiortc_releases_them() -> None:
    buffer = MarkerJitterBuffer()
    assert buffer.add(rtp(1, 900, False, b"a"))[1] is None
    frame = buffer.add(rtp(2, 1800, False, b"b"))[1]  # the next frame's first packet
    assert frame is not None and frame.data == b"a" and buffer.early == 0
