"""Device probe helper: `python -m chimed.devices.probe` answers each line on stdin (a request
number) with one JSON line listing the audio devices as of now, the number echoed as "id".

It runs in its own process because PortAudio only sees hot-plugged devices after
Pa_Terminate + Pa_Initialize, which would break the streams the daemon has open. This process
opens no streams, so it re-initializes PortAudio before every answer (about 10 ms).
When PortAudio reaches a PulseAudio server (the ALSA "pulse" device), the server's sinks and
sources are listed too (via pactl), since each is a device the user can choose.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

from chimed.devices import portaudio as pa


def _pulse(kind: str) -> list[dict[str, str]]:
    result = subprocess.run(
        ["pactl", "-f", "json", "list", kind],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    if result.returncode != 0:
        return []
    return [
        {"name": item["name"], "description": item.get("description") or item["name"]}
        for item in json.loads(result.stdout or "[]")
    ]


def snapshot() -> dict[str, Any]:
    import sounddevice as sd

    pa.terminate()
    pa.initialize()
    apis = sd.query_hostapis()
    portaudio = [
        {
            "name": info["name"],
            "hostapi": apis[info["hostapi"]]["name"],
            "inputs": info["max_input_channels"],
            "outputs": info["max_output_channels"],
        }
        for info in sd.query_devices()
    ]
    pulse: dict[str, list[dict[str, str]]] | None = None
    has_pulse = any(d["name"] == "pulse" and d["hostapi"] == "ALSA" for d in portaudio)
    if has_pulse and shutil.which("pactl"):
        try:
            pulse = {"sinks": _pulse("sinks"), "sources": _pulse("sources")}
        except (subprocess.SubprocessError, ValueError, KeyError):
            pulse = None
    return {"portaudio": portaudio, "pulse": pulse}


def main() -> None:
    for line in sys.stdin:
        try:
            answer: dict[str, Any] = snapshot()
        except Exception as exc:  # report, keep serving
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        request = line.strip()
        answer["id"] = int(request) if request.isdigit() else request
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
