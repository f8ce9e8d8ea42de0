"""The one audio clock chimed runs on, both sides of the wire: 48 kHz (Opus's RTP clock, the
rate Chime's audio uses) in 20 ms frames (Opus's and Chime's packet time)."""

from __future__ import annotations

import fractions

SAMPLE_RATE = 48000
PTIME_S = 0.020
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)  # pts count samples
