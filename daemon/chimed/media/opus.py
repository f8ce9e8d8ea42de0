"""Opus pieces shared by chimed's sending track and the embedded server's listener tracks.

Both hand aiortc ready-made Opus packets (aiortc sends an `av.Packet` as it is) so that silence
costs no encoding: OPUS_SILENCE is a complete 20 ms packet that decodes to digital silence.
"""

from __future__ import annotations

import fractions
import re
from typing import Any

import av

SAMPLE_RATE = 48000
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
BIT_RATE = 48000  # mono speech
# CELT only ("lowdelay": 2.5 ms look-ahead instead of 6.5) at complexity 5 by default, the
# setting WebRTC uses on phones: a third of the cost of voip at complexity 10 for speech, and
# still near-transparent for speech at 48 kb/s. `chimed --opus-complexity` sets it (0-10).
APPLICATION = "lowdelay"
DEFAULT_COMPLEXITY = 5
_complexity = DEFAULT_COMPLEXITY


def set_complexity(level: int) -> None:
    """The libopus complexity of encoders made from now on in this process (0-10)."""
    if not 0 <= level <= 10:
        raise ValueError(f"Opus complexity must be 0 to 10, got {level}")
    global _complexity
    _complexity = level


# TOC 0xF8: CELT-only fullband 20 ms, mono, one frame; 0xFF 0xFE codes digital silence.
OPUS_SILENCE = bytes([0xF8, 0xFF, 0xFE])


def new_encoder() -> Any:
    """A libopus encoder: mono s16 at 48 kHz, low-delay speech settings."""
    codec = av.CodecContext.create("libopus", "w")
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = SAMPLE_RATE
    codec.bit_rate = BIT_RATE
    codec.time_base = TIME_BASE
    codec.options = {"application": APPLICATION, "compression_level": str(_complexity)}
    return codec


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
