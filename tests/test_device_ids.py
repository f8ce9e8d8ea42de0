"""Audio device ids without any device: their syntax, the virtual devices' names, directions
and parameters, the ids a hardware listing gives, and the errors an open of a bad id raises
before it touches anything."""

from __future__ import annotations

import pytest
from chime.v1 import types_pb2
from chimed.devices import ids, opening
from chimed.devices.ids import INPUT, OUTPUT
from chimed.devices.listing import devices_from_snapshot, virtual_devices

T = types_pb2


# --- syntax ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_id", "parsed"),
    [
        ("virtual:silence", ("virtual", "silence", {})),
        (
            "virtual:tone?frequency=440&level=-20",
            ("virtual", "tone", {"frequency": "440", "level": "-20"}),
        ),
        # The name keeps its colons: the host API and the device name are split at opening.
        ("hw:ALSA:pulse", ("hw", "ALSA:pulse", {})),
        ("hw:pulse:alsa_output.usb-headset", ("hw", "pulse:alsa_output.usb-headset", {})),
        ("hw:ALSA:USB Audio#2", ("hw", "ALSA:USB Audio#2", {})),
        # Values are URL-decoded, so a path can hold '&', '=', '#' and '%'.
        (
            "virtual:file?path=%2Fm%26m%3D%231%25.wav&loop=1",
            ("virtual", "file", {"path": "/m&m=#1%.wav", "loop": "1"}),
        ),
        ("virtual:wav?path=", ("virtual", "wav", {"path": ""})),
    ],
)
def test_ids_split_into_scheme_name_and_decoded_parameters(
    device_id: str, parsed: tuple[str, str, dict[str, str]]
) -> None:
    assert ids.split_id(device_id) == parsed


@pytest.mark.parametrize("device_id", ["", "bogus", "virtual", "usb:mic", "Virtual:tone"])
def test_unknown_schemes_are_unknown_devices(device_id: str) -> None:
    with pytest.raises(LookupError, match=r"unknown audio device"):
        ids.split_id(device_id)


def test_a_parameter_without_a_value_is_malformed() -> None:
    with pytest.raises(ValueError, match=r"malformed parameters in device id 'virtual:tone\?x'"):
        ids.split_id("virtual:tone?x")


def test_numbers_whole_numbers_and_flags() -> None:
    device = "virtual:tone"
    params = {"f": "440.5", "n": "2", "n2": "2.0", "bad": "loud", "frac": "1.5"}
    assert ids.number_param(device, params, "f", 1.0) == 440.5
    assert ids.number_param(device, params, "absent", 1.0) == 1.0
    with pytest.raises(ValueError, match=r"virtual:tone: bad must be a number, got 'loud'"):
        ids.number_param(device, params, "bad", 1.0)
    assert ids.integer_param(device, params, "n", 1) == 2
    assert ids.integer_param(device, params, "n2", 1) == 2
    assert ids.integer_param(device, params, "absent", 7) == 7
    with pytest.raises(ValueError, match=r"frac must be a whole number, got '1.5'"):
        ids.integer_param(device, params, "frac", 1)
    for text, value in [("1", True), ("TRUE", True), ("yes", True), ("0", False), ("no", False)]:
        assert ids.flag_param(device, {"loop": text}, "loop") is value
    assert ids.flag_param(device, {"loop": ""}, "loop") is False
    assert ids.flag_param(device, {}, "loop") is False
    with pytest.raises(ValueError, match=r"loop must be 0 or 1, got 'sometimes'"):
        ids.flag_param(device, {"loop": "sometimes"}, "loop")


# --- virtual devices -------------------------------------------------------------------------
def test_every_listed_virtual_device_passes_its_own_checks() -> None:
    listed = virtual_devices()
    assert {(d.id, d.direction) for d in listed} == {
        *((f"virtual:{name}", INPUT) for name in ("silence", "tone", "file", "pcm")),
        *((f"virtual:{name}", OUTPUT) for name in ("null", "wav", "pcm")),
    }
    for device in listed:
        assert device.virtual and device.kind == T.MEDIA_KIND_AUDIO
        scheme, name, params = ids.split_id(device.id)
        assert scheme == "virtual"
        ids.check_virtual(device.id, name, params, device.direction)
    ids.check_virtual("virtual:pcm?rate=16000", "pcm", {"rate": "16000"}, OUTPUT)


@pytest.mark.parametrize(
    ("device_id", "direction", "error", "message"),
    [
        ("virtual:nothing", INPUT, LookupError, r"unknown audio device 'virtual:nothing'"),
        ("virtual:null", INPUT, ValueError, r"virtual:null is an output device; it cannot be"),
        ("virtual:tone", OUTPUT, ValueError, r"virtual:tone is an input device; it cannot be"),
        ("virtual:tone?volume=3&gain=1", INPUT, ValueError, r"unknown parameter\(s\) gain, volume"),
        # One name, two devices: the parameters are those of the direction asked for.
        ("virtual:pcm?rate=16000", INPUT, ValueError, r"unknown parameter\(s\) rate"),
    ],
)
def test_virtual_checks_say_what_is_wrong(
    device_id: str, direction: ids.Direction, error: type[Exception], message: str
) -> None:
    _, name, params = ids.split_id(device_id)
    with pytest.raises(error, match=message):
        ids.check_virtual(device_id, name, params, direction)


