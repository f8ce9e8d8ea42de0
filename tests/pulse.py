"""A private PulseAudio server for the audio device tests.

PulseAudio runs in the foreground as a child process (root is fine with --system=false; it only
warns), with its own runtime/state dirs, a unix socket with anonymous auth, no autospawn and
two 48 kHz null sinks, "chimed_a" (the default) and "chimed_b". ALSA is pointed at it by a
minimal config of our own (ALSA_CONFIG_PATH), so sounddevice/PortAudio sees exactly the
"pulse" and "default" devices, whatever the machine's ALSA setup is.

`PulseServer.start()` sets PULSE_SERVER, PULSE_RUNTIME_PATH, PULSE_CLIENTCONFIG and
ALSA_CONFIG_PATH in os.environ (so this process, pactl and the device probe helper all use the
private server) and re-initializes PortAudio to pick the config up; `stop()` undoes both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

from chimed.devices import portaudio

ALSA_CONF = """\
pcm.!default { type pulse hint { show on description "PulseAudio (default)" } }
ctl.!default { type pulse }
pcm.pulse { type pulse hint { show on description "PulseAudio" } }
ctl.pulse { type pulse }
"""


def available() -> bool:
    return all(shutil.which(tool) for tool in ("pulseaudio", "pactl"))


class PulseServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.runtime = directory / "run"
        self.socket = self.runtime / "native"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "PULSE_CLIENTCONFIG": str(self.dir / "client.conf"),
            "ALSA_CONFIG_PATH": str(self.dir / "asound.conf"),
        }

    def start(self, timeout: float = 15.0) -> PulseServer:
        for sub in ("run", "state", "home"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "client.conf").write_text("autospawn = no\n")
        (self.dir / "asound.conf").write_text(ALSA_CONF)
        (self.dir / "default.pa").write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            "load-module module-null-sink sink_name=chimed_a rate=48000 "
            "sink_properties=device.description=ChimedA\n"
            "load-module module-null-sink sink_name=chimed_b rate=48000 "
            "sink_properties=device.description=ChimedB\n"
            "set-default-sink chimed_a\n"
            "set-default-source chimed_a.monitor\n"
        )
        server_env = {
            **os.environ,
            **self.env,
            "HOME": str(self.dir / "home"),
            "PULSE_STATE_PATH": str(self.dir / "state"),
        }
        self._log = open(self.dir / "pulseaudio.log", "wb")
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "--system=false",
                "-n",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-module-loading=no",
                "--log-target=stderr",
                "-F",
                str(self.dir / "default.pa"),
            ],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        for key, value in self.env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        deadline = time.monotonic() + timeout
        while self.pactl_ok("info") is False:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "pulseaudio.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"PulseAudio did not come up:\n{log}")
            time.sleep(0.05)  # readiness poll of a child process, bounded by the deadline
        portaudio.terminate()
        portaudio.initialize()
        return self

    def pactl_ok(self, *args: str) -> bool:
        result = subprocess.run(["pactl", *args], capture_output=True, timeout=10, check=False)
        return result.returncode == 0

    def pactl(self, *args: str) -> str:
        result = subprocess.run(
            ["pactl", *args], capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout

    def stop(self) -> None:
        # PortAudio lets go of its streams and ALSA's pulse connections while the server is
        # still up: a stream whose server dies under it spins in PortAudio's ALSA thread,
        # printing an error per turn, and Pa_Terminate then waits for that thread forever.
        portaudio.terminate()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        portaudio.initialize()
