"""The API guard `make api-check` runs: buf breaking refuses an incompatible chime.v1."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = shutil.which("buf", path=str(Path(sys.executable).parent))
SNAPSHOT = ROOT / "protos/snapshots/chime-v1.binpb"


def _breaking(tree: Path) -> subprocess.CompletedProcess[str]:
    assert BUF, "buf is installed by `make deps` (PyPI buf-bin)"
    return subprocess.run(
        [BUF, "breaking", "--against", str(SNAPSHOT)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_deleting_a_field_breaks_the_released_api(tmp_path: Path) -> None:
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    assert _breaking(tmp_path).returncode == 0, "the protos as committed pass"
    session = tmp_path / "protos/chime/v1/session.proto"
    text = session.read_text()
    session.write_text(text.replace("  uint32 lifetime_ms = 3;\n", "", 1))
    out = _breaking(tmp_path)
    assert out.returncode != 0
    assert 'field "3" with name "lifetime_ms" on message "SendMessageRequest"' in out.stdout
