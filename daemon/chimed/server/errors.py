"""One place where core errors become gRPC statuses, and where TCP callers are authenticated."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from chime.v1 import types_pb2

from chimed import errors
from chimed.errors import ChimedError
from chimed.session.chime_session import SessionStoppedError

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
            raise errors.Unauthenticated("missing or wrong bearer token")


# The core's error classes (chimed/errors.py) and their codes; the first class in an error's
# MRO that is listed wins.
_CODES: dict[type[ChimedError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

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


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str] | None:
    """The status a call ends with for `e`; None for an error the core did not mean for the
    caller (a bug: INTERNAL, logged)."""
    if isinstance(e, SessionStoppedError):
        return _STOPPED_CODES.get(e.status.code, grpc.StatusCode.ABORTED), e.message
    if isinstance(e, ChimedError):
        code = next((_CODES[c] for c in type(e).__mro__ if c in _CODES), None)
        return code or grpc.StatusCode.INTERNAL, e.message
    return None


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
