"""Interop: the official amazon-chime-sdk-js client in headless Chromium and a chimed attendee in
one embedded meeting. The browser loads the meeting page from the daemon's embedded service and
joins through it; chimed joins over gRPC. Everything is checked from both sides: presence and
leaving, data messages, mute, and audio (chimed's tone heard by the browser, the browser's fake
microphone heard by chimed)."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chime.client import AsyncChimed
from chime.v1 import audio_pb2, session_pb2, types_pb2
from chimed.embedded.meeting_page import DIST_DIR
from google.protobuf import struct_pb2

from tests.browser import Browser, BrowserError, Page
from tests.daemon_proc import DaemonProcess
from tests.helpers import bot_in_named_meeting
from tests.streams import EventStream, attendee_ids

S = session_pb2
pytestmark = [pytest.mark.browser, pytest.mark.daemon, pytest.mark.slow, pytest.mark.timeout(90)]

# Generous: a loaded 2-core machine runs Chromium, the daemon and the media server at once.
TIMEOUT = 20.0
TONE = "virtual:tone?frequency=440&level=-20"


@dataclass
class Meeting:
    """A browser attendee and a chimed attendee in one embedded meeting."""

    chimed: AsyncChimed
    page: Page
    meeting: Any
    session: S.Session  # chimed's
    browser_id: str  # the browser's attendee id
    realtime: EventStream  # chimed's REALTIME observer

    @property
    def chimed_id(self) -> str:
        return str(self.session.attendee_id)

    async def wait_page(self, predicate: str, timeout: float = TIMEOUT) -> Any:
        """Wait (in the page, on each state change) until `predicate(state)` holds."""
        ms = int(timeout * 1000)
        return await self.page.eval(f"chimedPage.waitFor({predicate}, {ms})", timeout + 5)

    async def browser_roster(self) -> set[str]:
        return {a["attendeeId"] for a in await self.page.eval("chimedPage.roster")}


def _names(ids: str) -> Callable[[Any], bool]:
    """A predicate on an AttendeesJoined/Left/Muted... event: it names the attendee `ids`."""
    return lambda event: ids in attendee_ids(event)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not (DIST_DIR / "index.html").is_file():
        pytest.fail("the meeting page is not built: run make web")
    async with Browser() as b:
        yield b


@pytest.fixture
async def meeting(
    daemon: DaemonProcess, chimed: AsyncChimed, browser: Browser
) -> AsyncIterator[Meeting]:
    """chimed joins first (with a tone as its microphone), then the browser joins the same
    meeting by name through the page, with Chromium's fake microphone."""
    assert daemon.embedded_url, "the daemon did not report its embedded service"
    name = f"interop-{uuid.uuid4().hex[:8]}"
    # The page creates meetings with their name as the idempotency token: so does chimed here,
    # and both end up in the same meeting.
    chime_meeting, session = await bot_in_named_meeting(
        chimed, name, S.DeviceSelection(audio_input_device_id=TONE)
    )
    sid = session.session_id
    realtime = EventStream(
        chimed.sessions.AddRealtimeObserver(S.AddRealtimeObserverRequest(session_id=sid))
    )
    page: Page | None = None
    try:
        await chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
        page = await browser.open(daemon.embedded_url + "/", TIMEOUT)
        ids = await page.eval(
            f"chimedPage.join({json.dumps(name)}, 'browser-user', {{timeoutMs: {TIMEOUT * 1000}}})",
            TIMEOUT + 5,
        )
        assert ids["meetingId"] == chime_meeting.meeting_id
        yield Meeting(chimed, page, chime_meeting, session, ids["attendeeId"], realtime)
    finally:
        try:
            if page is not None:
                # Leave first, so the meeting is not left with a browser attendee that drops.
                with contextlib.suppress(BrowserError, TimeoutError):
                    await page.eval("chimedPage.leave().then(() => true)", TIMEOUT)
        finally:
            await realtime.close()
            await chimed.sessions.DeleteSession(S.DeleteSessionRequest(session_id=sid))


async def test_presence_and_leaving_seen_both_ways(meeting: Meeting) -> None:
    m = meeting
    # chimed sees the browser's attendee join, under the name the page gave it.
    event = await m.realtime.expect("attendees_joined", _names(m.browser_id), TIMEOUT)
    joined = {a.attendee_id: a.external_user_id for a in event.attendees_joined.attendees}
    assert joined[m.browser_id] == "browser-user"
    # The browser's roster has chimed's attendee, by id and name.
    state = await m.wait_page(f"(s) => s.roster.some((a) => a.attendeeId === '{m.chimed_id}')")
    entry = next(a for a in state["roster"] if a["attendeeId"] == m.chimed_id)
    assert entry["name"] == "chimed-bot" and not entry["self"]
    assert {m.browser_id, m.chimed_id} <= {a["attendeeId"] for a in state["roster"]}

    # chimed leaves: the browser's roster loses it (and says it left, not dropped).
    sid = m.session.session_id
    await m.chimed.sessions.Stop(S.StopRequest(session_id=sid), timeout=TIMEOUT)
    state = await m.wait_page(f"(s) => !s.roster.some((a) => a.attendeeId === '{m.chimed_id}')")
    assert m.browser_id in {a["attendeeId"] for a in state["roster"]}
    assert any(e["type"] == "left" and e["attendeeId"] == m.chimed_id for e in state["events"])

    # chimed rejoins, is seen again; then the browser leaves and chimed sees it leave.
    await m.chimed.sessions.Start(S.StartRequest(session_id=sid, wait=True), timeout=TIMEOUT)
    await m.wait_page(f"(s) => s.roster.some((a) => a.attendeeId === '{m.chimed_id}')")
    await m.realtime.expect("attendees_joined", _names(m.browser_id), TIMEOUT)
    stopped = await m.page.eval("chimedPage.leave()", TIMEOUT)
    assert stopped["status"] == "stopped"
    event = await m.realtime.expect("attendees_left", _names(m.browser_id), TIMEOUT)
    assert [a.external_user_id for a in event.attendees_left.attendees] == ["browser-user"]
    assert not [e for e in m.realtime.events if e.WhichOneof("event") == "attendees_dropped"]


