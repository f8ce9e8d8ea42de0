"""Measurements of received audio shared by the device tests: dominant frequency, RMS level,
the first channel of a frame."""

from __future__ import annotations

import av
import numpy as np


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """Dominant frequency, refined by parabolic interpolation of the Hann-windowed spectrum."""
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + offset) * rate / len(x))


def mono(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
