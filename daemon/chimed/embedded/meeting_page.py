"""The meeting page: the official amazon-chime-sdk-js bundle (built by `make web`) and its
same-origin join endpoint, served by the embedded service.

`GET /` is the page, `GET /app/<file>` its assets, `POST /app/join {"meeting", "name"}` creates
the meeting (idempotent on its name, used as ClientRequestToken) and the attendee, and answers
`{"Meeting": ..., "Attendee": ...}` exactly as an application back end hands them to the SDK.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from chimed.embedded.meetings import Registry

DIST_DIR = Path(__file__).parent / "web" / "dist"
NAME_MIN, NAME_MAX = 2, 64

# (base_url, ws_url, turn_url) as Meeting.to_json takes them; asked per request because the
# service only knows its ports once it is listening.
UrlsProvider = Callable[[], tuple[str, str, str]]


class JoinRequestError(ValueError):
    pass


def parse_join_request(body: object) -> tuple[str, str]:
    """The (meeting, name) of a join request body, or JoinRequestError saying what is wrong."""
    if not isinstance(body, dict):
        raise JoinRequestError('expected a JSON object {"meeting": ..., "name": ...}')
    out: list[str] = []
    for key, label in (("meeting", "meeting name"), ("name", "your name")):
        value = body.get(key)
        if not isinstance(value, str):
            raise JoinRequestError(f"{label} ({key!r}) must be a string")
        value = value.strip()
        if not NAME_MIN <= len(value) <= NAME_MAX:
            raise JoinRequestError(f"{label} must be {NAME_MIN} to {NAME_MAX} characters long")
        out.append(value)
    return out[0], out[1]


def _bad_request(message: str) -> web.Response:
    return web.json_response({"message": message}, status=400)


def add_web_routes(
    app: web.Application,
    registry: Registry,
    urls_provider: UrlsProvider,
    *,
    dist_dir: Path = DIST_DIR,
) -> None:
    """Serve the meeting page from `dist_dir` at `/` and `/app/*`, and `POST /app/join`."""

    def send_file(name: str) -> web.StreamResponse:
        if not (dist_dir / "index.html").is_file():
            return web.Response(status=503, text="The meeting page is not built: run make web\n")
        # Only plain file names inside dist/: no directories, so no traversal.
        if "/" in name or "\\" in name or name.startswith("."):
            raise web.HTTPNotFound()
        path = dist_dir / name
        if not path.is_file():
            raise web.HTTPNotFound()
        content_type, _ = mimetypes.guess_type(name)
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type or "application/octet-stream",
                "Cache-Control": "no-cache",
            },
        )

    async def index(_request: web.Request) -> web.StreamResponse:
        return send_file("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        return send_file(request.match_info["name"])

    async def join(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad_request("the body must be JSON")
        try:
            meeting_name, user_name = parse_join_request(body)
        except JoinRequestError as e:
            return _bad_request(str(e))
        meeting = registry.create_meeting(
            client_request_token=meeting_name, external_meeting_id=meeting_name
        )
        attendee = registry.create_attendee(meeting.meeting_id, user_name)
        base_url, ws_url, turn_url = urls_provider()
        return web.json_response(
            {
                "Meeting": meeting.to_json(base_url, ws_url, turn_url),
                "Attendee": attendee.to_json(),
            }
        )

    app.router.add_post("/app/join", join)
    app.router.add_get("/", index)
    app.router.add_get("/app/{name}", asset)
