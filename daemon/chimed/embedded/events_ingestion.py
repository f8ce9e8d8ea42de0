"""The meetings' EventIngestionUrl (`{base_url}/events`): where the JS SDK posts meeting events.

The SDK's event reporter (InMemoryJSONEventBuffer) sends `POST <url>` with
`Authorization: Bearer <JoinToken>` and a JSON body, retrying on 408/429/5xx; on page unload
it uses `navigator.sendBeacon("<url>?beacon=1")` with the token inside the body instead. For an
OK answer to an "important" event it reads a JSON body, so the answer is 200 with `{}`.

The embedded service keeps no event history: bodies are read (up to a bound) and dropped. No
token check either: the SDK reports `meetingEnded` after the meeting and its tokens are gone.
"""

from __future__ import annotations

from aiohttp import web

EVENTS_PATH = "/events"
MAX_BODY_BYTES = 256 * 1024  # the SDK batches at most 64 KiB; beacons add failed batches

# Pages served from another origin may use the embedded service too (the token is the auth).
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


async def _ingest(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return web.json_response({"message": "body too large"}, status=413, headers=_CORS)
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            return web.json_response({"message": "body too large"}, status=413, headers=_CORS)
    return web.json_response({}, headers=_CORS)


async def _preflight(_request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_CORS)


def add_event_ingestion_routes(app: web.Application) -> None:
    """`POST /events` (and its CORS preflight)."""
    app.router.add_post(EVENTS_PATH, _ingest)
    app.router.add_route("OPTIONS", EVENTS_PATH, _preflight)
