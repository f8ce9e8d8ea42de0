"""Hardware audio devices for real: a private PulseAudio with null sinks behind ALSA's pulse
plugin, PortAudio streams through it, listing, hot-plug and the hardware errors. The virtual
devices are in test_virtual_devices.py, the id syntax in test_device_ids.py: they need none
of this."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from chime.v1 import types_pb2
from chimed.devices import ids, listing, opening, portaudio
from chimed.devices.audio_inputs import SoundDeviceInput, ToneInput
from chimed.devices.audio_outputs import SoundDeviceOutput

from tests.audio_signals import mono, peak_frequency, rms
from tests.pulse import PulseServer

pytestmark = pytest.mark.pulse


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    server = PulseServer(tmp_path_factory.mktemp("pulse")).start()
    yield server
    try:
        assert portaudio.open_stream_count() == 0, "a test left a PortAudio stream open"
    finally:
        server.stop()


async def test_sounddevice_and_registry_see_pulse(pulse: PulseServer) -> None:
    import sounddevice as sd  # here: importing it needs the PortAudio library

    names = {d["name"] for d in sd.query_devices()}
    assert {"pulse", "default"} <= names
    devices = await listing.list_devices()
    by_direction = {(d.id, d.direction) for d in devices}
    assert ("hw:ALSA:pulse", types_pb2.DEVICE_DIRECTION_INPUT) in by_direction
    assert ("hw:ALSA:pulse", types_pb2.DEVICE_DIRECTION_OUTPUT) in by_direction
    assert ("hw:pulse:chimed_a", types_pb2.DEVICE_DIRECTION_OUTPUT) in by_direction
    assert ("hw:pulse:chimed_a.monitor", types_pb2.DEVICE_DIRECTION_INPUT) in by_direction
    sink = next(d for d in devices if d.id == "hw:pulse:chimed_b")
    assert (sink.label, sink.kind, sink.virtual) == ("ChimedB", types_pb2.MEDIA_KIND_AUDIO, False)
    virtual = {(d.id, d.direction) for d in devices if d.virtual}
    assert ("virtual:tone", types_pb2.DEVICE_DIRECTION_INPUT) in virtual
    assert ("virtual:wav", types_pb2.DEVICE_DIRECTION_OUTPUT) in virtual
    # Ids are stable across re-queries.
    assert [d.id for d in await listing.list_devices()] == [d.id for d in devices]


async def capture_tone(mic: SoundDeviceInput, seconds: float) -> np.ndarray:
    """Frames from `mic` once sound is flowing (10 loud frames in a row), for `seconds`."""
    async with asyncio.timeout(15):
        loud = 0
        while loud < 10:
            loud = loud + 1 if rms(mono(await mic.recv())) > 300 else 0
        frames = [mono(await mic.recv()) for _ in range(int(seconds * 50))]
    return np.concatenate(frames)


@pytest.mark.slow
async def test_tone_round_trip_through_null_sink(pulse: PulseServer) -> None:
    """ToneInput -> hardware output into null sink A -> A's monitor -> hardware input."""
    tone = ToneInput(frequency_hz=1234.0, level_dbfs=-12.0)
    speaker = opening.open_output("hw:pulse:chimed_a")
    mic = opening.open_input("hw:pulse:chimed_a.monitor")
    other = opening.open_input("hw:pulse:chimed_b.monitor")
    assert isinstance(speaker, SoundDeviceOutput) and isinstance(mic, SoundDeviceInput)
    assert isinstance(other, SoundDeviceInput)
    try:
        speaker.start(tone)
        captured = await capture_tone(mic, 1.0)
        assert abs(peak_frequency(captured, 48000) - 1234.0) < 2.0
        expected_rms = 32767 * 10 ** (-12 / 20) / np.sqrt(2)
        assert abs(20 * np.log10(rms(captured) / expected_rms)) < 1.0
        assert mic.readyState == "live"
        # Nothing was played into sink B: its monitor carries silence.
        quiet = np.concatenate([mono(await other.recv()) for _ in range(10)])
        assert rms(quiet) < 30
    finally:
        await speaker.stop()
        mic.stop()
        other.stop()
        tone.stop()
    with pytest.raises(MediaStreamError):
        await mic.recv()


