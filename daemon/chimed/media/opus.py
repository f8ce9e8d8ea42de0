"""Opus pieces shared by chimed's sending track and the embedded server's listener tracks.

Both hand aiortc ready-made Opus packets (aiortc sends an `av.Packet` as it is) so that silence
costs no encoding: OPUS_SILENCE is a complete 20 ms packet that decodes to digital silence.

Speech is encoded by `MonoEncoder`: libopus called through ctypes, one C call per 20 ms
packet. PyAV's encoder wraps the same libopus in a frame object, a packet object and time
base arithmetic per call, 30 us of Python on top of 45 us of encoding here; it remains the
fallback where no libopus can be loaded (the system's libopus0, else the copy in PyAV's wheel).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
from typing import Any, Protocol

import av

from chimed.audio_format import SAMPLE_RATE, TIME_BASE
from chimed.config import DEFAULT_OPUS_COMPLEXITY

BIT_RATE = 48000  # mono speech
# CELT only ("lowdelay": 2.5 ms look-ahead instead of 6.5) at complexity 5 by default, the
# setting WebRTC uses on phones: a third of the cost of voip at complexity 10 for speech, and
# still near-transparent for speech at 48 kb/s. MediaConfig.opus_complexity sets it (0-10;
# `chimed --opus-complexity`).
APPLICATION = "lowdelay"
DEFAULT_COMPLEXITY = DEFAULT_OPUS_COMPLEXITY


# TOC 0xF8: CELT-only fullband 20 ms, mono, one frame; 0xFF 0xFE codes digital silence.
OPUS_SILENCE = bytes([0xF8, 0xFF, 0xFE])


class MonoEncoder(Protocol):
    """20 ms of mono s16 48 kHz PCM in, one Opus packet out, low-delay speech settings."""

    complexity: int

    def encode(self, pcm: bytes) -> bytes: ...

    def reset(self) -> None:
        """Back to the state of a fresh encoder (what a decoder that heard silence expects)."""


# libopus's API numbers (opus_defines.h); the API has been stable since 1.0.
_OPUS_APPLICATION_RESTRICTED_LOWDELAY = 2051
OPUS_GET_APPLICATION = 4001
_OPUS_SET_BITRATE = 4002
OPUS_GET_BITRATE = 4003
_OPUS_SET_COMPLEXITY = 4010
OPUS_GET_COMPLEXITY = 4011
_OPUS_RESET_STATE = 4028
_MAX_PACKET = 1500


def _load_libopus() -> ctypes.CDLL | None:
    candidates = []
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    wheel_libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    candidates += sorted(glob.glob(os.path.join(wheel_libs, "libopus*.so*")))
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.opus_encoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int32,
        ]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encoder_ctl.restype = ctypes.c_int
        return lib
    return None


_libopus = _load_libopus()


class LibopusEncoder:
    """MonoEncoder on libopus itself (ctypes): no objects per packet but the payload."""

    def __init__(self, complexity: int = DEFAULT_COMPLEXITY) -> None:
        if _libopus is None:
            raise RuntimeError("libopus could not be loaded")
        self._lib = _libopus
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        self.complexity = complexity
        error = ctypes.c_int()
        handle = self._lib.opus_encoder_create(
            SAMPLE_RATE, 1, _OPUS_APPLICATION_RESTRICTED_LOWDELAY, ctypes.byref(error)
        )
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._handle = ctypes.c_void_p(handle)
        self._ctl(_OPUS_SET_BITRATE, BIT_RATE)
        self._ctl(_OPUS_SET_COMPLEXITY, self.complexity)

    def reset(self) -> None:
        self._ctl(_OPUS_RESET_STATE)  # keeps the settings

    def _ctl(self, request: int, *value: int) -> None:
        args = [ctypes.c_int32(v) for v in value]
        status = self._lib.opus_encoder_ctl(self._handle, request, *args)
        if status != 0:
            raise RuntimeError(f"opus_encoder_ctl({request}) failed ({status})")

    def get(self, request: int) -> int:
        """An OPUS_GET_* setting of this encoder, as libopus reports it."""
        value = ctypes.c_int32()
        status = self._lib.opus_encoder_ctl(self._handle, request, ctypes.byref(value))
        if status != 0:
            raise RuntimeError(f"opus_encoder_ctl({request}) failed ({status})")
        return value.value

    def encode(self, pcm: bytes) -> bytes:
        size = self._lib.opus_encode(self._handle, pcm, len(pcm) // 2, self._out, _MAX_PACKET)
        if size < 0:
            raise RuntimeError(f"opus_encode failed ({size})")
        return self._out.raw[:size]

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.opus_encoder_destroy(handle)
            handle.value = None


class PyAVEncoder:
    """MonoEncoder on PyAV's libopus codec context (the fallback)."""

    def __init__(self, complexity: int = DEFAULT_COMPLEXITY) -> None:
        self.complexity = complexity
        self.reset()

    def reset(self) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.bit_rate = BIT_RATE
        codec.time_base = TIME_BASE
        codec.options = {"application": APPLICATION, "compression_level": str(self.complexity)}
        self._codec: Any = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.pts, frame.time_base = self._pts, TIME_BASE
        self._pts += samples
        return b"".join(bytes(p) for p in self._codec.encode(frame))


def libopus_available() -> bool:
    return _libopus is not None


def new_encoder(complexity: int = DEFAULT_COMPLEXITY) -> MonoEncoder:
    """A mono speech encoder at this libopus complexity: libopus direct where it loads."""
    if not 0 <= complexity <= 10:
        raise ValueError(f"Opus complexity must be 0 to 10, got {complexity}")
    return LibopusEncoder(complexity) if _libopus is not None else PyAVEncoder(complexity)


def packet(payload: bytes, pts: int) -> av.Packet[Any]:
    """An encoded packet aiortc's sender passes through, stamped on the track's clock."""
    out = av.Packet(payload)
    out.pts = pts
    out.time_base = TIME_BASE
    return out


def first_audio_codec(sdp: str) -> str | None:
    """The codec (lowercase) a sender uses on the first audio m-line: its first payload type."""
    lines = sdp.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("m=audio"):
            continue
        fields = line.split()
        if len(fields) < 4:
            return None
        for attr in lines[i + 1 :]:
            if attr.startswith("m="):
                break
            m = re.match(rf"a=rtpmap:{re.escape(fields[3])} ([^/]+)/", attr)
            if m:
                return m.group(1).lower()
        return None
    return None
