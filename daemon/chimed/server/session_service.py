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
from chimed.session.chime_session import state_name
from chimed.session.events import ObserverKind
from chimed.session.manager import ManagedSession, SessionManager
from chimed.signaling.data_limits import MAX_DATA_BYTES, TOPIC_PATTERN, valid_topic

Ctx = grpc.aio.ServicerContext[Any, Any]
START_WAIT_TIMEOUT_S = 30.0


def _add_observer(kind: ObserverKind) -> Any:
    """Add<Kind>Observer: a stream of that kind's events for request.session_id."""

    @streaming
    async def add(self: SessionService, request: Any, context: Ctx) -> AsyncIterator[Message]:
        session = self.manager.get(request.session_id)
        async for event in self._observe(session, kind, request):
            yield event

    return add


def _remove_observer(kind: ObserverKind, response: type[Any]) -> Any:
    """Remove<Kind>Observer: end those streams (one observer_id, or all of the kind) with OK."""

    @unary
    async def remove(self: SessionService, request: Any, context: Ctx) -> Any:
        hub = self.manager.get(request.session_id).hub
        return response(removed=hub.remove(kind, request.observer_id))

    return remove


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
        await session.chime_session.start()
        if request.wait:
            await session.chime_session.wait_started(START_WAIT_TIMEOUT_S)
        return session_pb2.StartResponse(session=session.to_proto())

    @unary
    async def Stop(
        self, request: session_pb2.StopRequest, context: Ctx
    ) -> session_pb2.StopResponse:
        session = self.manager.get(request.session_id)
        await session.chime_session.stop()
        return session_pb2.StopResponse(session=session.to_proto())

    @unary
    async def SendMessage(
        self, request: session_pb2.SendMessageRequest, context: Ctx
    ) -> session_pb2.SendMessageResponse:
        session = self.manager.get(request.session_id)
        topic = request.topic or session.config.data_message_topic
        if not valid_topic(topic):
            raise InvalidArgument(f"topic must match {TOPIC_PATTERN}")
        if not request.HasField("message"):
            raise InvalidArgument("message is missing: give a JSON object")
        data = json.dumps(
            json_format.MessageToDict(request.message), separators=(",", ":"), ensure_ascii=False
        ).encode()
        if len(data) > MAX_DATA_BYTES:
            raise InvalidArgument(
                f"message is {len(data)} bytes as JSON; at most {MAX_DATA_BYTES} are allowed"
            )
        if session.chime_session.state != session_pb2.SESSION_STATE_STARTED:
            state = state_name(session.chime_session.state)
            raise FailedPrecondition(f"session {session.session_id} is {state}; start it first")
        try:
            sent = await session.chime_session.send_message(topic, data, request.lifetime_ms)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        return session_pb2.SendMessageResponse(data_message=sent)

    # --- observers ------------------------------------------------------------------------
    async def _observe(
        self,
        session: ManagedSession,
        kind: ObserverKind,
        request: Any,
        topics: list[str] | None = None,
    ) -> AsyncIterator[Message]:
        # The request rides along as the stream's options (e.g. active-speaker weights).
        observer = session.hub.add(
            kind, request.observer_id, session.snapshot(kind), topics, options=request
        )
        try:
            async for event in observer.events():
                yield event
        finally:
            session.hub.discard(observer)
        if observer.end is not None and observer.end[0] != grpc.StatusCode.OK:
            raise abort_with(*observer.end)

    @streaming
    async def AddDataMessageObserver(
        self, request: session_pb2.AddDataMessageObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.DataMessageEvent]:
        session = self.manager.get(request.session_id)
        topics = list(request.topics) or [session.config.data_message_topic]
        for topic in topics:
            if not valid_topic(topic):
                raise InvalidArgument(f"topic {topic!r} must match {TOPIC_PATTERN}")
        async for event in self._observe(session, ObserverKind.DATA_MESSAGE, request, topics):
            yield event  # type: ignore[misc]

    @unary
    async def RemoveObservers(
        self, request: session_pb2.RemoveObserversRequest, context: Ctx
    ) -> session_pb2.RemoveObserversResponse:
        removed = self.manager.get(request.session_id).hub.remove(None)
        return session_pb2.RemoveObserversResponse(removed=removed)

    # One Add/Remove pair per seed contract; all but the data-message stream are alike.
    AddActiveSpeakerObserver = _add_observer(ObserverKind.ACTIVE_SPEAKER)
    AddAudioVideoObserver = _add_observer(ObserverKind.AUDIO_VIDEO)
    AddDeviceObserver = _add_observer(ObserverKind.DEVICE)
    AddRealtimeObserver = _add_observer(ObserverKind.REALTIME)
    AddTileObserver = _add_observer(ObserverKind.TILE)
    RemoveActiveSpeakerObserver = _remove_observer(
        ObserverKind.ACTIVE_SPEAKER, session_pb2.RemoveActiveSpeakerObserverResponse
    )
    RemoveAudioVideoObserver = _remove_observer(
        ObserverKind.AUDIO_VIDEO, session_pb2.RemoveAudioVideoObserverResponse
    )
    RemoveDataMessageObserver = _remove_observer(
        ObserverKind.DATA_MESSAGE, session_pb2.RemoveDataMessageObserverResponse
    )
    RemoveDeviceObserver = _remove_observer(
        ObserverKind.DEVICE, session_pb2.RemoveDeviceObserverResponse
    )
    RemoveRealtimeObserver = _remove_observer(
        ObserverKind.REALTIME, session_pb2.RemoveRealtimeObserverResponse
    )
    RemoveTileObserver = _remove_observer(ObserverKind.TILE, session_pb2.RemoveTileObserverResponse)
