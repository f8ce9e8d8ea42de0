"""Video across attendees over the daemon socket, through the embedded service's forwarding:
remote tiles, views of them, pause and resume, a live camera switch, removal, three
attendees, content share."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from chime.client import AsyncChimed
from chime.v1 import session_pb2, types_pb2, video_pb2

from tests.daemon_proc import DaemonProcess
from tests.helpers import create_meeting, started_session
from tests.streams import EventStream
from tests.test_video import JPEG, av_observer, decode_jpeg, next_frames, tile_observer
from tests.video_media import Display, write_video

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

V = video_pb2
SESSION_STATUS_VIEW_ONLY = types_pb2.SESSION_STATUS_CODE_VIDEO_AT_CAPACITY_VIEW_ONLY


def state_of(event: Any) -> types_pb2.VideoTileState:
    state: types_pb2.VideoTileState = getattr(event, event.WhichOneof("event")).tile_state
    return state


async def delete_sessions(chimed: AsyncChimed, *sessions: session_pb2.Session) -> None:
    for session in sessions:
        await chimed.sessions.DeleteSession(
            session_pb2.DeleteSessionRequest(session_id=session.session_id)
        )


async def sender_and_viewer(
    chimed: AsyncChimed,
) -> tuple[session_pb2.Session, session_pb2.Session, EventStream]:
    """Alice and bob started in a new meeting; bob receives video, his tiles observed."""
    meeting = await create_meeting(chimed)
    alice = await started_session(chimed, meeting, "alice")
    bob = await started_session(chimed, meeting, "bob")
    tiles = tile_observer(chimed, bob.session_id)
    await tiles.registered()
    await chimed.video.StartRemote(V.StartRemoteRequest(session_id=bob.session_id))
    return alice, bob, tiles


async def remote_tile(tiles: EventStream, attendee_id: str) -> types_pb2.VideoTileState:
    event = await tiles.expect(
        "video_tile_added", lambda added: added.tile_state.attendee_id == attendee_id
    )
    return state_of(event)


async def test_a_pattern_becomes_a_remote_tile_that_pauses_switches_and_goes(
    chimed: AsyncChimed,
) -> None:
    alice, bob, tiles = await sender_and_viewer(chimed)
    events = av_observer(chimed, bob.session_id)
    await events.registered()
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=alice.session_id))
    tile = await remote_tile(tiles, alice.attendee_id)
    assert not tile.is_local_tile and not tile.is_content
    available = await events.expect("remote_video_sources_available")
    (source,) = available.remote_video_sources_available.sources
    assert (source.attendee.attendee_id, source.attendee.external_user_id) == (
        alice.attendee_id,
        "alice",
    )
    assert (tile.video_stream_content_width, tile.video_stream_content_height) == (640, 480)

    view = EventStream(
        chimed.video.BindView(
            V.BindViewRequest(session_id=bob.session_id, tile_id=tile.tile_id, format=JPEG)
        )
    )
    first, *_, last = await next_frames(view, 6)
    pictures = [decode_jpeg(f.data) for f in (first, last)]
    assert pictures[0].shape == (480, 640, 3)
    assert not np.array_equal(pictures[0], pictures[1])  # A's pattern moves
    assert pictures[0].std() > 20  # bars, not a flat picture

    paused = await chimed.video.PauseTile(
        V.PauseTileRequest(session_id=bob.session_id, tile_id=tile.tile_id)
    )
    assert paused.tile_state.pause_state == types_pb2.VIDEO_PAUSE_STATE_PAUSED_BY_USER_REQUEST
    await tiles.expect("video_tile_paused")
    await chimed.video.ResumeTile(
        V.ResumeTileRequest(session_id=bob.session_id, tile_id=tile.tile_id)
    )
    resumed = state_of(await tiles.expect("video_tile_resumed"))
    assert resumed.pause_state == types_pb2.VIDEO_PAUSE_STATE_UNPAUSED

    small = "virtual:pattern?width=320&height=240"
    await chimed.video.SwitchCamera(
        V.SwitchCameraRequest(session_id=alice.session_id, device_id=small)
    )
    resized = state_of(await tiles.expect("video_tile_size_changed"))
    assert (resized.video_stream_content_width, resized.video_stream_content_height) == (320, 240)
    frame = await view.expect_next()
    while frame.width != 320:  # frames of the old size still on their way
        frame = await view.expect_next()
    assert decode_jpeg(frame.data).shape == (240, 320, 3)

    await chimed.video.StopLocal(V.StopLocalRequest(session_id=alice.session_id))
    removed = state_of(await tiles.expect("video_tile_removed"))
    assert removed.tile_id == tile.tile_id
    assert await view.ended() == grpc.StatusCode.NOT_FOUND
    gone = await events.expect("remote_video_sources_unavailable")
    assert (
        gone.remote_video_sources_unavailable.sources[0].attendee.attendee_id == alice.attendee_id
    )
    await events.close()
    await tiles.close()
    await delete_sessions(chimed, alice, bob)


async def test_three_attendees_see_each_other(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    sessions = [await started_session(chimed, meeting, name) for name in ("ann", "ben", "cat")]
    observers = {}
    for session in sessions:
        observers[session.session_id] = tile_observer(chimed, session.session_id)
        await observers[session.session_id].registered()
        await chimed.video.StartRemote(V.StartRemoteRequest(session_id=session.session_id))
        await chimed.video.StartLocal(V.StartLocalRequest(session_id=session.session_id))
    for session in sessions:
        tiles = observers[session.session_id]
        others = {s.attendee_id for s in sessions if s is not session}
        seen: set[str] = set()
        while seen != others:
            added = state_of(await tiles.expect("video_tile_added"))
            if not added.is_local_tile:
                seen.add(added.attendee_id)
        await tiles.close()
    await delete_sessions(chimed, *sessions)


async def test_content_share_from_a_file_is_a_content_tile(
    chimed: AsyncChimed, tmp_path: Path
) -> None:
    path = tmp_path / "share.webm"
    write_video(path, 30, size=(320, 240))
    alice, bob, tiles = await sender_and_viewer(chimed)
    started = await chimed.video.StartContentShare(
        V.StartContentShareRequest(
            session_id=alice.session_id, device_id=f"virtual:file?path={path}&loop=1"
        )
    )
    assert started.attendee_id == alice.attendee_id + "#content"
    tile = await remote_tile(tiles, started.attendee_id)
    assert tile.is_content
    assert (tile.video_stream_content_width, tile.video_stream_content_height) == (320, 240)
    await chimed.video.StopContentShare(V.StopContentShareRequest(session_id=alice.session_id))
    removed = state_of(await tiles.expect("video_tile_removed"))
    assert removed.tile_id == tile.tile_id
    await tiles.close()
    await delete_sessions(chimed, alice, bob)


async def limited_meeting_sessions(
    chimed: AsyncChimed, base_url: str, users: list[str]
) -> list[session_pb2.Session]:
    """Started sessions in a meeting admitting one video sender, made on the embedded
    service's control plane (the meeting's tag sets its limit, as Chime's service quota)."""
    tags = [{"Key": "chimed:video-sender-limit", "Value": "1"}]
    async with aiohttp.ClientSession() as http:
        body = {
            "ClientRequestToken": uuid.uuid4().hex,
            "ExternalMeetingId": "limited",
            "MediaRegion": "us-east-1",
        }
        async with http.post(f"{base_url}/meetings", json={**body, "Tags": tags}) as response:
            meeting = (await response.json())["Meeting"]
        sessions = []
        for user in users:
            url = f"{base_url}/meetings/{meeting['MeetingId']}/attendees"
            async with http.post(url, json={"ExternalUserId": user}) as response:
                attendee = (await response.json())["Attendee"]
            created = await chimed.sessions.CreateSession(
                session_pb2.CreateSessionRequest(
                    meeting_json=json.dumps({"Meeting": meeting}),
                    attendee_json=json.dumps({"Attendee": attendee}),
                )
            )
            started = await chimed.sessions.Start(
                session_pb2.StartRequest(session_id=created.session.session_id, wait=True)
            )
            sessions.append(started.session)
    return sessions


