"""AudioService and VideoService: parse chime.v1 requests, call the session layer
(session/manager.py), build the responses.
Video answers UNIMPLEMENTED with a message saying so, until that part lands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from chime.v1 import audio_pb2, audio_pb2_grpc, video_pb2_grpc

from chimed.audio_format import SAMPLE_RATE
from chimed.devices.pcm import MAX_FEED_RATE, MIN_FEED_RATE
from chimed.errors import InvalidArgument, Unimplemented
from chimed.server.errors import Servicer, streaming, unary
from chimed.session.manager import SessionManager

Ctx = grpc.aio.ServicerContext[Any, Any]


def _not_yet(what: str) -> Unimplemented:
    return Unimplemented(f"{what} is not implemented in this version of chimed")


def _pcm_format(fmt: audio_pb2.PcmFormat, default_rate: int | None) -> tuple[int, int]:
    """(sample_rate, channels) of a PcmFormat; zero channels is mono, zero rate the default."""
    rate = fmt.sample_rate or default_rate
    if not rate:
        raise InvalidArgument("format.sample_rate is missing")
    if not MIN_FEED_RATE <= rate <= MAX_FEED_RATE:
        raise InvalidArgument(
            f"format.sample_rate {rate} Hz is outside {MIN_FEED_RATE}-{MAX_FEED_RATE} Hz"
        )
    channels = fmt.channels or 1
    if channels not in (1, 2):
        raise InvalidArgument(f"format.channels must be 1 or 2, not {channels}")
    return rate, channels


class AudioService(audio_pb2_grpc.AudioServiceServicer, Servicer):
    def __init__(self, manager: SessionManager, *, token: str | None) -> None:
        self.manager = manager
        self.token = token

    @unary
    async def Mute(self, request: audio_pb2.MuteRequest, context: Ctx) -> audio_pb2.MuteResponse:
        muted = await self.manager.get(request.session_id).set_muted(True)
        return audio_pb2.MuteResponse(muted=muted)

    @unary
    async def Unmute(
        self, request: audio_pb2.UnmuteRequest, context: Ctx
    ) -> audio_pb2.UnmuteResponse:
        muted = await self.manager.get(request.session_id).set_muted(False)
        return audio_pb2.UnmuteResponse(muted=muted)

    @unary
    async def GetDevices(
        self, request: audio_pb2.GetDevicesRequest, context: Ctx
    ) -> audio_pb2.GetDevicesResponse:
        session = self.manager.get(request.session_id) if request.session_id else None
        out = audio_pb2.GetDevicesResponse(devices=await self.manager.list_devices())
        if session is not None:
            out.active_input_device_id, out.active_output_device_id = session.active_devices()
        return out

    @unary
    async def SetDevice(
        self, request: audio_pb2.SetDeviceRequest, context: Ctx
    ) -> audio_pb2.SetDeviceResponse:
        session = self.manager.get(request.session_id)
        device = await session.set_device(request.device_id, request.direction)
        return audio_pb2.SetDeviceResponse(device=device)

    @unary
    async def StreamInput(
        self, request_iterator: AsyncIterator[audio_pb2.StreamInputRequest], context: Ctx
    ) -> audio_pb2.StreamInputResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument("the stream is empty; its first message names the session")
        session = self.manager.get(first.session_id)
        if not first.HasField("format"):
            raise InvalidArgument("format is missing from the first message")
        rate, channels = _pcm_format(first.format, None)

        async def chunks() -> AsyncIterator[bytes]:
            yield first.pcm
            async for message in request_iterator:
                if message.session_id and message.session_id != first.session_id:
                    raise InvalidArgument("session_id is set in the first message only")
                if message.HasField("format") and message.format != first.format:
                    raise InvalidArgument("format is set in the first message only")
                yield message.pcm

        received = await session.feed_pcm(chunks(), rate, channels)
        return audio_pb2.StreamInputResponse(samples_received=received)

    @streaming
    async def StreamOutput(
        self, request: audio_pb2.StreamOutputRequest, context: Ctx
    ) -> AsyncIterator[audio_pb2.StreamOutputResponse]:
        session = self.manager.get(request.session_id)
        rate, channels = _pcm_format(request.format, SAMPLE_RATE)
        sequence = 0
        async for pcm in session.pcm_output(rate, channels):
            sequence += 1
            yield audio_pb2.StreamOutputResponse(pcm=pcm, sequence=sequence)


def _video_rpc(rpc: str, streaming_rpc: bool = False) -> Any:
    """A VideoService RPC that is not implemented yet; unknown sessions are NOT_FOUND all the
    same, so callers see the same errors they will see once video lands."""

    def refuse(self: VideoService, request: Any) -> Unimplemented:
        if hasattr(request, "session_id"):
            self.manager.get(request.session_id)
        return _not_yet(f"VideoService/{rpc}")

    if streaming_rpc:

        @streaming
        async def stream(self: VideoService, request: Any, context: Ctx) -> AsyncIterator[Any]:
            raise refuse(self, request)
            yield  # makes this an async generator

        return stream

    @unary
    async def call(self: VideoService, request: Any, context: Ctx) -> Any:
        raise refuse(self, request)

    return call


class VideoService(video_pb2_grpc.VideoServiceServicer, Servicer):
    def __init__(self, manager: SessionManager, *, token: str | None) -> None:
        self.manager = manager
        self.token = token

    StartLocal = _video_rpc("StartLocal")
    StopLocal = _video_rpc("StopLocal")
    StartRemote = _video_rpc("StartRemote")
    StopRemote = _video_rpc("StopRemote")
    GetDevices = _video_rpc("GetDevices")
    GetActiveCamera = _video_rpc("GetActiveCamera")
    SwitchCamera = _video_rpc("SwitchCamera")
    BindView = _video_rpc("BindView", streaming_rpc=True)
    UnbindView = _video_rpc("UnbindView")
    PauseTile = _video_rpc("PauseTile")
    ResumeTile = _video_rpc("ResumeTile")
    StreamInput = _video_rpc("StreamInput")
    StartContentShare = _video_rpc("StartContentShare")
    StopContentShare = _video_rpc("StopContentShare")
