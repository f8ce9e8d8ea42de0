"""The meeting page: served by the embedded service's web routes, loaded in headless Chromium
with the official amazon-chime-sdk-js bundle, joining through `POST /app/join`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from chimed.embedded.meeting_page import DIST_DIR, add_web_routes
from chimed.embedded.meetings import Registry
from chimed.embedded.service import EmbeddedChime

from tests.browser import Browser

pytestmark = pytest.mark.timeout(90)

WEB_DIR = DIST_DIR.parent
TURN_URL = "turn:127.0.0.1:3478?transport=udp"


@dataclass
class Site:
    registry: Registry
    base_url: str
    http: aiohttp.ClientSession

    async def join(self, body: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        async with self.http.post(f"{self.base_url}/app/join", data=data) as response:
            return response.status, await response.json()


@pytest.fixture
def dist() -> Path:
    """The built page: what the browser tests load (POST /app/join works without it)."""
    if not (DIST_DIR / "index.html").is_file():
        pytest.fail("the meeting page is not built: run make web")
    return DIST_DIR


@pytest.fixture
async def site(embedded: EmbeddedChime) -> AsyncIterator[Site]:
    async with aiohttp.ClientSession() as http:
        yield Site(embedded.registry, embedded.base_url, http)


async def _serve(dist_dir: Path) -> AsyncIterator[Site]:
    """The web routes alone on a bare application, for a dist/ of the test's choosing."""
    registry = Registry()
    app = web.Application()
    urls: dict[str, str] = {}
    add_web_routes(app, registry, lambda: (urls["base"], urls["ws"], TURN_URL), dist_dir=dist_dir)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    urls["base"], urls["ws"] = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            yield Site(registry, urls["base"], http)
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(dist: Path) -> AsyncIterator[Browser]:
    async with Browser() as b:
        yield b


# --- POST /app/join ------------------------------------------------------------------------------
async def test_join_creates_meeting_and_attendee(site: Site, embedded: EmbeddedChime) -> None:
    status, body = await site.join({"meeting": "standup", "name": "alice"})
    assert status == 200
    meeting, attendee = body["Meeting"], body["Attendee"]
    meeting_id = meeting["MeetingId"]
    assert meeting["ExternalMeetingId"] == "standup"
    assert meeting["MediaPlacement"]["SignalingUrl"] == f"{embedded.ws_url}/control/{meeting_id}"
    assert meeting["MediaPlacement"]["TurnControlUrl"] == embedded.turn_url
    assert attendee["ExternalUserId"] == "alice"
    # The join token the page hands to the SDK is the one signaling will authenticate.
    admitted = site.registry.authenticate(meeting_id, attendee["JoinToken"])
    assert admitted is not None
    assert admitted[1].attendee_id == attendee["AttendeeId"]


async def test_join_is_idempotent_on_meeting_name(site: Site) -> None:
    _, alice = await site.join({"meeting": "standup", "name": "alice"})
    _, bob = await site.join({"meeting": "standup", "name": "bob"})
    _, alice_again = await site.join({"meeting": "standup", "name": "alice"})
    _, other = await site.join({"meeting": "retro", "name": "alice"})

    standup_id = alice["Meeting"]["MeetingId"]
    assert bob["Meeting"]["MeetingId"] == standup_id
    assert alice_again["Meeting"]["MeetingId"] == standup_id
    assert other["Meeting"]["MeetingId"] != standup_id
    assert bob["Attendee"]["AttendeeId"] != alice["Attendee"]["AttendeeId"]
    assert alice_again["Attendee"]["AttendeeId"] == alice["Attendee"]["AttendeeId"]
    assert len(site.registry.meetings) == 2
    names = [a.external_user_id for a in site.registry.meetings[standup_id].attendees.values()]
    assert names == ["alice", "bob"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"meeting": "a", "name": "alice"}, "meeting name must be 2 to 64"),
        ({"meeting": "m" * 65, "name": "alice"}, "meeting name must be 2 to 64"),
        ({"meeting": "standup", "name": " b "}, "your name must be 2 to 64"),
        ({"meeting": "standup", "name": "n" * 65}, "your name must be 2 to 64"),
        ({"meeting": "standup"}, "'name'"),
        ({"meeting": "standup", "name": 42}, "must be a string"),
        (["standup", "alice"], "JSON object"),
        ("not json", "must be JSON"),
    ],
)
async def test_join_rejects_bad_requests(site: Site, body: Any, expected: str) -> None:
    status, answer = await site.join(body)
    assert status == 400
    assert expected in answer["message"]
    assert site.registry.meetings == {}


