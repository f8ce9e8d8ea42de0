"""A thin typed client for chimed: channels to its socket and the four service stubs.

from chime.client import connect
with connect() as chimed:
    meeting = chimed.meetings.CreateMeeting(meeting_pb2.CreateMeetingRequest(...)).meeting
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

import grpc

from chime.v1 import audio_pb2_grpc, meeting_pb2_grpc, session_pb2_grpc, video_pb2_grpc

C = TypeVar("C", grpc.Channel, grpc.aio.Channel)


def default_target() -> str:
    """The daemon's default Unix socket, as chimed computes it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"unix:{runtime}/chimed/chimed.sock"
    if os.getuid() == 0:
        return "unix:/run/chimed/chimed.sock"
    return f"unix:/tmp/chimed-{os.getuid()}/chimed.sock"


@dataclass
class Chimed(Generic[C]):
    channel: C
    sessions: session_pb2_grpc.SessionServiceStub
    audio: audio_pb2_grpc.AudioServiceStub
    video: video_pb2_grpc.VideoServiceStub
    meetings: meeting_pb2_grpc.MeetingServiceStub

    @classmethod
    def over(cls, channel: C) -> Chimed[C]:
        return cls(
            channel,
            session_pb2_grpc.SessionServiceStub(channel),
            audio_pb2_grpc.AudioServiceStub(channel),
            video_pb2_grpc.VideoServiceStub(channel),
            meeting_pb2_grpc.MeetingServiceStub(channel),
        )

    def __enter__(self) -> Chimed[C]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(self.channel, grpc.Channel):  # an aio channel closes in __aexit__
            self.channel.close()

    async def __aenter__(self) -> Chimed[C]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(self.channel, grpc.aio.Channel):
            await self.channel.close()


def connect(target: str | None = None) -> Chimed[grpc.Channel]:
    """A blocking client; target like 'unix:/path/chimed.sock' or '127.0.0.1:50051'."""
    return Chimed.over(grpc.insecure_channel(target or default_target()))


def connect_aio(target: str | None = None) -> Chimed[grpc.aio.Channel]:
    """An asyncio client; use `async with connect_aio() as chimed:`."""
    return Chimed.over(grpc.aio.insecure_channel(target or default_target()))
