"""Video between two official web clients: two meeting pages in headless Chromium (fake
cameras) join one embedded meeting, start their cameras and each plays the other's picture,
forwarded by the embedded media server, with VP8 and with H.264 as the send codec."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from chimed.embedded.meeting_page import DIST_DIR
from chimed.embedded.service import EmbeddedChime

from tests.browser import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150)]

TIMEOUT = 40.0  # a loaded 2-core machine runs two Chromium pages and the media server


async def join(page: Page, meeting: str, name: str, video: bool = True) -> str:
    call = f"chimedPage.join({json.dumps(meeting)}, {json.dumps(name)}, "
    call += f"{{audio: 'silence', video: {json.dumps(video)}, timeoutMs: {int(TIMEOUT * 1000)}}})"
    ids = await page.eval(call, TIMEOUT + 5)
    return str(ids["attendeeId"])


async def remote_playing(page: Page, attendee_id: str) -> dict[str, Any]:
    """The page's video element of `attendee_id`'s camera, once it plays a picture."""
    found = await page.wait_for(
        "chimedPage.videos.find((v) => v.attendeeId === "
        f"{json.dumps(attendee_id)} && !v.local && v.playing && v.width > 0)",
        TIMEOUT,
    )
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_two_pages_see_each_others_camera(embedded: EmbeddedChime, codec: str) -> None:
    if not (DIST_DIR / "index.html").is_file():
        pytest.fail("the meeting page is not built: run make web")
    meeting = f"video-{uuid.uuid4().hex[:8]}"
    async with Browser() as browser:
        url = f"{embedded.base_url}/?codec={codec}"
        alice_page = await browser.open(url, TIMEOUT)
        bob_page = await browser.open(url, TIMEOUT)
        alice = await join(alice_page, meeting, "alice")
        bob = await join(bob_page, meeting, "bob")
        seen_by_bob = await remote_playing(bob_page, alice)
        seen_by_alice = await remote_playing(alice_page, bob)
        for seen in (seen_by_bob, seen_by_alice):
            assert seen["content"] is False
            assert seen["width"] > 0 and seen["height"] > 0
        # Each page also shows its own camera, labelled local.
        for page, own in ((alice_page, alice), (bob_page, bob)):
            videos = await page.eval("chimedPage.videos")
            assert any(v["local"] and v["attendeeId"] == own for v in videos)
        # The media server forwarded what the page asked for: its send codec.
        sent = _sent_codecs(embedded)
        assert sent == {codec.upper()}, sent
        # Bob stops his camera: his tile leaves alice's page; he starts it again: it is back
        # (a new stream, on a section Chrome may recycle).
        await bob_page.eval("chimedPage.stopCamera()", TIMEOUT)
        await alice_page.wait_for(
            f"!chimedPage.videos.some((v) => v.attendeeId === {json.dumps(bob)})", TIMEOUT
        )
        await bob_page.eval("chimedPage.startCamera()", TIMEOUT)
        await remote_playing(alice_page, bob)
        for page in (alice_page, bob_page):
            await page.eval("chimedPage.leave()", TIMEOUT)


def _sent_codecs(embedded: EmbeddedChime) -> set[str | None]:
    """The codec of every source the media server forwards now."""
    router = embedded.signaling.media.video
    return {
        router.forwarding(meeting_id).codec(stream_id)
        for meeting_id in embedded.registry.meetings
        for stream_id in router.forwarding(meeting_id).source_ids()
    }


async def test_a_content_share_plays_as_a_content_tile(embedded: EmbeddedChime) -> None:
    """The SDK's content share is a second session, `<attendee>#content`, with the join token
    `<token>#content`; the other page plays it in a tile marked content."""
    meeting = f"content-{uuid.uuid4().hex[:8]}"
    async with Browser() as browser:
        alice_page = await browser.open(embedded.base_url + "/", TIMEOUT)
        bob_page = await browser.open(embedded.base_url + "/", TIMEOUT)
        alice = await join(alice_page, meeting, "alice", video=False)
        await join(bob_page, meeting, "bob", video=False)
        await alice_page.eval("chimedPage.shareContent(640, 360)", TIMEOUT)
        shared = await remote_playing(bob_page, f"{alice}#content")
        assert shared["content"] is True
        assert (shared["width"], shared["height"]) == (640, 360)
        for page in (alice_page, bob_page):
            await page.eval("chimedPage.leave()", TIMEOUT)
