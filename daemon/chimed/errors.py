"""Errors of chimed's core, each bound to the gRPC status the API answers with.

The core raises these; the gRPC layer maps them in one place (server/errors.py). Messages are
written for the caller: they say what was wrong and with which field.
"""

from __future__ import annotations

import grpc


class ChimedError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ChimedError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ChimedError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ChimedError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ChimedError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ChimedError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(ChimedError):
    code = grpc.StatusCode.UNIMPLEMENTED


class PermissionDenied(ChimedError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ChimedError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(ChimedError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ChimedError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
