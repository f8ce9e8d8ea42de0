"""Errors reach gRPC callers through the one mapper (server/errors.py): chimed's own errors as
the status they stand for, anything else (a bug), even a ValueError or LookupError, as INTERNAL.
A real grpc.aio server on loopback runs a servicer whose calls raise what each case gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from chime.v1 import session_pb2, session_pb2_grpc, types_pb2
from chimed import errors
from chimed.server.errors import Servicer, streaming, unary
from chimed.session.chime_session import SessionStateError, SessionStoppedError

Code = grpc.StatusCode


class Raising(session_pb2_grpc.SessionServiceServicer, Servicer):
    """Each call raises `error`, unary or as a stream's first step (the other RPCs are the
    generated base's: UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.error: BaseException = RuntimeError("unset")
        self.token = None  # no bearer token asked

    @unary
    async def GetSession(self, request: Any, context: Any) -> session_pb2.GetSessionResponse:
        raise self.error

    @streaming
    async def AddTileObserver(self, request: Any, context: Any) -> AsyncIterator[Any]:
        raise self.error
        yield  # makes this an async generator


@pytest.fixture
async def service() -> AsyncIterator[tuple[Raising, session_pb2_grpc.SessionServiceAsyncStub]]:
    server = grpc.aio.server()
    servicer = Raising()  # type: ignore[abstract]
    session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield servicer, session_pb2_grpc.SessionServiceStub(channel)
    finally:
        await server.stop(None)


stopped = types_pb2.SessionStatus(
    code=types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED, detail="bad token"
)

CASES = [
    # Bugs: the caller did nothing wrong, whatever the exception's class suggests.
    (ValueError("invalid literal for int()"), Code.INTERNAL, "internal error: ValueError"),
    (LookupError("no such thing"), Code.INTERNAL, "internal error: LookupError"),
    (KeyError("session_id"), Code.INTERNAL, "internal error: KeyError"),
    (TimeoutError(), Code.INTERNAL, "internal error: TimeoutError"),
    # chimed's errors: the status they name, the message as written.
    (
        errors.InvalidArgument("meeting_id is missing"),
        Code.INVALID_ARGUMENT,
        "meeting_id is missing",
    ),
    (errors.NotFound("session s1 not found"), Code.NOT_FOUND, "session s1 not found"),
    (errors.AlreadyExists("session s1 already exists"), Code.ALREADY_EXISTS, None),
    (errors.ResourceExhausted("at most 256 sessions"), Code.RESOURCE_EXHAUSTED, None),
    (errors.DeadlineExceeded("did not start within 30 s"), Code.DEADLINE_EXCEEDED, None),
    (errors.Unimplemented("not yet"), Code.UNIMPLEMENTED, None),
    (errors.Internal("ServiceFailureException: boom"), Code.INTERNAL, None),
    (SessionStateError("session is CREATED; start it first"), Code.FAILED_PRECONDITION, None),
    (SessionStoppedError(stopped), Code.PERMISSION_DENIED, None),
]


async def _failed_call(stub: session_pb2_grpc.SessionServiceAsyncStub, streamed: bool) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if streamed:
            async for _ in stub.AddTileObserver(session_pb2.AddTileObserverRequest(session_id="s")):
                pass
        else:
            await stub.GetSession(session_pb2.GetSessionRequest(session_id="s"))
    return info.value


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize(("error", "code", "details"), CASES, ids=lambda v: type(v).__name__)
async def test_status(
    service: tuple[Raising, session_pb2_grpc.SessionServiceAsyncStub],
    streamed: bool,
    error: BaseException,
    code: grpc.StatusCode,
    details: str | None,
) -> None:
    servicer, stub = service
    servicer.error = error
    failed = await _failed_call(stub, streamed)
    assert failed.code() == code
    assert failed.details() == (details if details is not None else str(error))
