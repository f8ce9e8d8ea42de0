"""Meeting audio through the daemon's API, end to end: devices chosen per session, AudioService
(GetDevices, SetDevice, StreamInput, StreamOutput), realtime volumes, active speakers and device
events, against a real chimed process, its embedded service and a private PulseAudio."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from chime.client import AsyncChimed
from chime.v1 import audio_pb2, session_pb2, types_pb2
from chimed.devices import opening
from chimed.devices.audio_inputs import SoundDeviceInput, ToneInput

from tests import pulse as pulse_mod
from tests.daemon_proc import DaemonProcess
from tests.helpers import create_meeting, create_session
from tests.streams import EventStream

S = session_pb2
A = audio_pb2
Pcm = npt.NDArray[np.int16]
pytestmark = pytest.mark.daemon
SPEAKING = (types_pb2.VOLUME_LEVEL_LOW, types_pb2.VOLUME_LEVEL_MEDIUM, types_pb2.VOLUME_LEVEL_HIGH)


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pulse_mod.PulseServer | None]:
    if not pulse_mod.available():
        yield None
        return
    server = pulse_mod.PulseServer(tmp_path_factory.mktemp("pulse")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(pulse: pulse_mod.PulseServer | None) -> Iterator[DaemonProcess]:
    """The daemon inherits the private PulseAudio's environment (set by PulseServer.start).
    It encodes at the cheapest Opus complexity: every tone below is still heard as sent.
    Overrides conftest's `daemon`, so conftest's `chimed` is a client of this one."""
    proc = DaemonProcess(args=["--opus-complexity", "0"]).start()
    yield proc
    proc.stop()
    log = proc.log()
    for bad in ("Traceback", "was destroyed but it is pending", "never awaited"):
        assert bad not in log, log


# --- helpers -------------------------------------------------------------------------------


async def _code(coro: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await coro
    return info.value.code(), info.value.details() or ""


def rms(x: Pcm) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def peak_frequency(x: Pcm, rate: int) -> float:
    """Dominant frequency, refined by parabolic interpolation of the Hann-windowed spectrum."""
    y = x.astype(np.float64)
    spectrum = np.abs(np.fft.rfft((y - y.mean()) * np.hanning(len(y))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(y))


def tone(freq: float, rate: int, seconds: float, channels: int, level: float = 0.3) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    mono = np.round(32767 * level * np.sin(2 * math.pi * freq * t)).astype(np.int16)
    return np.repeat(mono.reshape(-1, 1), channels, axis=1)


class PcmListener:
    """Reads a StreamOutput call in the background (first channel of each chunk)."""

    def __init__(self, call: Any, channels: int = 1) -> None:
        self.call = call
        self.channels = channels
        self.chunks: asyncio.Queue[Pcm | None] = asyncio.Queue()
        self.sizes: list[int] = []
        self.sequences: list[int] = []
        self.status: grpc.StatusCode | None = None
        self.details = ""
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for response in self.call:
                self.sizes.append(len(response.pcm))
                self.sequences.append(response.sequence)
                pcm = np.frombuffer(response.pcm, dtype="<i2").reshape(-1, self.channels)
                self.chunks.put_nowait(pcm[:, 0])
            self.status = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            self.status, self.details = e.code(), e.details() or ""
        finally:
            self.chunks.put_nowait(None)

    async def _next(self) -> Pcm:
        chunk = await self.chunks.get()
        if chunk is None:
            self.chunks.put_nowait(None)
            raise AssertionError(f"PCM stream ended: {self.status} {self.details}")
        return chunk

    async def until(self, loud: bool, run: int = 10, timeout: float = 15) -> None:
        """Until `run` chunks in a row are loud (or quiet)."""
        async with asyncio.timeout(timeout):
            count = 0
            while count < run:
                count = count + 1 if (rms(await self._next()) > 300) == loud else 0

    async def take(self, samples: int, timeout: float = 15) -> Pcm:
        async with asyncio.timeout(timeout):
            parts: list[Pcm] = []
            while sum(len(p) for p in parts) < samples:
                parts.append(await self._next())
        return np.concatenate(parts)[:samples]

    async def ended(self, timeout: float = 15) -> grpc.StatusCode | None:
        await asyncio.wait_for(asyncio.shield(self._task), timeout)
        return self.status

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def start(chimed: AsyncChimed, session: S.Session) -> None:
    await chimed.sessions.Start(S.StartRequest(session_id=session.session_id, wait=True))


def listen(
    chimed: AsyncChimed, session_id: str, rate: int = 48000, channels: int = 1
) -> PcmListener:
    call = chimed.audio.StreamOutput(
        A.StreamOutputRequest(
            session_id=session_id, format=A.PcmFormat(sample_rate=rate, channels=channels)
        )
    )
    return PcmListener(call, channels)


def names(attendee_id: str) -> Any:
    return lambda event: attendee_id in {a.attendee_id for a in event.attendees}


def selection(input_id: str = "", output_id: str = "") -> S.DeviceSelection:
    return S.DeviceSelection(audio_input_device_id=input_id, audio_output_device_id=output_id)


# --- virtual devices -----------------------------------------------------------------------


@pytest.mark.slow
async def test_tone_heard_volumes_active_speaker_and_mute(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    a = await create_session(
        chimed, meeting, "speaker", devices=selection("virtual:tone?frequency=440&level=-10")
    )
    b = await create_session(chimed, meeting, "listener")
    assert a.devices.audio_input_device_id == "virtual:tone?frequency=440&level=-10"
    assert (b.devices.audio_input_device_id, b.devices.audio_output_device_id) == (
        "virtual:silence",
        "virtual:null",
    )
    realtime = EventStream(
        chimed.sessions.AddRealtimeObserver(S.AddRealtimeObserverRequest(session_id=b.session_id))
    )
    speakers = EventStream(
        chimed.sessions.AddActiveSpeakerObserver(
            S.AddActiveSpeakerObserverRequest(
                session_id=b.session_id, score_callback_interval_ms=400
            )
        )
    )
    # The SDK's default weights decay a silent speaker over tens of seconds; a stream of its
    # own asks for quick ones (weights are per stream).
    quick = EventStream(
        chimed.sessions.AddActiveSpeakerObserver(
            S.AddActiveSpeakerObserverRequest(
                session_id=b.session_id, speaker_weight=0.5, cutoff_threshold=0.2
            )
        )
    )
    await start(chimed, a)
    await start(chimed, b)
    ear = listen(chimed, b.session_id)
    try:
        first = await speakers.expect("active_speaker_detected")
        assert first.sequence == 1  # a new stream starts with the current list
        await ear.until(loud=True)
        heard = await ear.take(48000)
        assert abs(peak_frequency(heard, 48000) - 440.0) < 2.0
        assert ear.sizes[0] == 960 * 2  # 20 ms of 48 kHz mono s16
        assert ear.sequences[:3] == [1, 2, 3]

        def a_speaks(event: Any) -> bool:
            return any(
                u.attendee.attendee_id == a.attendee_id and u.volume_level in SPEAKING
                for u in event.volume_updates
            )

        await realtime.expect("volume_changed", a_speaks)
        strength = await realtime.expect(
            "signal_strength_changed",
            lambda e: any(u.attendee.attendee_id == a.attendee_id for u in e.signal_updates),
        )
        assert strength.signal_strength_changed.signal_updates[0].signal_strength in (
            types_pb2.SIGNAL_STRENGTH_LOW,
            types_pb2.SIGNAL_STRENGTH_HIGH,
        )
        detected = await speakers.expect("active_speaker_detected", names(a.attendee_id))
        assert detected.active_speaker_detected.attendees[0].external_user_id == "speaker"
        scores = await speakers.expect(
            "active_speaker_score_changed",
            lambda e: any(
                s.attendee.attendee_id == a.attendee_id and s.score > 0 for s in e.scores
            ),
        )
        assert scores.session_id == b.session_id
        await quick.expect("active_speaker_detected", names(a.attendee_id))
        assert not any(
            e.WhichOneof("event") == "active_speaker_score_changed" for e in quick.events
        )

        await chimed.audio.Mute(A.MuteRequest(session_id=a.session_id))
        await realtime.expect("attendees_muted", names(a.attendee_id))
        await realtime.expect(
            "volume_changed",
            lambda e: any(
                u.attendee.attendee_id == a.attendee_id
                and u.volume_level == types_pb2.VOLUME_LEVEL_MUTED
                for u in e.volume_updates
            ),
        )
        await ear.until(loud=False, run=25)  # half a second of silence at B
        quiet = await ear.take(24000)
        assert rms(quiet) < 30
        await quick.expect(
            "active_speaker_detected",
            lambda e: a.attendee_id not in {x.attendee_id for x in e.attendees},
        )
        await chimed.audio.Unmute(A.UnmuteRequest(session_id=a.session_id))
        await ear.until(loud=True)
    finally:
        await ear.close()
        await realtime.close()
        await speakers.close()
        await quick.close()
        for s in (a, b):
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


@pytest.mark.slow
async def test_pcm_in_pcm_out_round_trip_and_listeners_end_with_the_session(
    chimed: AsyncChimed,
) -> None:
    meeting = await create_meeting(chimed)
    a = await create_session(chimed, meeting, "pcm-in")
    b = await create_session(chimed, meeting, "pcm-out")
    await start(chimed, a)
    await start(chimed, b)
    ear = listen(chimed, b.session_id, rate=16000, channels=2)
    second = listen(chimed, b.session_id, rate=8000, channels=1)
    rate, chunk = 16000, 320  # 20 ms chunks of 16 kHz stereo
    pcm = tone(1000.0, rate, 3.0, channels=2)

    async def requests() -> AsyncIterator[A.StreamInputRequest]:
        yield A.StreamInputRequest(
            session_id=a.session_id, format=A.PcmFormat(sample_rate=rate, channels=2)
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(0, len(pcm), chunk):
            # Paced like a live source: the feed keeps at most a second.
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
            yield A.StreamInputRequest(pcm=pcm[i : i + chunk].astype("<i2").tobytes())

    try:
        feeding = asyncio.ensure_future(chimed.audio.StreamInput(requests()))
        await ear.until(loud=True)
        heard = await ear.take(16000)
        assert abs(peak_frequency(heard, 16000) - 1000.0) < 2.0
        assert all(size % 4 == 0 for size in ear.sizes)  # whole stereo frames
        await second.until(loud=True)
        assert abs(peak_frequency(await second.take(8000), 8000) - 1000.0) < 2.0
        response = await asyncio.wait_for(feeding, 15)
        assert response.samples_received == len(pcm)
        devices = await chimed.audio.GetDevices(A.GetDevicesRequest(session_id=a.session_id))
        assert devices.active_input_device_id == "virtual:pcm"

        await chimed.sessions.Stop(S.StopRequest(session_id=b.session_id))
        assert await ear.ended() == grpc.StatusCode.OK
        assert await second.ended() == grpc.StatusCode.OK
        # A stopped session has no mix to stream.
        code, details = await _code(
            chimed.audio.StreamOutput(A.StreamOutputRequest(session_id=b.session_id)).read()
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "start it" in details

        await start(chimed, b)  # restart: devices reopen, a new listener hears again
        third = listen(chimed, b.session_id)
        await chimed.audio.SetDevice(
            A.SetDeviceRequest(session_id=a.session_id, device_id="virtual:tone?frequency=700")
        )
        await third.until(loud=True)
        assert abs(peak_frequency(await third.take(48000), 48000) - 700.0) < 2.0
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=b.session_id))
        assert await third.ended() == grpc.StatusCode.OK
    finally:
        for listener in (ear, second):
            await listener.close()
        for s in (a, b):
            await _code_or_none(
                chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))
            )


async def _code_or_none(coro: Any) -> None:
    try:
        await coro
    except grpc.aio.AioRpcError:
        pass


@pytest.mark.slow
async def test_wav_recorder_output_and_switching_before_start(
    chimed: AsyncChimed, tmp_path: Path
) -> None:
    meeting = await create_meeting(chimed)
    a = await create_session(chimed, meeting, "wav-a")
    wav = tmp_path / "b.wav"
    b = await create_session(chimed, meeting, "wav-b")
    # Before a start SetDevice only selects (after checking the device).
    got = await chimed.audio.SetDevice(
        A.SetDeviceRequest(session_id=a.session_id, device_id="virtual:tone?frequency=523&level=-6")
    )
    assert got.device.direction == types_pb2.DEVICE_DIRECTION_INPUT and got.device.virtual
    await chimed.audio.SetDevice(
        A.SetDeviceRequest(session_id=b.session_id, device_id=f"virtual:wav?path={wav}")
    )
    session = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=b.session_id))
    assert session.session.devices.audio_output_device_id == f"virtual:wav?path={wav}"
    await start(chimed, a)
    await start(chimed, b)
    ear = listen(chimed, b.session_id)
    try:
        await ear.until(loud=True)
        await ear.take(48000)  # a second more of tone reaches the recorder too
    finally:
        await ear.close()
    await chimed.sessions.Stop(S.StopRequest(session_id=b.session_id))  # closes the WAV file
    import wave

    with wave.open(str(wav), "rb") as w:
        assert (w.getframerate(), w.getnchannels()) == (48000, 1)
        recorded = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    loud = recorded[np.abs(recorded) > 0]
    assert len(loud) > 48000
    assert abs(peak_frequency(loud[-48000:], 48000) - 523.0) < 2.0
    for s in (a, b):
        await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


# --- bad input -----------------------------------------------------------------------------


async def test_bad_devices_and_formats(chimed: AsyncChimed, tmp_path: Path) -> None:
    meeting = await create_meeting(chimed)
    code, details = await _code(
        create_session(chimed, meeting, "bad-1", devices=selection("virtual:null"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "devices.audio_input_device_id" in details and "output device" in details
    code, details = await _code(
        create_session(chimed, meeting, "bad-2", devices=selection("", "virtual:tone"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "devices.audio_output_device_id" in details
    code, details = await _code(
        create_session(chimed, meeting, "bad-3", devices=selection("virtual:nope"))
    )
    assert code == grpc.StatusCode.NOT_FOUND and "virtual:nope" in details

    s = await create_session(chimed, meeting, "bad-4")
    sid = s.session_id
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt this is not audio" * 10)

    async def set_device(
        device_id: str,
        direction: types_pb2.DeviceDirection.ValueType = types_pb2.DEVICE_DIRECTION_UNSPECIFIED,
    ) -> tuple[grpc.StatusCode, str]:
        return await _code(
            chimed.audio.SetDevice(
                A.SetDeviceRequest(session_id=sid, device_id=device_id, direction=direction)
            )
        )

    assert (await set_device("hw:pulse:no_such_sink"))[0] == grpc.StatusCode.NOT_FOUND
    assert (await set_device("bluetooth:x"))[0] == grpc.StatusCode.NOT_FOUND
    code, details = await set_device("virtual:tone?frequency=abc")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "frequency must be a number" in details
    code, details = await set_device(f"virtual:file?path={garbage}")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot decode audio file" in details
    code, details = await set_device("virtual:pcm")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "direction" in details
    code, details = await set_device("virtual:tone", types_pb2.DEVICE_DIRECTION_OUTPUT)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot be used as an output" in details
    code, details = await set_device("")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "device_id" in details
    ok = await chimed.audio.SetDevice(
        A.SetDeviceRequest(
            session_id=sid, device_id="virtual:pcm", direction=types_pb2.DEVICE_DIRECTION_OUTPUT
        )
    )
    assert ok.device.direction == types_pb2.DEVICE_DIRECTION_OUTPUT
    code, _ = await _code(
        chimed.audio.SetDevice(A.SetDeviceRequest(session_id="nope", device_id="virtual:null"))
    )
    assert code == grpc.StatusCode.NOT_FOUND

    def stream_input(*messages: A.StreamInputRequest) -> Any:
        async def gen() -> AsyncIterator[A.StreamInputRequest]:
            for m in messages:
                yield m

        return chimed.audio.StreamInput(gen())

    fmt = A.PcmFormat(sample_rate=16000, channels=1)
    code, details = await _code(stream_input(A.StreamInputRequest(session_id=sid, format=fmt)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "start it" in details
    code, details = await _code(stream_input())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await start(chimed, s)
    code, details = await _code(stream_input(A.StreamInputRequest(session_id=sid)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "format is missing" in details
    bad_rate = A.PcmFormat(sample_rate=4000, channels=1)
    code, details = await _code(stream_input(A.StreamInputRequest(session_id=sid, format=bad_rate)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "format.sample_rate 4000" in details
    bad_channels = A.PcmFormat(sample_rate=16000, channels=3)
    code, details = await _code(
        stream_input(A.StreamInputRequest(session_id=sid, format=bad_channels))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "format.channels" in details
    code, details = await _code(
        stream_input(
            A.StreamInputRequest(session_id=sid, format=fmt, pcm=bytes(640)),
            A.StreamInputRequest(pcm=bytes(641)),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "chunk 2" in details and "odd byte count" in details
    stereo = A.PcmFormat(sample_rate=16000, channels=2)
    code, details = await _code(
        stream_input(A.StreamInputRequest(session_id=sid, format=stereo, pcm=bytes(6)))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "2-channel frames" in details
    ok_in = await stream_input(A.StreamInputRequest(session_id=sid, format=fmt, pcm=bytes(640)))
    assert ok_in.samples_received == 320

    code, details = await _code(
        chimed.audio.StreamOutput(
            A.StreamOutputRequest(session_id=sid, format=A.PcmFormat(sample_rate=1000))
        ).read()
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "format.sample_rate" in details
    bad_weights = EventStream(
        chimed.sessions.AddActiveSpeakerObserver(
            S.AddActiveSpeakerObserverRequest(session_id=sid, speaker_weight=2.0)
        )
    )
    assert await bad_weights.ended() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_weights.details is not None and "speaker_weight" in bad_weights.details
    got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=sid))
    assert got.session.observers.active_speaker == 0
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


# --- PulseAudio hardware -------------------------------------------------------------------


async def capture(mic: SoundDeviceInput, seconds: float) -> Pcm:
    """From `mic` once sound flows (10 loud frames in a row), `seconds` of its first channel."""
    async with asyncio.timeout(20):
        loud = 0
        while loud < 10:
            frame = await mic.recv()
            loud = loud + 1 if rms(np.asarray(frame.to_ndarray(), np.int16).ravel()) > 300 else 0
        frames = [
            np.asarray((await mic.recv()).to_ndarray(), np.int16).ravel()
            for _ in range(int(seconds * 50))
        ]
    return np.concatenate(frames)


@pytest.mark.pulse
@pytest.mark.slow
async def test_tone_through_pulseaudio_devices(chimed: AsyncChimed, pulse: Any) -> None:
    """The test plays a tone into null sink chimed_a; A's session captures chimed_a's monitor;
    B's session plays the meeting into null sink chimed_b; the test captures its monitor."""
    devices = await chimed.audio.GetDevices(A.GetDevicesRequest())
    ids = {(d.id, d.direction) for d in devices.devices}
    assert ("hw:pulse:chimed_a.monitor", types_pb2.DEVICE_DIRECTION_INPUT) in ids
    assert ("hw:pulse:chimed_b", types_pb2.DEVICE_DIRECTION_OUTPUT) in ids
    assert ("virtual:tone", types_pb2.DEVICE_DIRECTION_INPUT) in ids
    meeting = await create_meeting(chimed)
    a = await create_session(
        chimed, meeting, "hw-a", devices=selection("hw:pulse:chimed_a.monitor")
    )
    b = await create_session(chimed, meeting, "hw-b", devices=selection("", "hw:pulse:chimed_b"))
    source = ToneInput(frequency_hz=880.0, level_dbfs=-10.0)
    speaker = opening.open_output("hw:pulse:chimed_a")
    mic = opening.open_input("hw:pulse:chimed_b.monitor")
    assert isinstance(mic, SoundDeviceInput)
    try:
        speaker.start(source)
        await start(chimed, a)
        await start(chimed, b)
        active = await chimed.audio.GetDevices(A.GetDevicesRequest(session_id=b.session_id))
        assert active.active_output_device_id == "hw:pulse:chimed_b"
        heard = await capture(mic, 1.0)
        assert abs(peak_frequency(heard, 48000) - 880.0) < 2.0
    finally:
        mic.stop()
        await speaker.stop()
        source.stop()
        for s in (a, b):
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


