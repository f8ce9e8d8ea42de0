"""Run a real chimed process for tests, and talk to it over its Unix socket."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 30.0


@dataclass
class DaemonProcess:
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    proc: subprocess.Popen[str] | None = None
    socket_path: str = ""
    target: str = ""
    embedded_url: str | None = None
    tcp_address: str | None = None
    output: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> DaemonProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="chimed-test-")
        self.socket_path = str(Path(self._tmp.name) / "chimed.sock")
        self.target = f"unix:{self.socket_path}"
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chimed", "--socket", self.socket_path, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(READY_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("chimed did not start:\n" + "".join(self.output))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if m := re.search(r"embedded Chime service at (\S+)", line):
                self.embedded_url = m.group(1)
            elif m := re.search(r"chimed listening on (\S+:\d+)$", line.strip()):
                self.tcp_address = m.group(1)
            elif re.match(r"chimed \S+ listening on unix:", line):
                self._ready.set()
        self._ready.set()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def log(self) -> str:
        return "".join(self.output)


class EmbeddedProcess:
    """`chimed embedded` as its own process: one service shared by daemons and browsers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chimed", "embedded", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stdout is not None
        self.url = ""
        for line in self.proc.stdout:  # ends at EOF if the process dies
            if m := re.search(r"embedded Chime service at (\S+)", line):
                self.url = m.group(1)
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("chimed embedded did not start")
        # Keep draining its output so a chatty service never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """For process-level conditions only (files, exit codes) where no event exists to await."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
