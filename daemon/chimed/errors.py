"""The errors chimed's core raises for the caller, one class per kind of answer.

The core knows no transport: server/errors.py maps these classes to gRPC status codes in one
place. Anything else that escapes a call (a bare ValueError, KeyError...) is a bug and reaches
the caller as INTERNAL. Messages are written for the caller: they say what was wrong and with
which field. InvalidArgument and NotFound are also ValueError and LookupError, so code that
validates with the standard exceptions' meaning keeps reading naturally.
"""

from __future__ import annotations


class ChimedError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ChimedError, ValueError):
    """The request is wrong whatever the state: a bad value, a missing field."""


class NotFound(ChimedError, LookupError):
    """What the request names does not exist (a session, a device, a meeting)."""


class AlreadyExists(ChimedError):
    pass


class FailedPrecondition(ChimedError):
    """The request is fine but the state does not allow it (e.g. the session is not running)."""


class ResourceExhausted(ChimedError):
    pass


class Unavailable(ChimedError):
    pass


class Unimplemented(ChimedError):
    pass


class PermissionDenied(ChimedError):
    pass


class Unauthenticated(ChimedError):
    pass


class DeadlineExceeded(ChimedError):
    pass


class Internal(ChimedError):
    """A failure that is not the caller's, reported with a message (e.g. AWS's ServiceFailure)."""


def require(value: str, name: str) -> None:
    """A request field that must be set."""
    if not value:
        raise InvalidArgument(f"{name} is missing")
