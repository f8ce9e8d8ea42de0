"""SessionService: thin adapter between chime.v1 messages and the session manager."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
from chime.v1 import events_pb2, session_pb2, session_pb2_grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from chimed.errors import FailedPrecondition, InvalidArgument
from chimed.server.errors import Servicer, abort_with, streaming, unary
from chimed.session.events import ObserverKind
from chimed.session.manager import TOPIC_RE, ManagedSession, SessionManager
from chimed.session.session import state_name

Ctx = grpc.aio.ServicerContext[Any, Any]
START_WAIT_TIMEOUT_S = 30.0


class SessionService(session_pb2_grpc.SessionServiceServicer, Servicer):
    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    @unary
    async def CreateSession(
        self, request: session_pb2.CreateSessionRequest, context: Ctx
    ) -> session_pb2.CreateSessionResponse:
        session = await self.manager.create(request)
        return session_pb2.CreateSessionResponse(session=session.to_proto())

    @unary
    async def GetSession(
        self, request: session_pb2.GetSessionRequest, context: Ctx
    ) -> session_pb2.GetSessionResponse:
        session = self.manager.get(request.session_id)
        return session_pb2.GetSessionResponse(
            session=session.to_proto(include_join_token=request.include_join_token)
        )

    @unary
    async def ListSessions(
        self, request: session_pb2.ListSessionsRequest, context: Ctx
    ) -> session_pb2.ListSessionsResponse:
        return session_pb2.ListSessionsResponse(
            sessions=[
                s.to_proto(include_join_token=request.include_join_token)
                for s in self.manager.sessions.values()
            ]
        )

    @unary
    async def DeleteSession(
        self, request: session_pb2.DeleteSessionRequest, context: Ctx
    ) -> session_pb2.DeleteSessionResponse:
        await self.manager.delete(request.session_id)
        return session_pb2.DeleteSessionResponse()

    @unary
    async def Start(
        self, request: session_pb2.StartRequest, context: Ctx
    ) -> session_pb2.StartResponse:
        session = self.manager.get(request.session_id)
        await session.core.start()
        if request.wait:
            await session.core.wait_started(START_WAIT_TIMEOUT_S)
        return session_pb2.StartResponse(session=session.to_proto())

    @unary
    async def Stop(
        self, request: session_pb2.StopRequest, context: Ctx
    ) -> session_pb2.StopResponse:
        session = self.manager.get(request.session_id)
        await session.core.stop()
        return session_pb2.StopResponse(session=session.to_proto())

    @unary
    async def SendMessage(
        self, request: session_pb2.SendMessageRequest, context: Ctx
    ) -> session_pb2.SendMessageResponse:
        session = self.manager.get(request.session_id)
        topic = request.topic or session.config.data_message_topic
        if not TOPIC_RE.match(topic):
            raise InvalidArgument("topic must match ^[a-zA-Z0-9_-]{1,36}$")
        if not request.HasField("message"):
            raise InvalidArgument("message is missing: give a JSON object")
        data = json.dumps(
            json_format.MessageToDict(request.message), separators=(",", ":"), ensure_ascii=False
        ).encode()
        if len(data) > 2048:
            raise InvalidArgument(f"message is {len(data)} bytes as JSON; at most 2048 are allowed")
        if session.core.state != session_pb2.SESSION_STATE_STARTED:
            state = state_name(session.core.state)
            raise FailedPrecondition(f"session {session.session_id} is {state}; start it first")
        try:
            sent = await session.core.send_message(topic, data, request.lifetime_ms)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        return session_pb2.SendMessageResponse(data_message=sent)

    # --- observers ------------------------------------------------------------------------
    async def _observe(
        self,
        session: ManagedSession,
        kind: ObserverKind,
        observer_id: str,
        context: Ctx,
        topics: list[str] | None = None,
        options: object = None,
    ) -> AsyncIterator[Message]:
        observer = session.hub.add(kind, observer_id, session.snapshot(kind), topics, options)
        try:
            async for event in observer.events():
                yield event
        finally:
            session.hub.discard(observer)
        if observer.end is not None and observer.end[0] != grpc.StatusCode.OK:
            raise abort_with(*observer.end)

    @streaming
    async def AddActiveSpeakerObserver(
        self, request: session_pb2.AddActiveSpeakerObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.ActiveSpeakerEvent]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(
            session, ObserverKind.ACTIVE_SPEAKER, request.observer_id, context, options=request
        ):
            yield event  # type: ignore[misc]

    @streaming
    async def AddAudioVideoObserver(
        self, request: session_pb2.AddAudioVideoObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.AudioVideoEvent]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(
            session, ObserverKind.AUDIO_VIDEO, request.observer_id, context
        ):
            yield event  # type: ignore[misc]

    @streaming
    async def AddDataMessageObserver(
        self, request: session_pb2.AddDataMessageObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.DataMessageEvent]:
        session = self.manager.get(request.session_id)
        topics = list(request.topics) or [session.config.data_message_topic]
        for topic in topics:
            if not TOPIC_RE.match(topic):
                raise InvalidArgument(f"topic {topic!r} must match ^[a-zA-Z0-9_-]{{1,36}}$")
        async for event in self._observe(
            session, ObserverKind.DATA_MESSAGE, request.observer_id, context, topics
        ):
            yield event  # type: ignore[misc]

    @streaming
    async def AddDeviceObserver(
        self, request: session_pb2.AddDeviceObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.DeviceEvent]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(
            session, ObserverKind.DEVICE, request.observer_id, context
        ):
            yield event  # type: ignore[misc]

    @streaming
    async def AddRealtimeObserver(
        self, request: session_pb2.AddRealtimeObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.RealtimeEvent]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(
            session, ObserverKind.REALTIME, request.observer_id, context
        ):
            yield event  # type: ignore[misc]

    @streaming
    async def AddTileObserver(
        self, request: session_pb2.AddTileObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.TileEvent]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(session, ObserverKind.TILE, request.observer_id, context):
            yield event  # type: ignore[misc]

    def _remove(self, session_id: str, kind: ObserverKind | None, observer_id: str = "") -> int:
        return self.manager.get(session_id).hub.remove(kind, observer_id)

    @unary
    async def RemoveObservers(
        self, request: session_pb2.RemoveObserversRequest, context: Ctx
    ) -> session_pb2.RemoveObserversResponse:
        return session_pb2.RemoveObserversResponse(removed=self._remove(request.session_id, None))

    @unary
    async def RemoveActiveSpeakerObserver(
        self, request: session_pb2.RemoveActiveSpeakerObserverRequest, context: Ctx
    ) -> session_pb2.RemoveActiveSpeakerObserverResponse:
        n = self._remove(request.session_id, ObserverKind.ACTIVE_SPEAKER, request.observer_id)
        return session_pb2.RemoveActiveSpeakerObserverResponse(removed=n)

    @unary
    async def RemoveAudioVideoObserver(
        self, request: session_pb2.RemoveAudioVideoObserverRequest, context: Ctx
    ) -> session_pb2.RemoveAudioVideoObserverResponse:
        n = self._remove(request.session_id, ObserverKind.AUDIO_VIDEO, request.observer_id)
        return session_pb2.RemoveAudioVideoObserverResponse(removed=n)

    @unary
    async def RemoveDataMessageObserver(
        self, request: session_pb2.RemoveDataMessageObserverRequest, context: Ctx
    ) -> session_pb2.RemoveDataMessageObserverResponse:
        n = self._remove(request.session_id, ObserverKind.DATA_MESSAGE, request.observer_id)
        return session_pb2.RemoveDataMessageObserverResponse(removed=n)

    @unary
    async def RemoveDeviceObserver(
        self, request: session_pb2.RemoveDeviceObserverRequest, context: Ctx
    ) -> session_pb2.RemoveDeviceObserverResponse:
        n = self._remove(request.session_id, ObserverKind.DEVICE, request.observer_id)
        return session_pb2.RemoveDeviceObserverResponse(removed=n)

    @unary
    async def RemoveRealtimeObserver(
        self, request: session_pb2.RemoveRealtimeObserverRequest, context: Ctx
    ) -> session_pb2.RemoveRealtimeObserverResponse:
        n = self._remove(request.session_id, ObserverKind.REALTIME, request.observer_id)
        return session_pb2.RemoveRealtimeObserverResponse(removed=n)

    @unary
    async def RemoveTileObserver(
        self, request: session_pb2.RemoveTileObserverRequest, context: Ctx
    ) -> session_pb2.RemoveTileObserverResponse:
        n = self._remove(request.session_id, ObserverKind.TILE, request.observer_id)
        return session_pb2.RemoveTileObserverResponse(removed=n)