@pytest.mark.pulse
@pytest.mark.slow
async def test_hot_plug_events_and_lost_device_fallback(chimed: AsyncChimed, pulse: Any) -> None:
    meeting = await create_meeting(chimed)
    a = await create_session(chimed, meeting, "plug-a", devices=selection("virtual:tone"))
    b = await create_session(chimed, meeting, "plug-b")
    sink = "chimed_hot"
    device_id = f"hw:pulse:{sink}"
    events = EventStream(
        chimed.sessions.AddDeviceObserver(S.AddDeviceObserverRequest(session_id=b.session_id))
    )
    module = ""
    try:
        first = await events.expect("audio_device_changed")
        assert first.sequence == 1
        listed = {d.id for d in first.audio_device_changed.devices}
        assert "hw:pulse:chimed_b" in listed and device_id not in listed
        # Another session's stream, with the watch already running, starts with the list too.
        late = EventStream(
            chimed.sessions.AddDeviceObserver(S.AddDeviceObserverRequest(session_id=a.session_id))
        )
        again = await late.expect("audio_device_changed")
        assert again.sequence == 1 and {d.id for d in again.audio_device_changed.devices} == listed
        await late.close()
        await start(chimed, a)
        await start(chimed, b)
        ear = listen(chimed, b.session_id)
        module = pulse.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={sink}",
            "rate=48000",
            "sink_properties=device.description=ChimedHot",
        ).strip()
        await events.expect(
            "audio_device_changed", lambda e: device_id in {d.id for d in e.devices}
        )
        got = await chimed.audio.SetDevice(
            A.SetDeviceRequest(session_id=b.session_id, device_id=device_id)
        )
        assert (got.device.id, got.device.label) == (device_id, "ChimedHot")
        pulse.pactl("unload-module", module)
        module = ""
        lost = await events.expect("audio_device_lost")
        assert lost.audio_device_lost.device_id == device_id
        assert lost.audio_device_lost.fallback.id == "virtual:null"
        assert "disappeared" in lost.audio_device_lost.reason
        session = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=b.session_id))
        assert session.session.state == S.SESSION_STATE_STARTED
        assert session.session.devices.audio_output_device_id == "virtual:null"
        await ear.until(loud=True)  # the session still hears the meeting
        await ear.close()
    finally:
        if module:
            pulse.pactl("unload-module", module)
        await events.close()
        for s in (a, b):
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


