"""SessionService: parses chime.v1 requests, calls the session layer, builds the responses.
Every rule a request must meet is the session layer's (session/manager.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from chime.v1 import events_pb2, session_pb2, session_pb2_grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from chimed.server.errors import Servicer, streaming, unary
from chimed.server.paging import page
from chimed.session.events import ObserverKind
from chimed.session.manager import SessionManager

Ctx = grpc.aio.ServicerContext[Any, Any]


def _headers(context: Ctx) -> Callable[[], Awaitable[None]]:
    """Sends a stream's response headers: the caller's sign that its observer is registered."""
    return lambda: context.send_initial_metadata(())


def _add_observer(kind: ObserverKind) -> Any:
    """Add<Kind>Observer: a stream of that kind's events for request.session_id."""

    @streaming
    async def add(self: SessionService, request: Any, context: Ctx) -> AsyncIterator[Message]:
        session = self.manager.get(request.session_id)
        # The request rides along as the stream's options (e.g. active-speaker weights); the
        # headers tell the caller the observer is registered, so no later event is missed.
        async for event in session.observe(
            kind, request.observer_id, request, registered=_headers(context)
        ):
            yield event

    return add


def _remove_observer(kind: ObserverKind, response: type[Any]) -> Any:
    """Remove<Kind>Observer: end those streams (one observer_id, or all of the kind) with OK."""

    @unary
    async def remove(self: SessionService, request: Any, context: Ctx) -> Any:
        session = self.manager.get(request.session_id)
        return response(removed=session.remove_observers(kind, request.observer_id))

    return remove


class SessionService(session_pb2_grpc.SessionServiceServicer, Servicer):
    def __init__(self, manager: SessionManager, *, token: str | None) -> None:
        self.manager = manager
        self.token = token

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
        sessions, next_page_token = page(
            self.manager.list_sessions(),
            lambda s: (s.create_time_ns, s.session_id),
            request.page_size,
            request.page_token,
        )
        return session_pb2.ListSessionsResponse(
            sessions=[s.to_proto(include_join_token=request.include_join_token) for s in sessions],
            next_page_token=next_page_token,
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
        await session.start(wait=request.wait)
        return session_pb2.StartResponse(session=session.to_proto())

    @unary
    async def Stop(
        self, request: session_pb2.StopRequest, context: Ctx
    ) -> session_pb2.StopResponse:
        session = self.manager.get(request.session_id)
        await session.stop()
        return session_pb2.StopResponse(session=session.to_proto())

    @unary
    async def SendMessage(
        self, request: session_pb2.SendMessageRequest, context: Ctx
    ) -> session_pb2.SendMessageResponse:
        session = self.manager.get(request.session_id)
        message = (
            json_format.MessageToDict(request.message) if request.HasField("message") else None
        )
        sent = await session.send_message(request.topic, message, request.lifetime_ms)
        return session_pb2.SendMessageResponse(data_message=sent)

    @streaming
    async def AddDataMessageObserver(
        self, request: session_pb2.AddDataMessageObserverRequest, context: Ctx
    ) -> AsyncIterator[events_pb2.DataMessageEvent]:
        session = self.manager.get(request.session_id)
        kind = ObserverKind.DATA_MESSAGE
        async for event in session.observe(
            kind, request.observer_id, request, request.topics, registered=_headers(context)
        ):
            yield event  # type: ignore[misc]

    @unary
    async def RemoveObservers(
        self, request: session_pb2.RemoveObserversRequest, context: Ctx
    ) -> session_pb2.RemoveObserversResponse:
        removed = self.manager.get(request.session_id).remove_observers()
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
