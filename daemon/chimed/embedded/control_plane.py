"""The embedded service's control plane: the `chime-sdk-meetings` REST API (2021-07-15).

Requests are checked against botocore's own service model (required members, types, lengths,
patterns, enums, ranges) the way the real service's framework does, so an unmodified boto3
client or the AWS CLI sees the same answers: JSON bodies of the model's shapes, errors named in
`x-amzn-ErrorType` and the body's `Code`, with the status the model gives each exception.
SigV4 signatures are accepted unchecked: the embedded service is local and has no accounts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from botocore.loaders import create_loader
from botocore.model import ListShape, ServiceModel, Shape, StringShape, StructureShape

from chimed.embedded.meetings import (
    Attendee,
    Capabilities,
    Meeting,
    Registry,
    RegistryError,
)

log = logging.getLogger(__name__)

SERVICE = "chime-sdk-meetings"
API_VERSION = "2021-07-15"

# The MediaRegion values the API reference lists (commercial and GovCloud).
MEDIA_REGIONS = frozenset(
    {
        "af-south-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-south-1",
        "ap-southeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "eu-central-1",
        "eu-north-1",
        "eu-south-1",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "us-gov-east-1",
        "us-gov-west-1",
    }
)
DEFAULT_MAX_RESULTS = 10
_RECEIVES = ("SendReceive", "Receive")

# (base_url, ws_url, turn_url) as Meeting.to_json takes them; asked per request because the
# service only knows its port once it listens.
UrlsProvider = Callable[[], tuple[str, str, str]]
Json = dict[str, Any]


# --- errors ----------------------------------------------------------------------------------
def bad_request(message: str) -> RegistryError:
    return RegistryError("BadRequestException", 400, message)


def unknown_operation() -> RegistryError:
    return RegistryError("UnknownOperationException", 404, "No operation matches this request")


def error_response(error: RegistryError) -> web.Response:
    request_id = str(uuid.uuid4())
    return web.json_response(
        {"Code": error.code, "Message": error.message, "RequestId": request_id},
        status=error.status,
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id},
    )


# --- validation against the service model ----------------------------------------------------
@functools.cache
def service_model() -> ServiceModel:
    data = create_loader().load_service_model(SERVICE, "service-2", API_VERSION)
    return ServiceModel(data, service_name=SERVICE)


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # The service matches the whole value (Java `matches`), with ASCII classes.
    return re.compile(pattern, re.ASCII)


def _member_path(parent: str, name: str) -> str:
    name = name[:1].lower() + name[1:]
    return f"{parent}.{name}" if parent else name


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    """Append one message per constraint `value` breaks (values are never echoed)."""
    at = f"Value at '{path}' failed to satisfy constraint: Member must"
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{at} be an object")
            return
        assert isinstance(shape, StructureShape)
        for name in shape.required_members:
            if value.get(name) is None:
                errors.append(
                    f"Value null at '{_member_path(path, name)}' failed to satisfy "
                    "constraint: Member must not be null"
                )
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _check(member, value[name], _member_path(path, name), errors)
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{at} be a list")
            return
        assert isinstance(shape, ListShape)
        _check_length(len(value), meta, at, errors)
        for i, item in enumerate(value):
            _check(shape.member, item, f"{path}.{i + 1}.member", errors)
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(f"{at} be a string")
            return
        _check_length(len(value), meta, at, errors)
        assert isinstance(shape, StringShape)
        if shape.enum and value not in shape.enum:
            errors.append(f"{at} satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = meta.get("pattern")
        if pattern is not None and not _pattern(pattern).fullmatch(value):
            errors.append(f"{at} satisfy regular expression pattern: {pattern}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{at} be an integer")
            return
        if "min" in meta and value < meta["min"]:
            errors.append(f"{at} have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            errors.append(f"{at} have value less than or equal to {meta['max']}")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{at} be a boolean")


def _check_length(length: int, meta: dict[str, Any], at: str, errors: list[str]) -> None:
    if "min" in meta and length < meta["min"]:
        errors.append(f"{at} have length greater than or equal to {meta['min']}")
    if "max" in meta and length > meta["max"]:
        errors.append(f"{at} have length less than or equal to {meta['max']}")


def validate(operation: str, params: Json) -> None:
    """Raise BadRequestException listing every constraint the input of `operation` breaks."""
    shape = service_model().operation_model(operation).input_shape
    assert shape is not None
    errors: list[str] = []
    _check(shape, params, "", errors)
    if errors:
        n = len(errors)
        raise bad_request(
            f"{n} validation error{'s' if n > 1 else ''} detected: {'; '.join(errors)}"
        )


# --- the service's own rules -----------------------------------------------------------------
def check_region(region: str) -> None:
    if region not in MEDIA_REGIONS:
        raise bad_request(f"Invalid MediaRegion: {region}")


def _max_resolutions(meeting: Meeting) -> tuple[str, str]:
    """(video, content) MaxResolution; HD and FHD when the meeting did not say."""
    features = meeting.meeting_features or {}
    video = (features.get("Video") or {}).get("MaxResolution", "HD")
    content = (features.get("Content") or {}).get("MaxResolution", "FHD")
    return str(video), str(content)


def resolve_capabilities(meeting: Meeting, requested: Json | None) -> Capabilities:
    """An attendee's capabilities under the meeting's features, as the API reference states
    them (requests breaking them are answered 400)."""
    video_max, content_max = _max_resolutions(meeting)
    if requested is None:
        caps = Capabilities()
        if content_max == "None":
            caps.content = "None"
        if video_max == "None":
            # Content SendReceive needs video at least Receive.
            caps.video = "None" if caps.content == "None" else "Receive"
        return caps
    caps = Capabilities(requested["Audio"], requested["Video"], requested["Content"])
    if video_max == "None" and caps.video != "None":
        raise bad_request("Video capabilities must be None: the meeting's video is unavailable")
    if content_max == "None" and caps.content != "None":
        raise bad_request(
            "Content capabilities must be None: the meeting's content sharing is unavailable"
        )
    if caps.content in _RECEIVES and caps.video not in _RECEIVES:
        raise bad_request(
            "Content capability SendReceive or Receive requires video SendReceive or Receive"
        )
    return caps


def encode_next_token(meeting_id: str, seq: int) -> str:
    raw = json.dumps({"m": meeting_id, "s": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_next_token(meeting_id: str, token: str) -> int:
    try:
        data = json.loads(base64.b64decode(token.encode(), altchars=b"-_", validate=True))
        seq = data["s"]
        ok = data["m"] == meeting_id and isinstance(seq, int) and seq >= 0
    except (binascii.Error, ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise bad_request("Invalid NextToken")
    return int(seq)


# --- the HTTP adapter ------------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _api(fn: Handler) -> Handler:
    """Errors as botocore parses rest-json errors; a request id on every answer."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            response = await fn(request)
        except RegistryError as e:
            return error_response(e)
        except Exception:
            log.exception("control plane: %s %s failed", request.method, request.path)
            return error_response(
                RegistryError("ServiceFailureException", 500, "The service encountered an error")
            )
        response.headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
        return response

    return wrapper


