"""A thin typed client for chimed: a channel to its socket and the four service stubs.

from chime.client import connect
from chime.v1 import meeting_pb2

with connect() as chimed:  # the daemon's default Unix socket
    meeting = chimed.meetings.CreateMeeting(
        meeting_pb2.CreateMeetingRequest(external_meeting_id="standup")
    ).meeting

async with connect_aio() as chimed:  # the same, for asyncio
    ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType

import grpc

from chime.v1 import audio_pb2_grpc, meeting_pb2_grpc, session_pb2_grpc, video_pb2_grpc


def default_target() -> str:
    """The daemon's default Unix socket, as chimed computes it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"unix:{runtime}/chimed/chimed.sock"
    if os.getuid() == 0:
        return "unix:/run/chimed/chimed.sock"
    return f"unix:/tmp/chimed-{os.getuid()}/chimed.sock"


@dataclass
class Chimed:
    """Blocking stubs over one channel."""

    channel: grpc.Channel
    sessions: session_pb2_grpc.SessionServiceStub
    audio: audio_pb2_grpc.AudioServiceStub
    video: video_pb2_grpc.VideoServiceStub
    meetings: meeting_pb2_grpc.MeetingServiceStub

    def __enter__(self) -> Chimed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.channel.close()


@dataclass
class AsyncChimed:
    """asyncio stubs over one channel."""

    channel: grpc.aio.Channel
    sessions: session_pb2_grpc.SessionServiceAsyncStub
    audio: audio_pb2_grpc.AudioServiceAsyncStub
    video: video_pb2_grpc.VideoServiceAsyncStub
    meetings: meeting_pb2_grpc.MeetingServiceAsyncStub

    async def __aenter__(self) -> AsyncChimed:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.channel.close()


def connect(target: str | None = None) -> Chimed:
    """Blocking stubs; target like 'unix:/path/chimed.sock' or '127.0.0.1:50051'."""
    channel = grpc.insecure_channel(target or default_target())
    return Chimed(
        channel,
        session_pb2_grpc.SessionServiceStub(channel),
        audio_pb2_grpc.AudioServiceStub(channel),
        video_pb2_grpc.VideoServiceStub(channel),
        meeting_pb2_grpc.MeetingServiceStub(channel),
    )


def connect_aio(target: str | None = None) -> AsyncChimed:
    """asyncio stubs; use as `async with connect_aio() as chimed:`."""
    channel = grpc.aio.insecure_channel(target or default_target())
    return AsyncChimed(
        channel,
        session_pb2_grpc.SessionServiceStub(channel),
        audio_pb2_grpc.AudioServiceStub(channel),
        video_pb2_grpc.VideoServiceStub(channel),
        meeting_pb2_grpc.MeetingServiceStub(channel),
    )
