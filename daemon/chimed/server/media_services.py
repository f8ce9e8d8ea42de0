"""AudioService and VideoService: parse chime.v1 requests, call the session layer
(session/manager.py), build the responses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from chime.v1 import audio_pb2, audio_pb2_grpc, video_pb2, video_pb2_grpc

from chimed.audio_format import SAMPLE_RATE
from chimed.devices.pcm import MAX_FEED_RATE, MIN_FEED_RATE
from chimed.errors import InvalidArgument
from chimed.server.errors import Servicer, streaming, unary
from chimed.session.manager import SessionManager

Ctx = grpc.aio.ServicerContext[Any, Any]


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


class VideoService(video_pb2_grpc.VideoServiceServicer, Servicer):
    def __init__(self, manager: SessionManager, *, token: str | None) -> None:
        self.manager = manager
        self.token = token

    @unary
    async def StartLocal(
        self, request: video_pb2.StartLocalRequest, context: Ctx
    ) -> video_pb2.StartLocalResponse:
        await self.manager.get(request.session_id).start_local_video()
        return video_pb2.StartLocalResponse()

    @unary
    async def StopLocal(
        self, request: video_pb2.StopLocalRequest, context: Ctx
    ) -> video_pb2.StopLocalResponse:
        await self.manager.get(request.session_id).stop_local_video()
        return video_pb2.StopLocalResponse()

    @unary
    async def StartRemote(
        self, request: video_pb2.StartRemoteRequest, context: Ctx
    ) -> video_pb2.StartRemoteResponse:
        await self.manager.get(request.session_id).start_remote_video()
        return video_pb2.StartRemoteResponse()

    @unary
    async def StopRemote(
        self, request: video_pb2.StopRemoteRequest, context: Ctx
    ) -> video_pb2.StopRemoteResponse:
        await self.manager.get(request.session_id).stop_remote_video()
        return video_pb2.StopRemoteResponse()

    @unary
    async def GetDevices(
        self, request: video_pb2.VideoServiceGetDevicesRequest, context: Ctx
    ) -> video_pb2.VideoServiceGetDevicesResponse:
        return video_pb2.VideoServiceGetDevicesResponse(devices=self.manager.video_devices())

    @unary
    async def GetActiveCamera(
        self, request: video_pb2.GetActiveCameraRequest, context: Ctx
    ) -> video_pb2.GetActiveCameraResponse:
        device = self.manager.get(request.session_id).active_camera()
        return video_pb2.GetActiveCameraResponse(device=device)

    @unary
    async def SwitchCamera(
        self, request: video_pb2.SwitchCameraRequest, context: Ctx
    ) -> video_pb2.SwitchCameraResponse:
        session = self.manager.get(request.session_id)
        return video_pb2.SwitchCameraResponse(device=await session.switch_camera(request.device_id))

    @streaming
    async def BindView(
        self, request: video_pb2.BindViewRequest, context: Ctx
    ) -> AsyncIterator[video_pb2.BindViewResponse]:
        session = self.manager.get(request.session_id)
        frames = session.bind_view(
            request.tile_id, request.format, request.max_fps, request.max_width, request.max_height
        )
        async for frame, timestamp_us in frames:
            yield video_pb2.BindViewResponse(
                tile_id=request.tile_id,
                width=frame.width,
                height=frame.height,
                format=request.format,
                data=frame.data,
                timestamp_us=timestamp_us,
            )

    @unary
    async def UnbindView(
        self, request: video_pb2.UnbindViewRequest, context: Ctx
    ) -> video_pb2.UnbindViewResponse:
        self.manager.get(request.session_id).unbind_view(request.tile_id)
        return video_pb2.UnbindViewResponse()

    @unary
    async def PauseTile(
        self, request: video_pb2.PauseTileRequest, context: Ctx
    ) -> video_pb2.PauseTileResponse:
        session = self.manager.get(request.session_id)
        return video_pb2.PauseTileResponse(
            tile_state=await session.pause_tile(request.tile_id, True)
        )

    @unary
    async def ResumeTile(
        self, request: video_pb2.ResumeTileRequest, context: Ctx
    ) -> video_pb2.ResumeTileResponse:
        session = self.manager.get(request.session_id)
        state = await session.pause_tile(request.tile_id, False)
        return video_pb2.ResumeTileResponse(tile_state=state)

    @unary
    async def StreamInput(
        self,
        request_iterator: AsyncIterator[video_pb2.VideoServiceStreamInputRequest],
        context: Ctx,
    ) -> video_pb2.VideoServiceStreamInputResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument("the stream is empty; its first message names the session")
        session = self.manager.get(first.session_id)

        async def frames() -> AsyncIterator[bytes]:
            yield first.data
            async for message in request_iterator:
                if message.session_id and message.session_id != first.session_id:
                    raise InvalidArgument("session_id must stay the first message's")
                if (message.format, message.width, message.height) != (
                    first.format,
                    first.width,
                    first.height,
                ):
                    raise InvalidArgument(
                        f"every frame must be {first.width}x{first.height} in the first "
                        f"frame's format, got {message.width}x{message.height}"
                    )
                yield message.data

        taken = await session.feed_video(first.width, first.height, first.format, frames())
        return video_pb2.VideoServiceStreamInputResponse(frames_received=taken)

    @unary
    async def StartContentShare(
        self, request: video_pb2.StartContentShareRequest, context: Ctx
    ) -> video_pb2.StartContentShareResponse:
        session = self.manager.get(request.session_id)
        attendee_id = await session.start_content_share(request.device_id)
        return video_pb2.StartContentShareResponse(attendee_id=attendee_id)

    @unary
    async def StopContentShare(
        self, request: video_pb2.StopContentShareRequest, context: Ctx
    ) -> video_pb2.StopContentShareResponse:
        await self.manager.get(request.session_id).stop_content_share()
        return video_pb2.StopContentShareResponse()
