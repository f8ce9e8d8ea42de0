"""Content share, as the official clients do it: a second attendee of the same meeting,
"<attendee id>#content" with the join token "<join token>#content", that joins on its own
signaling connection and peer, sends one video input (a screen, a file...) with its audio
muted, and receives no video. Its events are its own business: the sharing session's
observers see it only as a remote attendee, like everyone else."""

from __future__ import annotations

import dataclasses
import logging

from chime.v1 import session_pb2
from google.protobuf.message import Message

from chimed.config import MediaConfig
from chimed.session.chime_session import ChimeSession
from chimed.session.config import SessionConfig
from chimed.session.events import ObserverKind
from chimed.session.video import SessionVideo
from chimed.session.video_index import CONTENT_SUFFIX

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class _Unheard:
    """The content attendee's event sink: nobody observes it."""

    def emit(self, kind: ObserverKind, field: str, payload: Message) -> None:
        pass


def content_config(config: SessionConfig) -> SessionConfig:
    return dataclasses.replace(
        config,
        attendee_id=config.attendee_id + CONTENT_SUFFIX,
        join_token=config.join_token + CONTENT_SUFFIX,
    )


class ContentShare:
    def __init__(self, config: SessionConfig, device_id: str, media: MediaConfig) -> None:
        self.config = content_config(config)
        sink = _Unheard()
        self.core = ChimeSession(self.config, sink, media=media)
        selection = session_pb2.DeviceSelection(video_input_device_id=device_id)
        self.video = SessionVideo(self.core, sink, selection, receive=False)

    @property
    def attendee_id(self) -> str:
        return self.config.attendee_id

    async def start(self) -> None:
        """Join (audio muted) and send the video input; on failure everything is released."""
        try:
            await self.core.set_muted(True)
            await self.core.start()
            await self.core.wait_started(START_TIMEOUT_S)
            await self.video.start_local()
        except BaseException:
            await self.stop()
            raise
        log.info("content share %s started", self.attendee_id)

    async def stop(self) -> None:
        await self.core.stop()
        await self.video.close()
