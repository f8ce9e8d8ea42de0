"""AudioService and VideoService. Mute and Unmute work now; devices, PCM feeds and video answer
UNIMPLEMENTED with a message saying so, until those parts land."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from chime.v1 import audio_pb2, audio_pb2_grpc, video_pb2, video_pb2_grpc

from chimed.errors import Unimplemented
from chimed.server.errors import Servicer, streaming, unary
from chimed.session.manager import SessionManager

Ctx = grpc.aio.ServicerContext[Any, Any]


def _not_yet(what: str) -> Unimplemented:
    return Unimplemented(f"{what} is not implemented in this version of chimed")


class AudioService(audio_pb2_grpc.AudioServiceServicer, Servicer):
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    @unary
    async def Mute(self, request: audio_pb2.MuteRequest, context: Ctx) -> audio_pb2.MuteResponse:
        session = self.manager.get(request.session_id)
        await session.core.set_muted(True)
        return audio_pb2.MuteResponse(muted=session.core.muted)

    @unary
    async def Unmute(
        self, request: audio_pb2.UnmuteRequest, context: Ctx
    ) -> audio_pb2.UnmuteResponse:
        session = self.manager.get(request.session_id)
        await session.core.set_muted(False)
        return audio_pb2.UnmuteResponse(muted=session.core.muted)

    @unary
    async def GetDevices(
        self, request: audio_pb2.GetDevicesRequest, context: Ctx
    ) -> audio_pb2.GetDevicesResponse:
        raise _not_yet("AudioService/GetDevices")

    @unary
    async def SetDevice(
        self, request: audio_pb2.SetDeviceRequest, context: Ctx
    ) -> audio_pb2.SetDeviceResponse:
        raise _not_yet("AudioService/SetDevice")

    @unary
    async def StreamInput(
        self, request_iterator: AsyncIterator[audio_pb2.StreamInputRequest], context: Ctx
    ) -> audio_pb2.StreamInputResponse:
        raise _not_yet("AudioService/StreamInput")

    @streaming
    async def StreamOutput(
        self, request: audio_pb2.StreamOutputRequest, context: Ctx
    ) -> AsyncIterator[audio_pb2.StreamOutputResponse]:
        raise _not_yet("AudioService/StreamOutput")
        yield audio_pb2.StreamOutputResponse()  # makes this an async generator


class VideoService(video_pb2_grpc.VideoServiceServicer, Servicer):
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def _video(self, session_id: str, rpc: str) -> Unimplemented:
        self.manager.get(session_id)  # unknown sessions are NOT_FOUND all the same
        return _not_yet(f"VideoService/{rpc}")

    @unary
    async def StartLocal(
        self, request: video_pb2.StartLocalRequest, context: Ctx
    ) -> video_pb2.StartLocalResponse:
        raise self._video(request.session_id, "StartLocal")

    @unary
    async def StopLocal(
        self, request: video_pb2.StopLocalRequest, context: Ctx
    ) -> video_pb2.StopLocalResponse:
        raise self._video(request.session_id, "StopLocal")

    @unary
    async def StartRemote(
        self, request: video_pb2.StartRemoteRequest, context: Ctx
    ) -> video_pb2.StartRemoteResponse:
        raise self._video(request.session_id, "StartRemote")

    @unary
    async def StopRemote(
        self, request: video_pb2.StopRemoteRequest, context: Ctx
    ) -> video_pb2.StopRemoteResponse:
        raise self._video(request.session_id, "StopRemote")

    @unary
    async def GetDevices(
        self, request: video_pb2.GetVideoDevicesRequest, context: Ctx
    ) -> video_pb2.GetVideoDevicesResponse:
        raise _not_yet("VideoService/GetDevices")

    @unary
    async def GetActiveCamera(
        self, request: video_pb2.GetActiveCameraRequest, context: Ctx
    ) -> video_pb2.GetActiveCameraResponse:
        raise self._video(request.session_id, "GetActiveCamera")

    @unary
    async def SwitchCamera(
        self, request: video_pb2.SwitchCameraRequest, context: Ctx
    ) -> video_pb2.SwitchCameraResponse:
        raise self._video(request.session_id, "SwitchCamera")

    @streaming
    async def BindView(
        self, request: video_pb2.BindViewRequest, context: Ctx
    ) -> AsyncIterator[video_pb2.BindViewResponse]:
        raise self._video(request.session_id, "BindView")
        yield video_pb2.BindViewResponse()  # makes this an async generator

    @unary
    async def UnbindView(
        self, request: video_pb2.UnbindViewRequest, context: Ctx
    ) -> video_pb2.UnbindViewResponse:
        raise self._video(request.session_id, "UnbindView")
