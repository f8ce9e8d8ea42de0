"""A session's video tiles, as the Android SDK's DefaultVideoTileController keeps them: plain
state, no I/O. Every change returns the tile events it causes, as (TileEvent oneof member,
payload) pairs for the session to emit.

Tile ids start at 1 and are never reused, shared by the local tile and the remote ones. The
local tile is added when capture starts and removed when it stops; a remote tile is added once
its stream's size is known (first frame decoded or first keyframe header read), removed when
its source leaves the index or remote video stops. Pausing is per tile: by the user
(PauseTile, the SDK's pauseVideoTile) or at the source (the index's paused_at_source_ids);
a tile paused by the user stays so until the user resumes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chime.v1 import events_pb2, types_pb2
from google.protobuf.message import Message

from chimed.errors import FailedPrecondition, NotFound

UNPAUSED = types_pb2.VIDEO_PAUSE_STATE_UNPAUSED
BY_USER = types_pb2.VIDEO_PAUSE_STATE_PAUSED_BY_USER_REQUEST
AT_SOURCE = types_pb2.VIDEO_PAUSE_STATE_PAUSED_FOR_POOR_CONNECTION

TileEvent = tuple[str, Message]


@dataclass
class Tile:
    tile_id: int
    attendee_id: str
    is_local: bool = False
    is_content: bool = False
    stream_id: int = 0  # the remote stream it shows (0 for the local tile)
    width: int = 0
    height: int = 0
    pause_state: types_pb2.VideoPauseState.ValueType = UNPAUSED

    def state(self) -> types_pb2.VideoTileState:
        return types_pb2.VideoTileState(
            tile_id=self.tile_id,
            attendee_id=self.attendee_id,
            video_stream_content_width=self.width,
            video_stream_content_height=self.height,
            pause_state=self.pause_state,
            is_local_tile=self.is_local,
            is_content=self.is_content,
        )


def _event(field: str, tile: Tile) -> TileEvent:
    payloads: dict[str, type[Message]] = {
        "video_tile_added": events_pb2.VideoTileAdded,
        "video_tile_removed": events_pb2.VideoTileRemoved,
        "video_tile_paused": events_pb2.VideoTilePaused,
        "video_tile_resumed": events_pb2.VideoTileResumed,
        "video_tile_size_changed": events_pb2.VideoTileSizeChanged,
    }
    return field, payloads[field](tile_state=tile.state())


class Tiles:
    def __init__(self) -> None:
        self._next_id = 1
        self._tiles: dict[int, Tile] = {}

    # --- queries ---------------------------------------------------------------------------
    def get(self, tile_id: int) -> Tile:
        tile = self._tiles.get(tile_id)
        if tile is None:
            raise NotFound(f"tile {tile_id} not found")
        return tile

    def find(self, tile_id: int) -> Tile | None:
        return self._tiles.get(tile_id)

    @property
    def local(self) -> Tile | None:
        return next((t for t in self._tiles.values() if t.is_local), None)

    def remote(self, stream_id: int) -> Tile | None:
        return next(
            (t for t in self._tiles.values() if not t.is_local and t.stream_id == stream_id), None
        )

    def all(self) -> list[Tile]:
        return list(self._tiles.values())

    def snapshot(self) -> list[TileEvent]:
        """What a new tile observer starts with: every current tile, added."""
        return [_event("video_tile_added", t) for t in self._tiles.values()]

    # --- changes ---------------------------------------------------------------------------
    def _add(self, tile: Tile) -> list[TileEvent]:
        self._tiles[tile.tile_id] = tile
        return [_event("video_tile_added", tile)]

    def _new_id(self) -> int:
        tile_id, self._next_id = self._next_id, self._next_id + 1
        return tile_id

    def add_local(self, attendee_id: str, width: int, height: int) -> list[TileEvent]:
        """Capture started; a no-op while the local tile exists."""
        if self.local is not None:
            return []
        return self._add(Tile(self._new_id(), attendee_id, True, False, 0, width, height))

    def add_remote(
        self, stream_id: int, attendee_id: str, is_content: bool, width: int, height: int
    ) -> list[TileEvent]:
        """A remote stream's size is known; a no-op while its tile exists."""
        if self.remote(stream_id) is not None:
            return []
        tile = Tile(self._new_id(), attendee_id, False, is_content, stream_id, width, height)
        return self._add(tile)

    def remove(self, tile: Tile | None) -> list[TileEvent]:
        if tile is None or self._tiles.pop(tile.tile_id, None) is None:
            return []
        return [_event("video_tile_removed", tile)]

    def remove_remote(self, keep: Iterable[int] = ()) -> list[TileEvent]:
        """Remove the remote tiles whose stream is not in `keep`."""
        kept = set(keep)
        gone = [t for t in self._tiles.values() if not t.is_local and t.stream_id not in kept]
        return [event for tile in gone for event in self.remove(tile)]

    def resize(self, tile: Tile, width: int, height: int) -> list[TileEvent]:
        if (tile.width, tile.height) == (width, height) or tile.tile_id not in self._tiles:
            return []
        tile.width, tile.height = width, height
        return [_event("video_tile_size_changed", tile)]

    def pause(self, tile_id: int) -> list[TileEvent]:
        """The user pauses a remote tile (PAUSE goes to the service)."""
        tile = self._remote_tile(tile_id, "paused")
        if tile.pause_state == BY_USER:
            return []
        tile.pause_state = BY_USER
        return [_event("video_tile_paused", tile)]

    def resume(self, tile_id: int) -> list[TileEvent]:
        """The user resumes a remote tile; one paused at its source stays paused."""
        tile = self._remote_tile(tile_id, "resumed")
        if tile.pause_state != BY_USER:
            return []
        tile.pause_state = UNPAUSED
        return [_event("video_tile_resumed", tile)]

    def paused_at_source(self, stream_ids: Iterable[int]) -> list[TileEvent]:
        """The index's paused_at_source_ids: pause those tiles, resume the others that were."""
        paused = set(stream_ids)
        events: list[TileEvent] = []
        for tile in self._tiles.values():
            if tile.is_local or tile.pause_state == BY_USER:
                continue
            if tile.stream_id in paused and tile.pause_state == UNPAUSED:
                tile.pause_state = AT_SOURCE
                events.append(_event("video_tile_paused", tile))
            elif tile.stream_id not in paused and tile.pause_state == AT_SOURCE:
                tile.pause_state = UNPAUSED
                events.append(_event("video_tile_resumed", tile))
        return events

    def _remote_tile(self, tile_id: int, verb: str) -> Tile:
        tile = self.get(tile_id)
        if tile.is_local:
            raise FailedPrecondition(
                f"tile {tile_id} is the local tile; only remote tiles are {verb}"
            )
        return tile
