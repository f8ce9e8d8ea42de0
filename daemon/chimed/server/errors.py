"""One place where core errors become gRPC statuses, and where TCP callers are authenticated."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from chime.v1 import types_pb2

from chimed.errors import ChimedError
from chimed.session.session import SessionStateError, SessionStoppedError

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
S = TypeVar("S", bound="Servicer")


class Servicer:
    """Base of chimed's servicers: each holds its daemon's bearer token for TCP callers
    (DaemonConfig.token; None: no token asked)."""

    token: str | None

    def check_auth(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self.token or context.peer().startswith("unix:"):
            return
        metadata = dict(context.invocation_metadata() or ())
        given = str(metadata.get("authorization", ""))
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise _Abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(e, _Abort):
        return e.code, e.message
    if isinstance(e, ChimedError):
        return e.code, e.message
    if isinstance(e, SessionStoppedError):
        return _STOPPED_CODES.get(e.status.code, grpc.StatusCode.ABORTED), str(e)
    if isinstance(e, SessionStateError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(e) or "timed out"
    # The devices layer's contract (registry.py): LookupError for an unknown id, ValueError
    # for a bad one. KeyError / IndexError are bugs, not answers.
    if isinstance(e, LookupError) and not isinstance(e, KeyError | IndexError):
        return grpc.StatusCode.NOT_FOUND, _text(e)
    if isinstance(e, ValueError) and type(e) is ValueError:
        return grpc.StatusCode.INVALID_ARGUMENT, _text(e)
    return None


def _text(e: BaseException) -> str:
    return str(e.args[0]) if len(e.args) == 1 else str(e)


# Start(wait) that ends in a stopped session: the closest gRPC code to why it stopped.
_STOPPED_CODES = {
    types_pb2.SESSION_STATUS_CODE_AUDIO_AUTHENTICATION_REJECTED: grpc.StatusCode.PERMISSION_DENIED,
    types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_ENDED: grpc.StatusCode.FAILED_PRECONDITION,
    types_pb2.SESSION_STATUS_CODE_AUDIO_CALL_AT_CAPACITY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    types_pb2.SESSION_STATUS_CODE_AUDIO_SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    types_pb2.SESSION_STATUS_CODE_AUDIO_DISCONNECTED: grpc.StatusCode.UNAVAILABLE,
    types_pb2.SESSION_STATUS_CODE_AUDIO_INTERNAL_SERVER_ERROR: grpc.StatusCode.UNAVAILABLE,
    types_pb2.SESSION_STATUS_CODE_OK: grpc.StatusCode.ABORTED,
}


def unary(
    fn: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            self.check_auth(context)
            return await fn(self, request, context)
        except Exception as e:
            status = status_of(e)
            if status is None:
                log.exception("%s failed", fn.__name__)
                status = (grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
            await context.abort(*status)
            raise  # unreachable: abort raises

    return wrapper


def streaming(
    fn: Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def wrapper(
        self: S, request: Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        try:
            self.check_auth(context)
            async for item in fn(self, request, context):
                yield item
        except Exception as e:
            status = status_of(e)
            if status is None:
                log.exception("%s failed", fn.__name__)
                status = (grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
            await context.abort(*status)

    return wrapper


def abort_with(code: grpc.StatusCode, message: str) -> _Abort:
    """An error a handler raises to end its call with this status."""
    return _Abort(code, message)