class PulseEvents:
    """`pactl subscribe` in the background: what the PulseAudio server saw happen."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def open(cls) -> PulseEvents:
        proc = await asyncio.create_subprocess_exec(
            "pactl", "subscribe", stdout=asyncio.subprocess.PIPE
        )
        return cls(proc)

    async def until(self, text: str, timeout: float = 15) -> list[str]:
        """Lines up to the first one containing `text`."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                assert line, "pactl subscribe ended"
                self.lines.append(line.strip())
                if text in line:
                    return self.lines

    async def close(self) -> None:
        self.proc.kill()
        await self.proc.wait()


@pytest.mark.pulse
async def test_create_session_checks_hardware_without_opening_it(
    chimed: AsyncChimed, pulse: Any
) -> None:
    meeting = await create_meeting(chimed)
    events = await PulseEvents.open()
    marker = ""
    sessions: list[S.Session] = []
    try:
        code, details = await _code(
            create_session(chimed, meeting, "hw-wrong", devices=selection("hw:pulse:chimed_b"))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "devices.audio_input_device_id" in details and "output device" in details
        code, details = await _code(
            create_session(chimed, meeting, "hw-gone", devices=selection("hw:pulse:nope"))
        )
        assert code == grpc.StatusCode.NOT_FOUND and "hw:pulse:nope" in details
        sessions.append(
            await create_session(
                chimed,
                meeting,
                "hw-ok",
                devices=selection("hw:pulse:chimed_a.monitor", "hw:pulse:chimed_b"),
            )
        )
        sid = sessions[0].session_id
        got = await chimed.audio.SetDevice(
            A.SetDeviceRequest(session_id=sid, device_id="hw:pulse:chimed_b.monitor")
        )
        assert got.device.label and not got.device.virtual
        # Everything PulseAudio saw up to a marker of ours: no capture or playback stream.
        marker = pulse.pactl("load-module", "module-null-sink", "sink_name=chimed_marker").strip()
        seen = await events.until("'new' on module")
        assert not [line for line in seen if "source-output" in line or "sink-input" in line]
    finally:
        if marker:
            pulse.pactl("unload-module", marker)
        await events.close()
        for s in sessions:
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


@pytest.mark.pulse
@pytest.mark.slow
async def test_hardware_input_lost_mid_session_falls_back_to_silence(
    chimed: AsyncChimed, pulse: Any
) -> None:
    """A captures the monitor of a sink the test plays a tone into; the sink is unloaded
    mid-session: A falls back to silence (audio_device_lost), stays STARTED, B hears silence.
    C selected a source that is gone by its start: it starts all the same, on silence."""
    meeting = await create_meeting(chimed)
    modules = [
        pulse.pactl("load-module", "module-null-sink", f"sink_name={name}", "rate=48000").strip()
        for name in ("chimed_mic", "chimed_gone")
    ]
    mic_id, gone_id = "hw:pulse:chimed_mic.monitor", "hw:pulse:chimed_gone.monitor"
    a = await create_session(chimed, meeting, "lost-a", devices=selection(mic_id))
    b = await create_session(chimed, meeting, "lost-b")
    c = await create_session(chimed, meeting, "lost-c", devices=selection(gone_id))
    source = ToneInput(frequency_hz=660.0, level_dbfs=-10.0)
    speaker = opening.open_output("hw:pulse:chimed_mic")
    speaker.start(source)
    a_events = EventStream(
        chimed.sessions.AddDeviceObserver(S.AddDeviceObserverRequest(session_id=a.session_id))
    )
    c_events = EventStream(
        chimed.sessions.AddDeviceObserver(S.AddDeviceObserverRequest(session_id=c.session_id))
    )
    ear: PcmListener | None = None
    try:
        pulse.pactl("unload-module", modules.pop())  # chimed_gone, before C starts
        for s in (a, b, c):
            await start(chimed, s)
        ear = listen(chimed, b.session_id)
        lost_c = await c_events.expect("audio_device_lost")
        assert lost_c.audio_device_lost.device_id == gone_id
        assert lost_c.audio_device_lost.fallback.id == "virtual:silence"

        await ear.until(loud=True)
        assert abs(peak_frequency(await ear.take(24000), 48000) - 660.0) < 2.0
        pulse.pactl("unload-module", modules.pop())  # chimed_mic, while A captures it
        lost = await a_events.expect("audio_device_lost")
        assert lost.audio_device_lost.device_id == mic_id
        assert lost.audio_device_lost.fallback.id == "virtual:silence"
        assert "disappeared" in lost.audio_device_lost.reason
        await ear.until(loud=False, run=25)
        for s, input_id in ((a, "virtual:silence"), (c, "virtual:silence")):
            got = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=s.session_id))
            assert got.session.state == S.SESSION_STATE_STARTED
            assert got.session.devices.audio_input_device_id == input_id
        # Still in the meeting: a new input is heard again.
        await chimed.audio.SetDevice(
            A.SetDeviceRequest(session_id=a.session_id, device_id="virtual:tone?frequency=880")
        )
        await ear.until(loud=True)
    finally:
        if ear is not None:
            await ear.close()
        await a_events.close()
        await c_events.close()
        await speaker.stop()
        source.stop()
        for module in modules:
            pulse.pactl("unload-module", module)
        for s in (a, b, c):
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))