async def test_data_messages_both_ways(meeting: Meeting) -> None:
    m = meeting
    sid = m.session.session_id
    inbox = EventStream(
        m.chimed.sessions.AddDataMessageObserver(S.AddDataMessageObserverRequest(session_id=sid))
    )
    try:
        await inbox.registered()
        # Browser -> chimed: the SDK's realtimeSendDataMessage with an object sends its JSON.
        await m.page.eval("chimedPage.send({text: 'from the browser', n: 1, ok: true})")
        event = await inbox.expect("data_message_received", timeout=TIMEOUT)
        message = event.data_message_received.data_message
        assert message.topic == "default"
        assert message.sender_attendee_id == m.browser_id
        assert message.sender_external_user_id == "browser-user"
        assert json.loads(message.data) == {"text": "from the browser", "n": 1, "ok": True}
        assert dict(message.json) == {"text": "from the browser", "n": 1.0, "ok": True}
        assert message.timestamp_ms > 0 and not message.throttled
    finally:
        await inbox.close()

    # chimed -> browser.
    payload = struct_pb2.Struct()
    payload.update({"text": "from chimed", "items": [1, 2], "nested": {"a": "b"}})
    await m.chimed.sessions.SendMessage(S.SendMessageRequest(session_id=sid, message=payload))
    state = await m.wait_page("(s) => s.messages.some((x) => !x.local)")
    received = [x for x in state["messages"] if not x["local"]]
    assert len(received) == 1
    got = received[0]
    assert got["topic"] == "default"
    assert got["senderAttendeeId"] == m.chimed_id
    assert got["senderName"] == "chimed-bot"
    assert got["json"] == {"text": "from chimed", "items": [1, 2], "nested": {"a": "b"}}
    assert got["timestampMs"] > 0 and not got["throttled"]


async def test_mute_seen_both_ways(meeting: Meeting) -> None:
    m = meeting
    sid = m.session.session_id
    await m.realtime.expect("attendees_joined", _names(m.browser_id), TIMEOUT)
    # The browser mutes: chimed sees attendees_muted, then attendees_unmuted.
    assert await m.page.eval("chimedPage.mute()") is True
    await m.realtime.expect("attendees_muted", _names(m.browser_id), TIMEOUT)
    await m.page.eval("chimedPage.unmute()")
    await m.realtime.expect("attendees_unmuted", _names(m.browser_id), TIMEOUT)

    # chimed mutes: the browser's roster shows chimed's attendee muted, then unmuted.
    chimed_entry = f"s.roster.find((a) => a.attendeeId === '{m.chimed_id}')"
    await m.wait_page(f"(s) => {chimed_entry} !== undefined")
    muted = await m.chimed.audio.Mute(audio_pb2.MuteRequest(session_id=sid))
    assert muted.muted
    await m.wait_page(f"(s) => {chimed_entry}?.muted === true")
    unmuted = await m.chimed.audio.Unmute(audio_pb2.UnmuteRequest(session_id=sid))
    assert not unmuted.muted
    await m.wait_page(f"(s) => {chimed_entry}?.muted === false")


def _heard(attendee_id: str) -> Callable[[Any], bool]:
    """A VolumeChanged that puts `attendee_id` above not-speaking."""
    return lambda event: any(
        u.attendee.attendee_id == attendee_id
        and u.volume_level > types_pb2.VOLUME_LEVEL_NOT_SPEAKING
        for u in event.volume_updates
    )


async def test_chimed_tone_heard_by_browser(meeting: Meeting) -> None:
    """chimed's tone, mixed by the media server, reaches the SDK: its volume indicator for
    chimed's attendee rises above 0."""
    m = meeting
    state = await m.wait_page(f"(s) => (s.volumes['{m.chimed_id}'] ?? 0) > 0")
    assert 0 < state["volumes"][m.chimed_id] <= 1


async def test_browser_microphone_heard_by_chimed(meeting: Meeting) -> None:
    """Chromium's fake microphone (a periodic beep) reaches chimed as volume events."""
    m = meeting
    event = await m.realtime.expect("volume_changed", _heard(m.browser_id), TIMEOUT)
    assert event.session_id == m.session.session_id
