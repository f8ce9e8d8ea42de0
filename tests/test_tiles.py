"""The tile state machine (session/tiles.py) in memory: ids, events and pause rules."""

from __future__ import annotations

import pytest
from chime.v1 import types_pb2
from chimed.errors import FailedPrecondition, NotFound
from chimed.session.tiles import AT_SOURCE, BY_USER, UNPAUSED, TileEvent, Tiles


def fields(events: list[TileEvent]) -> list[str]:
    return [field for field, _ in events]


def state(event: TileEvent) -> types_pb2.VideoTileState:
    out = types_pb2.VideoTileState()
    out.CopyFrom(getattr(event[1], "tile_state"))  # noqa: B009 (every tile event has one)
    return out


def test_ids_start_at_one_are_shared_and_never_reused() -> None:
    tiles = Tiles()
    local = tiles.add_local("me", 640, 480)
    remote = tiles.add_remote(7, "bob", False, 320, 240)
    assert [state(local[0]).tile_id, state(remote[0]).tile_id] == [1, 2]
    assert state(local[0]).is_local_tile and not state(remote[0]).is_local_tile
    assert fields(tiles.remove(tiles.local)) == ["video_tile_removed"]
    again = tiles.add_local("me", 640, 480)
    assert state(again[0]).tile_id == 3
    assert tiles.add_local("me", 640, 480) == []  # one local tile at a time
    assert tiles.add_remote(7, "bob", False, 320, 240) == []  # one tile per stream


def test_states_carry_every_field() -> None:
    tiles = Tiles()
    (event,) = tiles.add_remote(9, "bob#content", True, 1280, 720)
    assert event[0] == "video_tile_added"
    assert state(event) == types_pb2.VideoTileState(
        tile_id=1,
        attendee_id="bob#content",
        video_stream_content_width=1280,
        video_stream_content_height=720,
        pause_state=UNPAUSED,
        is_local_tile=False,
        is_content=True,
    )
    assert fields(tiles.snapshot()) == ["video_tile_added"]


def test_size_changes_only_when_different() -> None:
    tiles = Tiles()
    tiles.add_remote(3, "bob", False, 640, 480)
    tile = tiles.get(1)
    assert tiles.resize(tile, 640, 480) == []
    (event,) = tiles.resize(tile, 320, 180)
    assert event[0] == "video_tile_size_changed"
    assert state(event).video_stream_content_width == 320


def test_user_pause_and_resume() -> None:
    tiles = Tiles()
    tiles.add_local("me", 640, 480)
    tiles.add_remote(3, "bob", False, 640, 480)
    assert fields(tiles.pause(2)) == ["video_tile_paused"]
    assert state(tiles.snapshot()[1]).pause_state == BY_USER
    assert tiles.pause(2) == []
    assert fields(tiles.resume(2)) == ["video_tile_resumed"]
    assert tiles.resume(2) == []
    with pytest.raises(FailedPrecondition):
        tiles.pause(1)
    with pytest.raises(NotFound):
        tiles.pause(42)


def test_paused_at_source_and_user_pause_do_not_mix() -> None:
    tiles = Tiles()
    tiles.add_remote(3, "bob", False, 640, 480)
    tiles.add_remote(4, "carol", False, 640, 480)
    tiles.pause(2)
    events = tiles.paused_at_source([3, 4])
    assert [(f, state((f, p)).tile_id) for f, p in events] == [("video_tile_paused", 1)]
    assert tiles.get(1).pause_state == AT_SOURCE
    assert tiles.resume(1) == []  # paused at its source, not by the user
    assert fields(tiles.paused_at_source([])) == ["video_tile_resumed"]
    assert tiles.get(2).pause_state == BY_USER


def test_remove_remote_keeps_the_named_streams_and_the_local_tile() -> None:
    tiles = Tiles()
    tiles.add_local("me", 640, 480)
    tiles.add_remote(3, "bob", False, 640, 480)
    tiles.add_remote(4, "carol", False, 640, 480)
    removed = tiles.remove_remote(keep=[4])
    assert [state(e).attendee_id for e in removed] == ["bob"]
    assert [t.tile_id for t in tiles.all()] == [1, 3]
    assert fields(tiles.remove_remote()) == ["video_tile_removed"]
    assert tiles.remove(None) == []
