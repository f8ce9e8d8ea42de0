"""VideoService over the daemon socket, one session: the local video and its tile, views,
devices, SwitchCamera, StreamInput and bad input (the tests across attendees need the
embedded service's forwarding: test_video_meeting.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import av
import grpc
import numpy as np
import pytest
from chime.client import AsyncChimed
from chime.v1 import session_pb2, video_pb2

from tests.helpers import create_meeting, create_session, started_session
from tests.streams import EventStream

pytestmark = pytest.mark.daemon

V = video_pb2
JPEG = V.FRAME_FORMAT_JPEG
RGB24 = V.FRAME_FORMAT_RGB24


def decode_jpeg(data: bytes) -> np.ndarray[Any, Any]:
    codec = av.CodecContext.create("mjpeg", "r")
    (frame,) = codec.decode(av.Packet(data))
    return frame.to_ndarray(format="rgb24")


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


def tile_observer(chimed: AsyncChimed, session_id: str) -> EventStream:
    return EventStream(
        chimed.sessions.AddTileObserver(session_pb2.AddTileObserverRequest(session_id=session_id))
    )


def av_observer(chimed: AsyncChimed, session_id: str) -> EventStream:
    return EventStream(
        chimed.sessions.AddAudioVideoObserver(
            session_pb2.AddAudioVideoObserverRequest(session_id=session_id)
        )
    )


async def next_frames(view: EventStream, count: int) -> list[Any]:
    """The first `count` frames of a BindView stream."""
    return [await view.expect_next() for _ in range(count)]


async def test_local_video_tile_view_and_stop(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await started_session(chimed, meeting, "alice")
    sid = session.session_id
    tiles = tile_observer(chimed, sid)
    events = av_observer(chimed, sid)
    await tiles.registered()
    await events.registered()
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
    added = (await tiles.expect("video_tile_added")).video_tile_added.tile_state
    assert added.is_local_tile and added.attendee_id == session.attendee_id
    assert (added.video_stream_content_width, added.video_stream_content_height) == (640, 480)
    await events.expect("video_session_started_connecting")
    started = await events.expect("video_session_started")
    assert started.video_session_started.status.code == 1  # OK

    # Late observers start with the current state: the video session, the tiles.
    late_events = av_observer(chimed, sid)
    await late_events.expect("video_session_started")
    await late_events.close()
    late = tile_observer(chimed, sid)
    snapshot = (await late.expect("video_tile_added")).video_tile_added.tile_state
    assert snapshot.tile_id == added.tile_id
    await late.close()

    view = EventStream(
        chimed.video.BindView(
            V.BindViewRequest(session_id=sid, tile_id=added.tile_id, format=JPEG, max_fps=10)
        )
    )
    first, *_, last = await next_frames(view, 4)
    assert (first.width, first.height, first.format) == (640, 480, JPEG)
    pictures = [decode_jpeg(f.data) for f in (first, last)]
    assert pictures[0].shape == (480, 640, 3)
    assert not np.array_equal(pictures[0], pictures[1])  # the pattern moves
    assert last.timestamp_us > first.timestamp_us

    small = EventStream(
        chimed.video.BindView(
            V.BindViewRequest(
                session_id=sid, tile_id=added.tile_id, format=RGB24, max_width=320, max_height=320
            )
        )
    )
    (frame,) = await next_frames(small, 1)
    assert (frame.width, frame.height, len(frame.data)) == (320, 240, 320 * 240 * 3)
    await chimed.video.UnbindView(V.UnbindViewRequest(session_id=sid, tile_id=added.tile_id))
    assert await small.ended() == grpc.StatusCode.OK
    assert await view.ended() == grpc.StatusCode.OK

    view = EventStream(
        chimed.video.BindView(V.BindViewRequest(session_id=sid, tile_id=added.tile_id, format=JPEG))
    )
    await next_frames(view, 1)
    await chimed.video.StopLocal(V.StopLocalRequest(session_id=sid))
    removed = (await tiles.expect("video_tile_removed")).video_tile_removed.tile_state
    assert removed.tile_id == added.tile_id
    assert await view.ended() == grpc.StatusCode.NOT_FOUND
    stopped = await events.expect("video_session_stopped")
    assert stopped.video_session_stopped.status.code == 1

    # Tile ids are never reused.
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
    again = (await tiles.expect("video_tile_added")).video_tile_added.tile_state
    assert again.tile_id == added.tile_id + 1
    await events.expect("video_session_started")
    # Stopping the session stops its video session and removes its tiles.
    await chimed.sessions.Stop(session_pb2.StopRequest(session_id=sid))
    await events.expect("video_session_stopped")
    await tiles.expect("video_tile_removed", lambda e: e.tile_state.tile_id == again.tile_id)
    await chimed.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=sid))
    await tiles.close()
    await events.close()


async def test_switch_camera_live_changes_size_and_active_camera(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await started_session(chimed, meeting, "switcher")
    sid = session.session_id
    active = await chimed.video.GetActiveCamera(V.GetActiveCameraRequest(session_id=sid))
    assert active.device.id == "virtual:pattern"
    tiles = tile_observer(chimed, sid)
    await tiles.registered()
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
    added = (await tiles.expect("video_tile_added")).video_tile_added.tile_state
    small = "virtual:pattern?width=320&height=180"
    switched = await chimed.video.SwitchCamera(
        V.SwitchCameraRequest(session_id=sid, device_id=small)
    )
    assert switched.device.id == small
    resized = (await tiles.expect("video_tile_size_changed")).video_tile_size_changed.tile_state
    assert resized.tile_id == added.tile_id
    assert (resized.video_stream_content_width, resized.video_stream_content_height) == (320, 180)
    active = await chimed.video.GetActiveCamera(V.GetActiveCameraRequest(session_id=sid))
    assert active.device.id == small
    # The next input, whatever this machine has: a different one.
    nxt = await chimed.video.SwitchCamera(V.SwitchCameraRequest(session_id=sid))
    assert nxt.device.id != small
    await chimed.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=sid))
    await tiles.close()


async def test_stream_input_frames_become_the_local_tile(chimed: AsyncChimed) -> None:
    meeting = await create_meeting(chimed)
    session = await started_session(chimed, meeting, "drawer")
    sid = session.session_id
    red = np.zeros((120, 160, 3), dtype=np.uint8)
    red[:, :, 0] = 255
    feeding = asyncio.Event()

    async def frames() -> Any:
        for _ in range(3):
            yield V.VideoServiceStreamInputRequest(
                session_id=sid, format=RGB24, width=160, height=120, data=red.tobytes()
            )
        feeding.set()
        await asyncio.get_running_loop().create_future()  # held open: the picture stays

    call = chimed.video.StreamInput(frames())
    await feeding.wait()
    tiles = tile_observer(chimed, sid)
    await tiles.registered()
    await chimed.video.StartLocal(V.StartLocalRequest(session_id=sid))
    added = (await tiles.expect("video_tile_added")).video_tile_added.tile_state
    assert (added.video_stream_content_width, added.video_stream_content_height) == (160, 120)
    view = EventStream(
        chimed.video.BindView(
            V.BindViewRequest(session_id=sid, tile_id=added.tile_id, format=RGB24)
        )
    )
    (frame,) = await next_frames(view, 1)
    pixels = np.frombuffer(frame.data, dtype=np.uint8).reshape(120, 160, 3)
    assert pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 60
    active = await chimed.video.GetActiveCamera(V.GetActiveCameraRequest(session_id=sid))
    assert active.device.id.startswith("virtual:frames")
    call.cancel()
    await view.close()

    async def wrong() -> Any:
        yield V.VideoServiceStreamInputRequest(
            session_id=sid, format=RGB24, width=160, height=120, data=red.tobytes()
        )
        yield V.VideoServiceStreamInputRequest(
            session_id=sid, format=RGB24, width=160, height=120, data=b"short"
        )

    assert await code_of(chimed.video.StreamInput(wrong())) == grpc.StatusCode.INVALID_ARGUMENT
    got = await chimed.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
    assert got.session.state == session_pb2.SESSION_STATE_STARTED  # unharmed
    await chimed.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=sid))
    await tiles.close()


async def test_video_devices_list_the_virtual_sources(chimed: AsyncChimed) -> None:
    response = await chimed.video.GetDevices(V.VideoServiceGetDevicesRequest())
    ids = [d.id for d in response.devices]
    assert {"virtual:pattern", "virtual:file", "virtual:frames"} <= set(ids)


async def test_bad_video_input_gets_precise_statuses(chimed: AsyncChimed) -> None:
    NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    v = chimed.video
    assert await code_of(v.StartLocal(V.StartLocalRequest(session_id="nope"))) == NOT_FOUND
    meeting = await create_meeting(chimed)
    session = await create_session(chimed, meeting, "bad")
    sid = session.session_id
    assert (
        await code_of(v.StartLocal(V.StartLocalRequest(session_id=sid)))
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (
        await code_of(
            v.SwitchCamera(V.SwitchCameraRequest(session_id=sid, device_id="v4l2:/dev/nope"))
        )
        == NOT_FOUND
    )
    assert (
        await code_of(
            v.SwitchCamera(V.SwitchCameraRequest(session_id=sid, device_id="virtual:nope"))
        )
        == NOT_FOUND
    )
    assert await code_of(v.PauseTile(V.PauseTileRequest(session_id=sid, tile_id=7))) == NOT_FOUND
    assert await code_of(v.UnbindView(V.UnbindViewRequest(session_id=sid, tile_id=7))) == NOT_FOUND
    view = EventStream(v.BindView(V.BindViewRequest(session_id=sid, tile_id=7, format=JPEG)))
    assert await view.ended() == NOT_FOUND
    view = EventStream(v.BindView(V.BindViewRequest(session_id=sid, tile_id=7, format=42)))  # type: ignore[arg-type]
    assert await view.ended() == INVALID

    async def empty_size() -> Any:
        yield V.VideoServiceStreamInputRequest(session_id=sid, format=RGB24, width=0, height=0)

    assert await code_of(v.StreamInput(empty_size())) == INVALID

    async def bad_format() -> Any:
        yield V.VideoServiceStreamInputRequest(session_id=sid, format=JPEG, width=2, height=2)

    assert await code_of(v.StreamInput(bad_format())) == INVALID
    bad_camera = session_pb2.DeviceSelection(video_input_device_id="virtual:nope")
    assert await code_of(create_session(chimed, meeting, "badcam", devices=bad_camera)) == NOT_FOUND
    assert await code_of(v.StartContentShare(V.StartContentShareRequest(session_id=sid))) == INVALID
    await chimed.sessions.DeleteSession(session_pb2.DeleteSessionRequest(session_id=sid))