async def test_sender_limit_gives_view_only(daemon: DaemonProcess, chimed: AsyncChimed) -> None:
    assert daemon.embedded_url is not None
    alice, bob = await limited_meeting_sessions(chimed, daemon.embedded_url, ["alice", "bob"])
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=alice.session_id))
    events = av_observer(chimed, bob.session_id)
    tiles = tile_observer(chimed, bob.session_id)
    await events.registered()
    await tiles.registered()
    await chimed.video.StartRemote(V.StartRemoteRequest(session_id=bob.session_id))
    await remote_tile(tiles, alice.attendee_id)
    await events.expect("video_session_started")
    # One sender is the limit: bob is told he cannot send (before or after his video started).
    told = [e for e in events.events if e.WhichOneof("event") == "camera_send_availability_updated"]
    unavailable = told[0] if told else await events.expect("camera_send_availability_updated")
    assert not unavailable.camera_send_availability_updated.available
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=bob.session_id))
    view_only = SESSION_STATUS_VIEW_ONLY
    await events.expect("video_session_started", lambda e: e.status.code == view_only)
    # The local tile, if it came at all, went. Alice's tile going (StopRemote) comes after
    # every earlier tile event on the stream.
    await chimed.video.StopRemote(V.StopRemoteRequest(session_id=bob.session_id))
    await tiles.expect(
        "video_tile_removed", lambda e: e.tile_state.attendee_id == alice.attendee_id
    )
    local = [e for e in tiles.events if state_of(e).is_local_tile]
    added = [state_of(e).tile_id for e in local if e.WhichOneof("event") == "video_tile_added"]
    gone = [state_of(e).tile_id for e in local if e.WhichOneof("event") == "video_tile_removed"]
    assert added == gone
    await events.close()
    await tiles.close()
    await delete_sessions(chimed, alice, bob)


@pytest.mark.xvfb
async def test_content_share_of_a_screen_is_a_content_tile(
    chimed: AsyncChimed, xvfb: Display
) -> None:
    alice, bob, tiles = await sender_and_viewer(chimed)
    started = await chimed.video.StartContentShare(
        V.StartContentShareRequest(session_id=alice.session_id, device_id=f"x11:{xvfb.name}")
    )
    tile = await remote_tile(tiles, started.attendee_id)
    assert tile.is_content
    assert (tile.video_stream_content_width, tile.video_stream_content_height) == (320, 240)
    view = EventStream(
        chimed.video.BindView(
            V.BindViewRequest(session_id=bob.session_id, tile_id=tile.tile_id, format=JPEG)
        )
    )
    (frame,) = await next_frames(view, 1)
    red = decode_jpeg(frame.data).reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60  # the screen's red root window
    await view.close()
    await tiles.close()
    await delete_sessions(chimed, alice, bob)