def test_wrong_direction_names_both_directions() -> None:
    assert str(ids.wrong_direction("hw:pulse:sink", INPUT)) == (
        "hw:pulse:sink is an output device; it cannot be used as an input"
    )
    assert str(ids.wrong_direction("hw:pulse:src", OUTPUT)) == (
        "hw:pulse:src is an input device; it cannot be used as an output"
    )


@pytest.mark.parametrize(
    ("device_id", "blocking"),
    [
        ("hw:ALSA:default", True),
        ("virtual:file?path=/x.wav", True),
        ("virtual:wav?path=/x.wav", True),
        ("virtual:tone", False),
        ("virtual:silence", False),
        ("virtual:pcm", False),
        ("virtual:null", False),
    ],
)
def test_what_blocks_to_open(device_id: str, blocking: bool) -> None:
    assert ids.blocks(device_id) is blocking


@pytest.mark.parametrize(
    ("direction", "device_id", "error", "message"),
    [
        (INPUT, "virtual:nothing", LookupError, r"unknown audio device"),
        (OUTPUT, "bogus", LookupError, r"unknown audio device"),
        (OUTPUT, "virtual:tone", ValueError, r"virtual:tone is an input device"),
        (INPUT, "virtual:null", ValueError, r"virtual:null is an output device"),
        (INPUT, "virtual:tone?volume=3", ValueError, r"unknown parameter\(s\) volume"),
        (INPUT, "virtual:tone?frequency=high", ValueError, r"frequency must be a number"),
        (OUTPUT, "virtual:wav", ValueError, r"virtual:wav needs a path"),
        (INPUT, "virtual:file?loop=1", ValueError, r"virtual:file needs a path"),
        (OUTPUT, "virtual:pcm?channels=1.5", ValueError, r"channels must be a whole number"),
    ],
)
def test_bad_virtual_ids_fail_on_open(
    direction: ids.Direction, device_id: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        if direction == INPUT:
            opening.open_input(device_id)
        else:
            opening.open_output(device_id)


# --- hardware ids from a listing ---------------------------------------------------------------
def test_hardware_ids_from_a_probe_snapshot() -> None:
    """Inputs then outputs; PortAudio devices by host API and name ("#n" from the second of a
    name on), PulseAudio sources and sinks by their names; a type guessed from the words."""
    snapshot = {
        "portaudio": [
            {"hostapi": "ALSA", "name": "pulse", "inputs": 32, "outputs": 32},
            {"hostapi": "ALSA", "name": "USB Headset", "inputs": 1, "outputs": 0},
            {"hostapi": "ALSA", "name": "USB Headset", "inputs": 0, "outputs": 2},
            {"hostapi": "JACK", "name": "USB Headset", "inputs": 0, "outputs": 2},
            {"hostapi": "ALSA", "name": "hdmi", "inputs": 0, "outputs": 0},
        ],
        "pulse": {
            "sources": [{"name": "bluez_source.aa", "description": "Buds"}],
            "sinks": [{"name": "alsa_output.builtin", "description": "Speakers"}],
        },
    }
    other, headset = T.MEDIA_DEVICE_TYPE_OTHER, T.MEDIA_DEVICE_TYPE_AUDIO_WIRED_HEADSET
    bluetooth = T.MEDIA_DEVICE_TYPE_AUDIO_BLUETOOTH
    speaker = T.MEDIA_DEVICE_TYPE_AUDIO_BUILTIN_SPEAKER
    got = [(d.id, d.direction, d.type, d.label) for d in devices_from_snapshot(snapshot)]
    assert got == [
        ("hw:ALSA:pulse", INPUT, other, "pulse (ALSA)"),
        ("hw:ALSA:USB Headset", INPUT, headset, "USB Headset (ALSA)"),
        ("hw:pulse:bluez_source.aa", INPUT, bluetooth, "Buds"),
        ("hw:ALSA:pulse", OUTPUT, other, "pulse (ALSA)"),
        ("hw:ALSA:USB Headset#2", OUTPUT, headset, "USB Headset (ALSA)"),
        ("hw:JACK:USB Headset", OUTPUT, headset, "USB Headset (JACK)"),
        ("hw:pulse:alsa_output.builtin", OUTPUT, speaker, "Speakers"),
    ]
    assert all(not d.virtual for d in devices_from_snapshot(snapshot))
    assert devices_from_snapshot({"portaudio": [], "pulse": None}) == []