async def _body(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise bad_request("The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    return body


def _no_content() -> web.Response:
    return web.Response(status=204)


@web.middleware
async def unknown_route_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Paths and methods no route serves get a JSON error, as the real endpoint answers."""
    if request.match_info.http_exception is not None:
        return error_response(unknown_operation())
    return await handler(request)


class ControlPlane:
    """The nine meeting and attendee operations over a Registry."""

    def __init__(self, registry: Registry, urls: UrlsProvider) -> None:
        self.registry = registry
        self.urls = urls

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(unknown_route_middleware)
        app.router.add_post("/meetings", _api(self.post_meetings))
        app.router.add_get("/meetings/{MeetingId}", _api(self.get_meeting))
        app.router.add_delete("/meetings/{MeetingId}", _api(self.delete_meeting))
        app.router.add_post("/meetings/{MeetingId}/attendees", _api(self.post_attendees))
        app.router.add_get("/meetings/{MeetingId}/attendees", _api(self.list_attendees))
        path = "/meetings/{MeetingId}/attendees/{AttendeeId}"
        app.router.add_get(path, _api(self.get_attendee))
        app.router.add_delete(path, _api(self.delete_attendee))

    def _meeting_json(self, meeting: Meeting) -> Json:
        return meeting.to_json(*self.urls())

    def _meeting(self, request: web.Request, operation: str) -> Meeting:
        params = {"MeetingId": request.match_info["MeetingId"]}
        validate(operation, params)
        return self.registry.get_meeting(params["MeetingId"])

    def _create_attendees(
        self, meeting: Meeting, items: list[Json]
    ) -> tuple[list[Json], list[Json]]:
        """BatchCreateAttendee's (Attendees, Errors): one item's error spares the others."""
        attendees: list[Json] = []
        errors: list[Json] = []
        for item in items:
            user = item["ExternalUserId"]
            try:
                caps = resolve_capabilities(meeting, item.get("Capabilities"))
            except RegistryError as e:
                errors.append(
                    {"ExternalUserId": user, "ErrorCode": "BadRequest", "ErrorMessage": e.message}
                )
                continue
            attendee = self.registry.create_attendee(meeting.meeting_id, user, caps)
            attendees.append(attendee.to_json())
        return attendees, errors

    # POST /meetings and POST /meetings?operation=create-attendees
    async def post_meetings(self, request: web.Request) -> web.StreamResponse:
        operation = request.query.get("operation")
        if operation is None:
            op = "CreateMeeting"
        elif operation == "create-attendees":
            op = "CreateMeetingWithAttendees"
        else:
            raise unknown_operation()
        body = await _body(request)
        validate(op, body)
        check_region(body["MediaRegion"])
        meeting = self.registry.create_meeting(
            client_request_token=body["ClientRequestToken"],
            external_meeting_id=body["ExternalMeetingId"],
            media_region=body["MediaRegion"],
            meeting_host_id=body.get("MeetingHostId", ""),
            tenant_ids=body.get("TenantIds"),
            meeting_features=body.get("MeetingFeatures"),
            primary_meeting_id=body.get("PrimaryMeetingId", ""),
            tags={t["Key"]: t["Value"] for t in body.get("Tags") or []},
        )
        out: Json = {"Meeting": self._meeting_json(meeting)}
        if op == "CreateMeetingWithAttendees":
            out["Attendees"], out["Errors"] = self._create_attendees(meeting, body["Attendees"])
        return web.json_response(out)

    async def get_meeting(self, request: web.Request) -> web.StreamResponse:
        meeting = self._meeting(request, "GetMeeting")
        return web.json_response({"Meeting": self._meeting_json(meeting)})

    async def delete_meeting(self, request: web.Request) -> web.StreamResponse:
        meeting = self._meeting(request, "DeleteMeeting")
        self.registry.delete_meeting(meeting.meeting_id)
        return _no_content()

    # POST /meetings/{MeetingId}/attendees and ...?operation=batch-create
    async def post_attendees(self, request: web.Request) -> web.StreamResponse:
        operation = request.query.get("operation")
        if operation is None:
            op = "CreateAttendee"
        elif operation == "batch-create":
            op = "BatchCreateAttendee"
        else:
            raise unknown_operation()
        params = {**await _body(request), "MeetingId": request.match_info["MeetingId"]}
        validate(op, params)
        meeting = self.registry.get_meeting(params["MeetingId"])
        if op == "BatchCreateAttendee":
            attendees, errors = self._create_attendees(meeting, params["Attendees"])
            return web.json_response({"Attendees": attendees, "Errors": errors})
        caps = resolve_capabilities(meeting, params.get("Capabilities"))
        attendee = self.registry.create_attendee(meeting.meeting_id, params["ExternalUserId"], caps)
        return web.json_response({"Attendee": attendee.to_json()})

    async def list_attendees(self, request: web.Request) -> web.StreamResponse:
        params: Json = {"MeetingId": request.match_info["MeetingId"]}
        if "next-token" in request.query:
            params["NextToken"] = request.query["next-token"]
        if "max-results" in request.query:
            try:
                params["MaxResults"] = int(request.query["max-results"])
            except ValueError:
                raise bad_request("MaxResults must be an integer") from None
        validate("ListAttendees", params)
        meeting = self.registry.get_meeting(params["MeetingId"])
        start = 0
        if params.get("NextToken"):
            start = decode_next_token(meeting.meeting_id, params["NextToken"])
        limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
        remaining: list[Attendee] = [a for a in meeting.attendees.values() if a.seq >= start]
        page = remaining[:limit]
        out: Json = {"Attendees": [a.to_json() for a in page]}
        if len(remaining) > limit:
            out["NextToken"] = encode_next_token(meeting.meeting_id, remaining[limit].seq)
        return web.json_response(out)

    def _attendee(self, request: web.Request, operation: str) -> tuple[Meeting, Attendee]:
        params = {
            "MeetingId": request.match_info["MeetingId"],
            "AttendeeId": request.match_info["AttendeeId"],
        }
        validate(operation, params)
        meeting = self.registry.get_meeting(params["MeetingId"])
        return meeting, self.registry.get_attendee(meeting.meeting_id, params["AttendeeId"])

    async def get_attendee(self, request: web.Request) -> web.StreamResponse:
        _, attendee = self._attendee(request, "GetAttendee")
        return web.json_response({"Attendee": attendee.to_json()})

    async def delete_attendee(self, request: web.Request) -> web.StreamResponse:
        meeting, attendee = self._attendee(request, "DeleteAttendee")
        self.registry.delete_attendee(meeting.meeting_id, attendee.attendee_id)
        return _no_content()


def add_control_plane(app: web.Application, registry: Registry, urls: UrlsProvider) -> ControlPlane:
    """Serve the control plane on `app` (before it starts)."""
    plane = ControlPlane(registry, urls)
    plane.add_routes(app)
    return plane
