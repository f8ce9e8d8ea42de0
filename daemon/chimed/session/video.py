"""A session's video: the local video input and its tile, the remote streams received and
their tiles, the views (BindView) and the audio-video observer's video events.

The rules live in plain code (tiles.py: the tiles; video_index.py: what to receive); this is
the glue between them, the peer (through ChimeSession's seams) and the callers:

- StartLocal opens the session's video input into the local FrameRelay, whose track the peer
  sends; the local tile is added on the first frame. SwitchCamera and StreamInput swap the
  relay's source live; StopLocal empties it.
- Remote video is off until StartRemote (as on the seed's platforms). Then every INDEX decides
  the streams received; a change renegotiates (new offer and SUBSCRIBE). A remote tile is
  added once its stream's size is known from a keyframe header, before anything is decoded;
  a stream is decoded only while a view is bound (the peer's decoder gate).
- The video session (video_session_started_connecting / _started / _stopped) is on while
  local or remote video is on in a started session; a 206 (view only) drops the local video
  and reports video_session_started with the view-only status, as the Android SDK does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiortc.mediastreams import MediaStreamTrack
from chime.signaling import signaling_pb2 as sig
from chime.v1 import events_pb2, session_pb2, types_pb2
from google.protobuf.message import Message

from chimed.devices import video_opening
from chimed.devices.video_ids import DEFAULT_FPS, parse
from chimed.devices.video_inputs import FramesSource, VideoInput
from chimed.devices.video_listing import video_devices
from chimed.errors import ChimedError, FailedPrecondition, InvalidArgument, NotFound
from chimed.media.video_frames import (
    I420,
    RGB24,
    ConvertedFrame,
    FrameConverter,
    FrameFormat,
    RateLimiter,
)
from chimed.media.video_relay import FrameRelay
from chimed.session import status as st
from chimed.session.chime_session import STARTED, ChimeSession, state_name
from chimed.session.events import EventSink, ObserverKind
from chimed.session.tiles import Tile, TileEvent, Tiles
from chimed.session.video_index import is_content, wanted_sources

log = logging.getLogger(__name__)

DEFAULT_VIDEO_INPUT = "virtual:pattern"
VIEW_ONLY = 206
VIEW_ONLY_STATUS = types_pb2.SESSION_STATUS_CODE_VIDEO_AT_CAPACITY_VIEW_ONLY


ViewFrames = AsyncIterator[tuple[ConvertedFrame, int]]


@dataclass(eq=False)
class View:
    """One BindView stream: ends OK once `unbound`, with `error` once its tile is gone."""

    tile_id: int
    relay: FrameRelay
    unbound: bool = False
    error: ChimedError | None = None


@dataclass(eq=False)
class RemoteStream:
    stream_id: int
    attendee_id: str
    track: MediaStreamTrack | None = None
    relay: FrameRelay | None = None  # while viewed
    views: set[View] = field(default_factory=set)


async def open_input(device_id: str, label: str) -> VideoInput:
    """Open a video device id (in a worker thread when that blocks)."""
    if video_opening.blocks(device_id):
        return await asyncio.to_thread(video_opening.open_video_input, device_id, label)
    return video_opening.open_video_input(device_id, label)


def device_info(device_id: str) -> types_pb2.MediaDevice:
    """The listed device of this id, else one described from the id (parameters given)."""
    for device in video_devices():
        if device.id == device_id:
            return device
    return types_pb2.MediaDevice(
        id=device_id,
        label=device_id,
        type=types_pb2.MEDIA_DEVICE_TYPE_OTHER,
        direction=types_pb2.DEVICE_DIRECTION_INPUT,
        kind=types_pb2.MEDIA_KIND_VIDEO,
        virtual=device_id.startswith("virtual:"),
    )


def _openable_as_listed(device_id: str) -> bool:
    """Whether a listed id opens without parameters (virtual:file needs a path)."""
    try:
        parse(device_id)
    except ChimedError:
        return False
    return device_id != "virtual:frames"  # fed by StreamInput only


def _remote(sources: list[sig.SdkStreamDescriptor]) -> list[types_pb2.RemoteVideoSource]:
    return [
        types_pb2.RemoteVideoSource(
            attendee=types_pb2.AttendeeInfo(
                attendee_id=s.attendee_id, external_user_id=s.external_user_id
            ),
            stream_id=s.stream_id,
        )
        for s in sources
    ]


class SessionVideo:
    def __init__(
        self,
        core: ChimeSession,
        sink: EventSink,
        selection: session_pb2.DeviceSelection,
        *,
        receive: bool = True,
    ) -> None:
        """`receive`: whether StartRemote may receive (False for a content share)."""
        self._core = core
        self._sink = sink
        self.selection = selection
        selection.video_input_device_id = selection.video_input_device_id or DEFAULT_VIDEO_INPUT
        self._receive = receive
        self.tiles = Tiles()
        self.local = FrameRelay(self._local_size, restamp=True)
        self._local_track = self.local.track()
        self._prepared: VideoInput | None = None  # opened by StreamInput before StartLocal
        self.local_on = False
        self.remote_on = False
        self._index: sig.SdkIndexFrame | None = None
        self._sources: dict[int, sig.SdkStreamDescriptor] = {}
        self._announced: dict[int, sig.SdkStreamDescriptor] = {}  # remote sources reported
        self._can_send = True  # the camera send availability reported
        self._remote: dict[int, RemoteStream] = {}
        self._local_views: set[View] = set()
        self._session_on = False  # the video session (audio-video observer)
        self._connecting = False  # video_session_started not yet reported
        self._status = st.session_status(st.OK, "")  # what video_session_started said
        self._dirty = False
        self._negotiation: asyncio.Task[None] | None = None
        self._switching = asyncio.Lock()
        core.on_index = self._on_index
        core.on_subscribe_ack = self._on_subscribe_ack
        core.on_video_track = self._on_video_track
        core.on_video_size = self._on_video_size
        core.on_media_started = self._on_started
        core.on_media_stopped = self._on_stopped

    @property
    def device_id(self) -> str:
        return self.selection.video_input_device_id

    # --- events ------------------------------------------------------------------------------
    def _emit_tiles(self, events: list[TileEvent]) -> None:
        for name, payload in events:
            self._sink.emit(ObserverKind.TILE, name, payload)

    def _emit_av(self, name: str, payload: Message) -> None:
        self._sink.emit(ObserverKind.AUDIO_VIDEO, name, payload)

    def snapshot(self) -> list[TileEvent]:
        return self.tiles.snapshot()

    def av_snapshot(self) -> list[tuple[str, Message]]:
        """The video state for a new audio-video observer: the remote sources, whether a
        camera can be sent (when not), the video session."""
        out: list[tuple[str, Message]] = []
        if self._announced:
            sources = _remote(list(self._announced.values()))
            available = events_pb2.RemoteVideoSourcesAvailable(sources=sources)
            out.append(("remote_video_sources_available", available))
        if not self._can_send:
            update = events_pb2.CameraSendAvailabilityUpdated(available=False)
            out.append(("camera_send_availability_updated", update))
        if self._connecting:
            connecting = events_pb2.VideoSessionStartedConnecting()
            out.append(("video_session_started_connecting", connecting))
        elif self._session_on:
            started = events_pb2.VideoSessionStarted(status=self._status)
            out.append(("video_session_started", started))
        return out

    def _update_session(self, status: types_pb2.SessionStatus | None = None) -> None:
        """Report the video session going on (connecting) or off (stopped)."""
        on = (self.local_on or self.remote_on) and self._core.state == STARTED
        if status is not None:
            on = False
        if on and not self._session_on:
            self._session_on = self._connecting = True
            self._emit_av(
                "video_session_started_connecting", events_pb2.VideoSessionStartedConnecting()
            )
        elif not on and self._session_on:
            self._session_on = self._connecting = False
            stopped = status or st.session_status(st.OK, "video stopped")
            self._emit_av("video_session_stopped", events_pb2.VideoSessionStopped(status=stopped))

    # --- local video -------------------------------------------------------------------------
    def _require_started(self, what: str) -> None:
        state = self._core.state
        if state != STARTED:
            raise FailedPrecondition(
                f"session is {state_name(state)}; {what} needs a STARTED session (Start it first)"
            )

    async def start_local(self) -> None:
        self._require_started("StartLocal")
        async with self._switching:
            if self.local_on:
                return
            source = self._prepared or await open_input(self.device_id, self._label())
            self._prepared = None
            self.local.set_source(source)
            self.local_on = True
            self._core.set_video_input(self._local_track)
        self._update_session()
        self._renegotiate()

    async def stop_local(self) -> None:
        async with self._switching:
            if not self.local_on:
                return
            self._stop_local()
        self._update_session()
        self._renegotiate()

    def _stop_local(self, reason: str = "the local video stopped") -> None:
        self.local_on = False
        self._core.set_video_input(None)
        self.local.set_source(None)
        self.local.size = None
        self._end_views(self._local_views, reason)
        self._emit_tiles(self.tiles.remove(self.tiles.local))

    def _label(self) -> str:
        return self._core.config.external_user_id or self._core.config.attendee_id

    def _local_size(self, width: int, height: int) -> None:
        if not self.local_on:
            return
        tile = self.tiles.local
        if tile is None:
            self._emit_tiles(self.tiles.add_local(self._core.config.attendee_id, width, height))
        else:
            self._emit_tiles(self.tiles.resize(tile, width, height))

    def active_camera(self) -> types_pb2.MediaDevice:
        return device_info(self.device_id)

    async def switch_camera(self, device_id: str) -> types_pb2.MediaDevice:
        """The next video input (empty id) or the named one, live when sending."""
        if not device_id:
            ids = [d.id for d in video_devices() if _openable_as_listed(d.id)]
            current = self.device_id.split("?")[0]
            at = ids.index(current) if current in ids else -1
            device_id = ids[(at + 1) % len(ids)]
        async with self._switching:
            if self.local_on:
                self.local.set_source(await open_input(device_id, self._label()))
            else:
                video_opening.check_present(device_id)  # fails now, not at StartLocal
            self.selection.video_input_device_id = device_id
        return self.active_camera()

    async def feed_frames(
        self, width: int, height: int, frame_format: FrameFormat, frames: AsyncIterator[bytes]
    ) -> int:
        """StreamInput: the frames become the video input (virtual:frames of that size);
        returns how many were taken. A frame of another size ends it (InvalidArgument)."""
        if width <= 0 or height <= 0:
            raise InvalidArgument(f"width and height must be positive, got {width}x{height}")
        if frame_format not in (I420, RGB24):
            raise InvalidArgument("format must be FRAME_FORMAT_I420 or FRAME_FORMAT_RGB24")
        source = self._frames_source(width, height)
        # The session's virtual:frames id keeps its rate when the size is the same.
        current = parse(self.device_id)
        fps = current.fps if current.name == "frames" else DEFAULT_FPS
        device_id = self.device_id
        if (current.name, current.width, current.height) != ("frames", width, height):
            device_id = f"virtual:frames?width={width}&height={height}&fps={fps:g}"
        async with self._switching:
            if source is None:
                source = FramesSource(width, height, fps)
                if self.local_on:
                    self.local.set_source(source)
                else:
                    if self._prepared is not None:
                        self._prepared.stop()
                    self._prepared = source
            self.selection.video_input_device_id = device_id
        taken = 0
        async for data in frames:
            source.feed(data, frame_format)
            taken += 1
        return taken

    def _frames_source(self, width: int, height: int) -> FramesSource | None:
        for source in (self.local.source if self.local_on else None, self._prepared):
            if isinstance(source, FramesSource) and (source.width, source.height) == (
                width,
                height,
            ):
                return source
        return None

    # --- remote video ------------------------------------------------------------------------
    async def start_remote(self) -> None:
        if not self._receive:
            raise FailedPrecondition("a content share receives no video")
        self.remote_on = True
        self._update_session()
        if not self._apply_index():
            self._connected_once()

    async def stop_remote(self) -> None:
        self.remote_on = False
        self._apply_index()
        self._update_session()

    def _on_index(self, index: sig.SdkIndexFrame) -> None:
        self._index = index
        self._apply_index()

    def _apply_index(self) -> bool:
        """Receive what the index offers (nothing while remote video is off); True when that
        takes a renegotiation (scheduled)."""
        peer = self._core.peer
        if self._core.state != STARTED or peer is None:
            return False
        index = self._index or sig.SdkIndexFrame()
        self._sources = wanted_sources(index, self._core.config.attendee_id)
        self._announce(index)
        wanted = list(self._sources) if self.remote_on else []
        for stream_id in list(self._remote):
            if stream_id not in wanted:
                self._drop_remote(self._remote.pop(stream_id), "its video stopped")
        for stream_id in wanted:
            if stream_id not in self._remote:
                source = self._sources[stream_id]
                self._remote[stream_id] = RemoteStream(stream_id, source.attendee_id)
        self._emit_tiles(self.tiles.paused_at_source(index.paused_at_source_ids))
        if not peer.set_remote_streams(wanted):
            return False
        self._renegotiate()
        return True

    def _announce(self, index: sig.SdkIndexFrame) -> None:
        """The SDK's remoteVideoSourcesDidChange and cameraSendAvailabilityDidChange: the
        sources that came and went, whether a camera can be sent (the index's capacity)."""
        gone = [s for i, s in self._announced.items() if i not in self._sources]
        came = [s for i, s in self._sources.items() if i not in self._announced]
        self._announced = dict(self._sources)
        if gone:
            unavailable = events_pb2.RemoteVideoSourcesUnavailable(sources=_remote(gone))
            self._emit_av("remote_video_sources_unavailable", unavailable)
        if came:
            available = events_pb2.RemoteVideoSourcesAvailable(sources=_remote(came))
            self._emit_av("remote_video_sources_available", available)
        can_send = not index.at_capacity
        if can_send != self._can_send:
            self._can_send = can_send
            update = events_pb2.CameraSendAvailabilityUpdated(available=can_send)
            self._emit_av("camera_send_availability_updated", update)

    def _drop_remote(self, stream: RemoteStream, reason: str) -> None:
        self._end_views(stream.views, reason)
        if stream.relay is not None:
            relay, stream.relay = stream.relay, None
            asyncio.create_task(relay.close())  # noqa: RUF006 (a cancel and a wait, no more)
        self._emit_tiles(self.tiles.remove(self.tiles.remote(stream.stream_id)))

    def _on_video_track(self, stream_id: int, track: MediaStreamTrack) -> None:
        stream = self._remote.get(stream_id)
        if stream is not None:
            stream.track = track
            if stream.relay is not None:
                stream.relay.set_source(track)

    def _on_video_size(self, stream_id: int, width: int, height: int) -> None:
        stream = self._remote.get(stream_id)
        if stream is None:
            return
        tile = self.tiles.remote(stream_id)
        if tile is None:
            attendee = stream.attendee_id
            self._emit_tiles(
                self.tiles.add_remote(stream_id, attendee, is_content(attendee), width, height)
            )
        else:
            self._emit_tiles(self.tiles.resize(tile, width, height))

    async def pause_tile(self, tile_id: int, paused: bool) -> types_pb2.VideoTileState:
        """PauseTile / ResumeTile: PAUSE or RESUME that stream at the service."""
        tile = self.tiles.get(tile_id)
        events = self.tiles.pause(tile_id) if paused else self.tiles.resume(tile_id)
        if events:
            await self._core.send_pause([tile.stream_id], paused)
        self._emit_tiles(events)
        return tile.state()

    # --- negotiation -------------------------------------------------------------------------
    def _renegotiate(self) -> None:
        """Resubscribe soon; requests made meanwhile are folded into one."""
        self._dirty = True
        if self._negotiation is None or self._negotiation.done():
            self._negotiation = asyncio.create_task(self._negotiate(), name="chimed-video-sub")

    async def _negotiate(self) -> None:
        while self._dirty and self._core.state == STARTED:
            self._dirty = False
            try:
                await self._core.renegotiate()
            except Exception as e:  # the session stopping under it, mostly
                log.info("video resubscribe of %s failed: %r", self._core.config.attendee_id, e)
                return

    def _on_subscribe_ack(self, frame: sig.SdkSignalFrame) -> None:
        if frame.error.status == VIEW_ONLY and self.local_on:
            self._stop_local("video at capacity: view only")
            self._session_on = True
            self._report_started(st.session_status(VIEW_ONLY_STATUS, frame.error.description))
            self._renegotiate()  # the camera slot goes inactive
            return
        self._connected_once()

    def _connected_once(self) -> None:
        if self._connecting:
            self._report_started(st.session_status(st.OK, ""))

    def _report_started(self, status: types_pb2.SessionStatus) -> None:
        self._connecting = False
        self._status = status
        self._emit_av("video_session_started", events_pb2.VideoSessionStarted(status=status))

    def _on_started(self) -> None:
        # The INDEX received while joining is applied now (the web client parks it too).
        self._update_session()
        if not self._apply_index() and self._session_on:
            self._connected_once()

    def _on_stopped(self, status: types_pb2.SessionStatus) -> None:
        self._announced = {}
        self._can_send = True
        if self.local_on:
            self._stop_local("the session stopped")
        for stream in list(self._remote.values()):
            self._drop_remote(stream, "the session stopped")
        self._remote.clear()
        self._emit_tiles(self.tiles.remove_remote())
        if self._session_on:
            self._update_session(status)

    # --- views -------------------------------------------------------------------------------
    async def frames(
        self, tile_id: int, converter: FrameConverter, limiter: RateLimiter
    ) -> ViewFrames:
        """BindView: the tile's frames as (converted frame, timestamp in microseconds), until
        UnbindView (the iteration ends) or the tile goes (NotFound)."""
        tile = self.tiles.get(tile_id)
        if tile.is_local:
            view = View(tile_id, self.local)
            views = self._local_views
            release: Callable[[], None] = lambda: None  # noqa: E731
        else:
            stream = self._remote[tile.stream_id]
            view = View(tile_id, self._watch(stream))
            views = stream.views
            release = lambda: self._unwatch(stream)  # noqa: E731
        views.add(view)
        try:
            seen = 0
            while True:
                if view.error is not None:
                    raise view.error
                if view.unbound:
                    return
                frame = await view.relay.wait(seen)
                if frame is None:
                    continue
                seen = view.relay.sequence
                seconds = frame.time or 0.0
                if not limiter.allow(seconds):
                    continue
                yield converter.convert(frame), round(seconds * 1_000_000)
        finally:
            views.discard(view)
            release()

    def _watch(self, stream: RemoteStream) -> FrameRelay:
        if stream.relay is None:
            stream.relay = FrameRelay(stop_sources=False)
            peer = self._core.peer
            if stream.track is not None:
                stream.relay.set_source(stream.track)
            if peer is not None:
                peer.set_video_decoding(stream.stream_id, True)
        return stream.relay

    def _unwatch(self, stream: RemoteStream) -> None:
        if stream.views or stream.relay is None:
            return
        relay, stream.relay = stream.relay, None
        peer = self._core.peer
        if peer is not None:
            peer.set_video_decoding(stream.stream_id, False)
        asyncio.create_task(relay.close())  # noqa: RUF006 (a cancel and a wait, no more)

    def unbind(self, tile_id: int) -> None:
        """UnbindView: that tile's views end (OK)."""
        tile = self.tiles.get(tile_id)
        views = self._local_views if tile.is_local else self._remote[tile.stream_id].views
        for view in [v for v in views if v.tile_id == tile_id]:
            view.unbound = True
            view.relay.wake()

    def _end_views(self, views: set[View], reason: str) -> None:
        for view in list(views):
            view.error = NotFound(f"tile {view.tile_id} was removed: {reason}")
            view.relay.wake()

    def tile(self, tile_id: int) -> Tile:
        return self.tiles.get(tile_id)

    async def close(self) -> None:
        if self._negotiation is not None:
            self._negotiation.cancel()
        if self._prepared is not None:
            self._prepared.stop()
        await self.local.close()
