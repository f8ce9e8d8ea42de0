"""Video interop: the official web client in headless Chromium (fake camera) and a chimed
attendee sending its test pattern, in one embedded meeting of the daemon. The browser's camera
becomes a chimed tile whose frames have the size the browser sends and a real picture;
chimed's pattern plays in the browser under chimed's attendee id, at its size. With VP8 and
with H.264 as both sides' send codec."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from chime.client import AsyncChimed, connect_aio
from chime.v1 import session_pb2, video_pb2
from chimed.embedded.meeting_page import DIST_DIR

from tests.browser import Browser
from tests.daemon_proc import DaemonProcess
from tests.helpers import bot_in_named_meeting
from tests.streams import EventStream
from tests.test_video import RGB24, next_frames, tile_observer

S = session_pb2
V = video_pb2
pytestmark = [pytest.mark.browser, pytest.mark.daemon, pytest.mark.slow, pytest.mark.timeout(150)]

TIMEOUT = 40.0  # a loaded 2-core machine runs Chromium, the daemon and the media server


@pytest.fixture(scope="module", params=["vp8", "h264"])
def codec_daemon(request: pytest.FixtureRequest) -> Iterator[tuple[str, DaemonProcess]]:
    """A daemon sending its video in one codec (--video-codec), with that codec's name."""
    codec = str(request.param)
    proc = DaemonProcess(args=["--video-codec", codec]).start()
    yield codec, proc
    proc.stop()


async def test_browser_camera_and_chimed_pattern_see_each_other(
    codec_daemon: tuple[str, DaemonProcess],
) -> None:
    codec, daemon = codec_daemon
    async with connect_aio(daemon.target) as chimed:
        await _see_each_other(daemon, chimed, codec)


async def _see_each_other(daemon: DaemonProcess, chimed: AsyncChimed, codec: str) -> None:
    """Both sides send in `codec`: the page by its send preference, chimed by its flag."""
    if not (DIST_DIR / "index.html").is_file():
        pytest.fail("the meeting page is not built: run make web")
    assert daemon.embedded_url
    name = f"video-interop-{uuid.uuid4().hex[:8]}"
    _, session = await bot_in_named_meeting(chimed, name)
    sid = session.session_id
    await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
    tiles = tile_observer(chimed, sid)
    await tiles.registered()
    await chimed.video.StartRemote(V.StartRemoteRequest(session_id=sid))
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
    async with Browser() as browser:
        page = await browser.open(f"{daemon.embedded_url}/?codec={codec}", TIMEOUT)
        call = f"chimedPage.join({json.dumps(name)}, 'browser-user', "
        call += f"{{audio: 'silence', video: true, timeoutMs: {int(TIMEOUT * 1000)}}})"
        ids = await page.eval(call, TIMEOUT + 5)
        browser_id = str(ids["attendeeId"])

        # chimed's pattern plays in the browser, labelled with chimed's attendee id.
        seen: dict[str, Any] = await page.wait_for(
            "chimedPage.videos.find((v) => v.attendeeId === "
            f"{json.dumps(session.attendee_id)} && !v.local && v.playing && v.width > 0)",
            TIMEOUT,
        )
        assert (seen["width"], seen["height"], seen["content"]) == (640, 480, False)

        # The browser's camera is a chimed tile of the camera's size, with a real picture.
        event = await tiles.expect(
            "video_tile_added",
            lambda added: added.tile_state.attendee_id == browser_id,
            TIMEOUT,
        )
        tile = event.video_tile_added.tile_state
        own = await page.wait_for(
            "chimedPage.videos.find((v) => v.local && v.playing && v.width > 0)", TIMEOUT
        )
        # The web client sends its camera scaled down (its uplink policy): the tile has the
        # size sent, the camera's aspect, and what chimed decodes is that size.
        size = (tile.video_stream_content_width, tile.video_stream_content_height)
        assert 0 < size[0] <= own["width"]
        assert size[0] * own["height"] == size[1] * own["width"]
        view = EventStream(
            chimed.video.BindView(
                V.BindViewRequest(session_id=sid, tile_id=tile.tile_id, format=RGB24)
            )
        )
        (frame,) = await next_frames(view, 1)
        assert (frame.width, frame.height) == size
        pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.height, frame.width, 3)
        assert pixels.std() > 10  # Chromium's fake camera draws a moving picture, not a flat one
        await view.close()
        await page.eval("chimedPage.leave().then(() => true)", TIMEOUT)
    await tiles.close()
    await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))