@pytest.mark.slow
async def test_hot_plug_seen_by_watcher_while_streams_run(pulse: PulseServer) -> None:
    changes: asyncio.Queue[Sequence[types_pb2.MediaDevice]] = asyncio.Queue()
    watcher = listing.DeviceWatcher(changes.put_nowait, interval=0.5)
    tone = ToneInput(frequency_hz=500.0, level_dbfs=-12.0)
    speaker = opening.open_output("hw:pulse:chimed_a")
    mic = opening.open_input("hw:pulse:chimed_a.monitor")
    assert isinstance(mic, SoundDeviceInput)
    module = ""
    try:
        speaker.start(tone)
        first = await watcher.start()
        assert "hw:pulse:chimed_hot" not in {d.id for d in first}
        module = pulse.pactl(
            "load-module",
            "module-null-sink",
            "sink_name=chimed_hot",
            "sink_properties=device.description=HotPlugged",
        ).strip()

        async def wait_for(present: bool) -> Sequence[types_pb2.MediaDevice]:
            async with asyncio.timeout(15):
                while True:
                    devices = await changes.get()
                    if ("hw:pulse:chimed_hot" in {d.id for d in devices}) == present:
                        return devices

        plugged = await wait_for(True)
        hot = [d for d in plugged if d.id in ("hw:pulse:chimed_hot", "hw:pulse:chimed_hot.monitor")]
        assert {(d.id, d.direction) for d in hot} == {
            ("hw:pulse:chimed_hot", types_pb2.DEVICE_DIRECTION_OUTPUT),
            ("hw:pulse:chimed_hot.monitor", types_pb2.DEVICE_DIRECTION_INPUT),
        }
        # The new sink can be opened while other streams are open.
        recorder = opening.open_output("hw:pulse:chimed_hot")
        await recorder.stop()
        pulse.pactl("unload-module", module)
        module = ""
        await wait_for(False)
        # The streams opened before the hot-plug still carry the tone.
        captured = await capture_tone(mic, 0.5)
        assert abs(peak_frequency(captured, 48000) - 500.0) < 2.0
    finally:
        if module:
            pulse.pactl("unload-module", module)
        await watcher.stop()
        await speaker.stop()
        mic.stop()
        tone.stop()


@pytest.mark.slow
async def test_hardware_direction_and_unknown_errors(pulse: PulseServer) -> None:
    with pytest.raises(ValueError, match=r"hw:pulse:chimed_a.monitor is an input device"):
        opening.open_output("hw:pulse:chimed_a.monitor")
    with pytest.raises(ValueError, match=r"hw:pulse:chimed_b is an output device"):
        opening.open_input("hw:pulse:chimed_b")
    with pytest.raises(LookupError):
        opening.open_input("hw:pulse:no_such_source")
    with pytest.raises(LookupError):
        opening.open_output("hw:ALSA:no_such_device")


# --- robustness ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_probe_answers_of_cancelled_queries_are_not_taken_later(pulse: PulseServer) -> None:
    """A query cancelled while its answer is on the way (a watcher being stopped) must not
    leave that answer for the next query, which would then report a stale list."""
    prober = listing.DeviceProber()
    sink = "chimed_lag"
    module = ""
    try:
        await prober.query()  # the helper is up
        for _ in range(3):
            sent = prober.requests
            task = asyncio.create_task(prober.query())
            async with asyncio.timeout(10):
                # Until the request is on its way (a yield: nothing to wait on but the task).
                while prober.requests == sent:  # noqa: ASYNC110
                    await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await prober.query()
        # Real work meanwhile (a listing through a helper of its own: a process start), during
        # which the shared helper has long answered whatever it still owed.
        await listing.list_devices()
        module = pulse.pactl("load-module", "module-null-sink", f"sink_name={sink}").strip()
        answer = await prober.query()
        assert sink in {s["name"] for s in answer["pulse"]["sinks"]}
        pulse.pactl("unload-module", module)
        module = ""
        answer = await prober.query()
        assert sink not in {s["name"] for s in answer["pulse"]["sinks"]}
    finally:
        if module:
            pulse.pactl("unload-module", module)
        await prober.close()
    assert not prober.running


@pytest.mark.slow
async def test_hardware_opens_off_the_event_loop(pulse: PulseServer) -> None:
    """open_async opens hardware in a worker thread (the loop keeps running meanwhile) and a
    caller cancelled mid-open leaks no stream."""
    before = portaudio.open_stream_count()
    loop = asyncio.get_running_loop()
    ran: list[bool] = []
    opened = opening.open_async("hw:pulse:chimed_a", ids.OUTPUT)
    loop.call_soon(ran.append, True)
    speaker = await opened
    assert ran == [True]  # the loop ran a callback while the device was being opened
    assert isinstance(speaker, SoundDeviceOutput)
    await speaker.stop()
    assert portaudio.open_stream_count() == before

    task = asyncio.create_task(opening.open_async("hw:pulse:chimed_b.monitor", ids.INPUT))
    await asyncio.sleep(0)  # the task has handed the open to a worker thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The thread's stream, once open, is closed (in another worker thread).
    await opening.settle()
    assert portaudio.open_stream_count() == before