# --- static files --------------------------------------------------------------------------------
@pytest.mark.browser  # no browser, but the page built by `make web`
async def test_page_and_assets_are_served(site: Site, dist: Path) -> None:
    async with site.http.get(f"{site.base_url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "/app/app.js" in await response.text()
    async with site.http.get(f"{site.base_url}/app/app.js") as response:
        assert response.status == 200
        assert "javascript" in response.content_type
    for missing in ("/app/nothing.js", "/app/.built", "/app/..%2Fbuild.mjs"):
        async with site.http.get(f"{site.base_url}{missing}") as response:
            assert response.status == 404, missing


async def test_unbuilt_page_answers_503(tmp_path: Path) -> None:
    async for site in _serve(tmp_path):
        async with site.http.get(f"{site.base_url}/") as response:
            assert response.status == 503
            assert "run make web" in await response.text()
        # The join endpoint does not depend on the bundle.
        status, _ = await site.join({"meeting": "standup", "name": "alice"})
        assert status == 200


# --- in the browser ------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.slow
async def test_page_loads_the_sdk_in_chromium(site: Site, browser: Browser) -> None:
    page = await browser.open(site.base_url + "/")
    assert await page.eval("typeof window.chimedPage") == "object"
    pinned = json.loads((WEB_DIR / "package.json").read_text())["dependencies"]
    assert await page.eval("chimedPage.sdkVersion") == pinned["amazon-chime-sdk-js"]
    state = await page.eval("chimedPage.state")
    assert state["status"] == "idle"
    assert state["roster"] == [] and state["messages"] == []
    assert await page.eval("document.getElementById('join-form').hidden") is False
    assert page.errors() == []


@pytest.mark.browser
@pytest.mark.slow
async def test_page_reports_rejected_join(site: Site, browser: Browser) -> None:
    page = await browser.open(site.base_url + "/")
    error = await page.eval("chimedPage.join('x', 'alice').then(() => null, (e) => e.message)")
    assert error is not None and "meeting name must be 2 to 64" in error
    state = await page.eval("chimedPage.state")
    assert state["status"] == "failed"
    assert state["meeting"] is None
    assert site.registry.meetings == {}


@pytest.mark.browser
@pytest.mark.slow
async def test_page_join_form_creates_attendee_and_starts_the_sdk(
    site: Site, browser: Browser
) -> None:
    page = await browser.open(site.base_url + "/?meeting=standup&name=alice")
    # A person's path: the form, prefilled from the URL, submitted with its button.
    await page.eval("document.querySelector('#join-form button').click()")
    state = await page.eval("chimedPage.waitFor((s) => s.status === 'connecting')")
    meeting = site.registry.get_meeting(state["meeting"]["meetingId"])
    assert meeting.external_meeting_id == "standup"
    attendee = site.registry.get_attendee(meeting.meeting_id, state["self"]["attendeeId"])
    assert attendee.external_user_id == "alice"
    assert await page.wait_for("document.getElementById('join-form').hidden")
    assert await page.eval("document.getElementById('meeting-name').textContent") == "standup"
    stopped = await page.eval("chimedPage.leave()")
    assert stopped["status"] in ("stopped", "failed")
    assert await page.eval("chimedPage.session") is None


@pytest.mark.browser
@pytest.mark.slow
async def test_browser_joins_through_the_signaling_server(site: Site, browser: Browser) -> None:
    """The SDK opens the signaling WebSocket with the join token from /app/join and sends JOIN;
    it reports the session started only after the server's JOIN_ACK and SUBSCRIBE_ACK."""
    page = await browser.open(site.base_url + "/")
    ids = await page.eval("chimedPage.join('standup', 'alice', {audio: 'silence'})", 30)
    state = await page.eval("chimedPage.state")
    assert state["status"] == "started"
    assert state["self"]["attendeeId"] == ids["attendeeId"]
    assert site.registry.get_meeting(ids["meetingId"]).external_meeting_id == "standup"
    stopped = await page.eval("chimedPage.leave()")
    assert stopped["status"] == "stopped"
    assert stopped["stopStatus"]["name"] == "Left"