@pytest.mark.slow
async def test_file_input_that_ends_or_breaks_keeps_the_session(
    chimed: AsyncChimed, tmp_path: Path
) -> None:
    """A file that ends (loop=0) gives silence and stays selected; a looped file replaced by
    garbage fails at its next round: silence, audio_device_lost, the session stays up."""
    import wave

    once, looped = tmp_path / "once.wav", tmp_path / "looped.wav"
    for path, freq in ((once, 500.0), (looped, 750.0)):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(48000)
            w.writeframes(tone(freq, 48000, 1.0, 1).astype("<i2").tobytes())
    meeting = await create_meeting(chimed)
    once_id, looped_id = f"virtual:file?path={once}", f"virtual:file?path={looped}&loop=1"
    a = await create_session(chimed, meeting, "file-a", devices=selection(once_id))
    b = await create_session(chimed, meeting, "file-b")
    events = EventStream(
        chimed.sessions.AddDeviceObserver(S.AddDeviceObserverRequest(session_id=a.session_id))
    )
    await start(chimed, a)
    await start(chimed, b)
    ear = listen(chimed, b.session_id)
    try:
        await ear.until(loud=True)
        await ear.until(loud=False, run=25)  # the file ended
        got = await chimed.audio.GetDevices(A.GetDevicesRequest(session_id=a.session_id))
        assert got.active_input_device_id == once_id

        await chimed.audio.SetDevice(
            A.SetDeviceRequest(session_id=a.session_id, device_id=looped_id)
        )
        await ear.until(loud=True)
        assert abs(peak_frequency(await ear.take(24000), 48000) - 750.0) < 2.0
        looped.write_bytes(b"RIFF....WAVEfmt not audio any more" * 20)
        lost = await events.expect("audio_device_lost")
        assert lost.audio_device_lost.device_id == looped_id
        assert lost.audio_device_lost.fallback.id == "virtual:silence"
        assert "cannot decode audio file" in lost.audio_device_lost.reason
        await ear.until(loud=False, run=25)
        session = await chimed.sessions.GetSession(S.GetSessionRequest(session_id=a.session_id))
        assert session.session.state == S.SESSION_STATE_STARTED
        assert session.session.devices.audio_input_device_id == "virtual:silence"
    finally:
        await ear.close()
        await events.close()
        for s in (a, b):
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=s.session_id))
