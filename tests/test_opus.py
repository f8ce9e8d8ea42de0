"""chimed's Opus encoders: libopus called directly (the default) and PyAV's wrapper of it (the
fallback) encode the same speech settings, decode to what went in, and reset to a fresh state."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest
from chimed.media import opus

TONE = (8000 * np.sin(2 * math.pi * 440 * np.arange(48000) / 48000)).astype("<i2").tobytes()
CHUNKS = [TONE[i * 1920 : (i + 1) * 1920] for i in range(25)]


def _decode(payloads: list[bytes]) -> np.ndarray:
    decoder = av.CodecContext.create("libopus", "r")
    pcm = [  # the first channel of what the decoder gives (stereo)
        frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
        for payload in payloads
        for frame in decoder.decode(av.Packet(payload))
    ]
    return np.concatenate(pcm)


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    return float(np.argmax(spectrum) * 48000 / len(samples))


def test_libopus_is_loaded_with_the_speech_settings() -> None:
    # The Makefile installs Debian's libopus0; PyAV's wheel carries a copy besides.
    assert opus.libopus_available()
    encoder = opus.new_encoder()
    assert isinstance(encoder, opus.LibopusEncoder)
    assert encoder.get(opus.OPUS_GET_APPLICATION) == 2051  # restricted low delay: CELT only
    assert encoder.get(opus.OPUS_GET_BITRATE) == opus.BIT_RATE
    assert encoder.get(opus.OPUS_GET_COMPLEXITY) == opus.DEFAULT_COMPLEXITY
    encoder.reset()  # the state goes, the settings stay
    assert encoder.get(opus.OPUS_GET_APPLICATION) == 2051
    assert encoder.get(opus.OPUS_GET_BITRATE) == opus.BIT_RATE


def test_each_encoder_has_the_complexity_it_was_made_with() -> None:
    assert opus.LibopusEncoder(0).get(opus.OPUS_GET_COMPLEXITY) == 0
    assert opus.PyAVEncoder(0).complexity == 0
    encoder = opus.new_encoder(3)
    assert isinstance(encoder, opus.LibopusEncoder) and encoder.get(opus.OPUS_GET_COMPLEXITY) == 3
    assert opus.LibopusEncoder().get(opus.OPUS_GET_COMPLEXITY) == opus.DEFAULT_COMPLEXITY
    with pytest.raises(ValueError, match="Opus complexity must be 0 to 10, got 11"):
        opus.new_encoder(11)


@pytest.mark.parametrize("make", [opus.LibopusEncoder, opus.PyAVEncoder])
def test_encoders_give_celt_20ms_packets_that_decode_to_the_tone(make: type) -> None:
    encoder = make()
    payloads = [encoder.encode(chunk) for chunk in CHUNKS]
    # TOC 0xF8: CELT-only fullband 20 ms, mono, one frame (what low delay promises)
    assert all(p and p[0] == 0xF8 for p in payloads)
    decoded = _decode(payloads)
    assert len(decoded) == 25 * 960
    steady = decoded[4800:]
    assert abs(_peak_hz(steady) - 440) <= 2
    assert 6000 < np.abs(steady).max() < 10000


@pytest.mark.parametrize("make", [opus.LibopusEncoder, opus.PyAVEncoder])
def test_reset_returns_an_encoder_to_its_fresh_state(make: type) -> None:
    first = make()
    fresh = [first.encode(chunk) for chunk in CHUNKS[:10]]
    used = make()
    noise = np.random.default_rng(1).integers(-9000, 9000, 960 * 5, dtype="<i2").tobytes()
    for i in range(5):
        used.encode(noise[i * 1920 : (i + 1) * 1920])
    used.reset()
    assert [used.encode(chunk) for chunk in CHUNKS[:10]] == fresh
