"""The embedded control plane through an unmodified boto3 client (and raw HTTP where boto3 would
not send the request), against an EmbeddedChime on a loopback port (the `embedded` fixture)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import botocore.config
import pytest
from aiohttp import web
from botocore.exceptions import ClientError
from chimed.embedded.service import EmbeddedChime
from chimed.errors import InvalidArgument

from tests.helpers import meetings_client

GUID = re.compile(r"[a-f0-9]{8}(?:-[a-f0-9]{4}){3}-[a-f0-9]{12}")
NO_SUCH_ID = "00000000-0000-0000-0000-000000000000"
SR = {"Audio": "SendReceive", "Video": "SendReceive", "Content": "SendReceive"}


def _client(service: EmbeddedChime, validate: bool = True) -> Any:
    config = botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=validate)
    return meetings_client(service.base_url, config=config)


@pytest.fixture
def chime(embedded: EmbeddedChime) -> Iterator[Any]:
    client = _client(embedded)
    yield client
    client.close()


@pytest.fixture
def unchecked(embedded: EmbeddedChime) -> Iterator[Any]:
    """A client that sends what botocore's own validation would stop, for the server to judge."""
    client = _client(embedded, validate=False)
    yield client
    client.close()


async def call(client: Any, op: str, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = await asyncio.to_thread(getattr(client, op), **kwargs)
    return result


async def fails(client: Any, op: str, code: str, status: int, **kwargs: Any) -> str:
    """Call `op`, expect ClientError `code` with HTTP `status`; return its message."""
    with pytest.raises(ClientError) as info:
        await call(client, op, **kwargs)
    response = info.value.response
    assert response["Error"]["Code"] == code, response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    return str(response["Error"]["Message"])


async def new_meeting(client: Any, **kwargs: Any) -> dict[str, Any]:
    args = {
        "ClientRequestToken": uuid.uuid4().hex,
        "MediaRegion": "us-east-1",
        "ExternalMeetingId": "standup",
        **kwargs,
    }
    meeting: dict[str, Any] = (await call(client, "create_meeting", **args))["Meeting"]
    return meeting


def _strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


# --- meetings -------------------------------------------------------------------------------
async def test_create_meeting_shape_and_media_placement(
    embedded: EmbeddedChime, chime: Any
) -> None:
    meeting = await new_meeting(chime, ExternalMeetingId="weekly sync", MediaRegion="eu-west-2")
    mid = meeting["MeetingId"]
    assert GUID.fullmatch(mid)
    assert meeting["ExternalMeetingId"] == "weekly sync"
    assert meeting["MediaRegion"] == "eu-west-2"
    assert meeting["MeetingArn"].startswith("arn:aws:chime:eu-west-2:")
    assert meeting["MeetingArn"].endswith(mid)
    assert "TenantIds" not in meeting and "MeetingHostId" not in meeting

    placement = meeting["MediaPlacement"]
    assert set(placement) == {
        "AudioHostUrl",
        "AudioFallbackUrl",
        "SignalingUrl",
        "TurnControlUrl",
        "ScreenDataUrl",
        "ScreenViewingUrl",
        "ScreenSharingUrl",
        "EventIngestionUrl",
    }
    assert placement["SignalingUrl"] == f"ws://127.0.0.1:{embedded.port}/control/{mid}"
    assert placement["AudioHostUrl"].startswith(f"127.0.0.1:{embedded.port}")
    assert placement["TurnControlUrl"] == embedded.turn_url
    for key, url in placement.items():
        if key != "AudioHostUrl":
            assert url.startswith((embedded.base_url, embedded.ws_url)), (key, url)


async def test_create_meeting_echoes_optional_members(chime: Any) -> None:
    features = {
        "Audio": {"EchoReduction": "AVAILABLE"},
        "Video": {"MaxResolution": "FHD"},
        "Content": {"MaxResolution": "UHD"},
        "Attendee": {"MaxCount": 25},
    }
    primary = await new_meeting(chime)
    meeting = await new_meeting(
        chime,
        MeetingHostId="host-1",
        TenantIds=["tenant-a", "tenant_b"],
        MeetingFeatures=features,
        PrimaryMeetingId=primary["MeetingId"],
        Tags=[{"Key": "team", "Value": "audio"}],
        NotificationsConfiguration={"SnsTopicArn": "arn:aws:sns:us-east-1:1:topic"},
        MediaPlacementNetworkType="Ipv4Only",
    )
    assert meeting["MeetingHostId"] == "host-1"
    assert meeting["TenantIds"] == ["tenant-a", "tenant_b"]
    assert meeting["MeetingFeatures"] == features
    assert meeting["PrimaryMeetingId"] == primary["MeetingId"]


async def test_create_meeting_is_idempotent_on_client_request_token(chime: Any) -> None:
    first = await new_meeting(chime, ClientRequestToken="token-1")
    again = await new_meeting(chime, ClientRequestToken="token-1")
    other = await new_meeting(chime, ClientRequestToken="token-2")
    assert again == first
    assert other["MeetingId"] != first["MeetingId"]
    await call(chime, "delete_meeting", MeetingId=first["MeetingId"])
    # The token belonged to a meeting that ended: it now makes a new one.
    fresh = await new_meeting(chime, ClientRequestToken="token-1")
    assert fresh["MeetingId"] not in (first["MeetingId"], other["MeetingId"])


async def test_get_and_delete_meeting(embedded: EmbeddedChime, chime: Any) -> None:
    meeting = await new_meeting(chime)
    mid = meeting["MeetingId"]
    assert (await call(chime, "get_meeting", MeetingId=mid))["Meeting"] == meeting
    attendee = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann"))[
        "Attendee"
    ]

    deleted = await call(chime, "delete_meeting", MeetingId=mid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert embedded.registry.authenticate(mid, attendee["JoinToken"]) is None

    message = await fails(chime, "get_meeting", "NotFoundException", 404, MeetingId=mid)
    assert mid in message
    await fails(chime, "delete_meeting", "NotFoundException", 404, MeetingId=mid)
    await fails(
        chime, "create_attendee", "NotFoundException", 404, MeetingId=mid, ExternalUserId="bob"
    )
    await fails(chime, "list_attendees", "NotFoundException", 404, MeetingId=mid)
    await fails(
        chime,
        "get_attendee",
        "NotFoundException",
        404,
        MeetingId=mid,
        AttendeeId=attendee["AttendeeId"],
    )


# --- attendees ------------------------------------------------------------------------------
async def test_create_attendee_is_idempotent_and_its_token_admits(
    embedded: EmbeddedChime, chime: Any
) -> None:
    mid = (await new_meeting(chime))["MeetingId"]
    ann = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann"))["Attendee"]
    assert GUID.fullmatch(ann["AttendeeId"])
    assert ann["ExternalUserId"] == "ann"
    assert ann["Capabilities"] == SR
    assert 2 <= len(ann["JoinToken"]) <= 2048

    again = await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann")
    assert again["Attendee"] == ann
    got = await call(chime, "get_attendee", MeetingId=mid, AttendeeId=ann["AttendeeId"])
    assert got["Attendee"] == ann

    caps = {"Audio": "Receive", "Video": "Receive", "Content": "None"}
    bob = await call(
        chime, "create_attendee", MeetingId=mid, ExternalUserId="bob", Capabilities=caps
    )
    assert bob["Attendee"]["Capabilities"] == caps
    assert bob["Attendee"]["AttendeeId"] != ann["AttendeeId"]

    admitted = embedded.registry.authenticate(mid, ann["JoinToken"])
    assert admitted is not None and admitted[1].attendee_id == ann["AttendeeId"]


async def test_delete_attendee(embedded: EmbeddedChime, chime: Any) -> None:
    mid = (await new_meeting(chime))["MeetingId"]
    ann = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann"))["Attendee"]
    bob = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="bob"))["Attendee"]
    aid = ann["AttendeeId"]

    deleted = await call(chime, "delete_attendee", MeetingId=mid, AttendeeId=aid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert embedded.registry.authenticate(mid, ann["JoinToken"]) is None
    listed = await call(chime, "list_attendees", MeetingId=mid)
    assert listed["Attendees"] == [bob]
    message = await fails(
        chime, "get_attendee", "NotFoundException", 404, MeetingId=mid, AttendeeId=aid
    )
    assert aid in message
    await fails(chime, "delete_attendee", "NotFoundException", 404, MeetingId=mid, AttendeeId=aid)
    # The meeting lives on; the same external user id now makes a new attendee.
    anew = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann"))["Attendee"]
    assert anew["AttendeeId"] != aid


async def test_list_attendees_pages_in_creation_order(chime: Any) -> None:
    mid = (await new_meeting(chime))["MeetingId"]
    names = [f"user-{i:02}" for i in range(25)]
    created = []
    for name in names:
        out = await call(chime, "create_attendee", MeetingId=mid, ExternalUserId=name)
        created.append(out["Attendee"])

    pages: list[list[dict[str, Any]]] = []
    kwargs: dict[str, Any] = {"MeetingId": mid, "MaxResults": 10}
    while True:
        out = await call(chime, "list_attendees", **kwargs)
        pages.append(out["Attendees"])
        if "NextToken" not in out:
            break
        kwargs["NextToken"] = out["NextToken"]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [a for p in pages for a in p] == created

    # Without MaxResults a page holds ten.
    first = await call(chime, "list_attendees", MeetingId=mid)
    assert first["Attendees"] == created[:10] and "NextToken" in first
    everyone = await call(chime, "list_attendees", MeetingId=mid, MaxResults=100)
    assert everyone["Attendees"] == created and "NextToken" not in everyone

    # Deleting attendees between pages skips no one who remains.
    out = await call(chime, "list_attendees", MeetingId=mid, MaxResults=5)
    for gone in created[:7]:
        await call(chime, "delete_attendee", MeetingId=mid, AttendeeId=gone["AttendeeId"])
    rest = await call(
        chime, "list_attendees", MeetingId=mid, MaxResults=100, NextToken=out["NextToken"]
    )
    assert rest["Attendees"] == created[7:]


async def test_list_attendees_rejects_foreign_and_garbled_tokens(chime: Any) -> None:
    one = (await new_meeting(chime))["MeetingId"]
    two = (await new_meeting(chime))["MeetingId"]
    for mid in (one, two):
        for name in ("ann", "bob"):
            await call(chime, "create_attendee", MeetingId=mid, ExternalUserId=name)
    token = (await call(chime, "list_attendees", MeetingId=one, MaxResults=1))["NextToken"]
    for bad in (token + "x", "not a token", "e30="):
        await fails(
            chime, "list_attendees", "BadRequestException", 400, MeetingId=one, NextToken=bad
        )
    await fails(chime, "list_attendees", "BadRequestException", 400, MeetingId=two, NextToken=token)


async def test_batch_create_attendee_with_errors(chime: Any) -> None:
    mid = (await new_meeting(chime))["MeetingId"]
    existing = (await call(chime, "create_attendee", MeetingId=mid, ExternalUserId="ann"))[
        "Attendee"
    ]
    items: list[dict[str, Any]] = [
        {"ExternalUserId": "ann"},
        {"ExternalUserId": "bob", "Capabilities": SR},
        # Content that receives needs video that receives.
        {
            "ExternalUserId": "cat",
            "Capabilities": {"Audio": "SendReceive", "Video": "Send", "Content": "Receive"},
        },
        {
            "ExternalUserId": "dan",
            "Capabilities": {"Audio": "Send", "Video": "Receive", "Content": "None"},
        },
    ]
    out = await call(chime, "batch_create_attendee", MeetingId=mid, Attendees=items)
    attendees = out["Attendees"]
    assert [a["ExternalUserId"] for a in attendees] == ["ann", "bob", "dan"]
    assert attendees[0] == existing
    assert attendees[2]["Capabilities"] == items[3]["Capabilities"]
    assert len(out["Errors"]) == 1
    error = out["Errors"][0]
    assert error["ExternalUserId"] == "cat"
    assert error["ErrorCode"] == "BadRequest" and error["ErrorMessage"]

    listed = await call(chime, "list_attendees", MeetingId=mid, MaxResults=100)
    assert [a["ExternalUserId"] for a in listed["Attendees"]] == ["ann", "bob", "dan"]

    hundred = [{"ExternalUserId": f"u{i:03}"} for i in range(100)]
    out = await call(chime, "batch_create_attendee", MeetingId=mid, Attendees=hundred)
    assert len(out["Attendees"]) == 100 and out["Errors"] == []
    too_many = [*hundred, {"ExternalUserId": "u100"}]
    message = await fails(
        chime,
        "batch_create_attendee",
        "BadRequestException",
        400,
        MeetingId=mid,
        Attendees=too_many,
    )
    assert "less than or equal to 100" in message
    await fails(
        chime,
        "batch_create_attendee",
        "NotFoundException",
        404,
        MeetingId=NO_SUCH_ID,
        Attendees=items[:1],
    )


async def test_create_meeting_with_attendees(chime: Any) -> None:
    args: dict[str, Any] = {
        "ClientRequestToken": "with-attendees",
        "MediaRegion": "us-west-2",
        "ExternalMeetingId": "kickoff",
        "MeetingFeatures": {"Video": {"MaxResolution": "None"}},
        "Attendees": [
            {"ExternalUserId": "ann"},
            {"ExternalUserId": "bob", "Capabilities": SR},
            {
                "ExternalUserId": "cat",
                "Capabilities": {"Audio": "SendReceive", "Video": "None", "Content": "None"},
            },
        ],
    }
    out = await call(chime, "create_meeting_with_attendees", **args)
    meeting = out["Meeting"]
    assert meeting["MediaRegion"] == "us-west-2"
    assert [a["ExternalUserId"] for a in out["Attendees"]] == ["ann", "cat"]
    # Video unavailable, content at its default: video falls to Receive for content to work.
    assert out["Attendees"][0]["Capabilities"] == {
        "Audio": "SendReceive",
        "Video": "Receive",
        "Content": "SendReceive",
    }
    assert [e["ExternalUserId"] for e in out["Errors"]] == ["bob"]

    again = await call(chime, "create_meeting_with_attendees", **args)
    assert again["Meeting"] == meeting and again["Attendees"] == out["Attendees"]
    got = await call(chime, "get_meeting", MeetingId=meeting["MeetingId"])
    assert got["Meeting"] == meeting

    args["Attendees"] = [{"ExternalUserId": f"u{i}"} for i in range(21)]
    args["ClientRequestToken"] = "too-many"
    await fails(chime, "create_meeting_with_attendees", "BadRequestException", 400, **args)


async def test_capabilities_follow_meeting_features(chime: Any) -> None:
    no_video = (await new_meeting(chime, MeetingFeatures={"Video": {"MaxResolution": "None"}}))[
        "MeetingId"
    ]
    no_media = (
        await new_meeting(
            chime,
            MeetingFeatures={
                "Video": {"MaxResolution": "None"},
                "Content": {"MaxResolution": "None"},
            },
        )
    )["MeetingId"]
    out = await call(chime, "create_attendee", MeetingId=no_media, ExternalUserId="ann")
    assert out["Attendee"]["Capabilities"] == {
        "Audio": "SendReceive",
        "Video": "None",
        "Content": "None",
    }
    for mid, caps in (
        (no_video, {"Audio": "SendReceive", "Video": "Send", "Content": "None"}),
        (no_media, {"Audio": "SendReceive", "Video": "None", "Content": "Send"}),
    ):
        await fails(
            chime,
            "create_attendee",
            "BadRequestException",
            400,
            MeetingId=mid,
            ExternalUserId="bob",
            Capabilities=caps,
        )


# --- validation -----------------------------------------------------------------------------
LONG = "x" * 65
MEETING_ERRORS: list[tuple[str, dict[str, Any]]] = [
    ("ClientRequestToken too long", {"ClientRequestToken": "t" * 65}),
    ("ClientRequestToken too short", {"ClientRequestToken": "t"}),
    ("ClientRequestToken pattern", {"ClientRequestToken": "has space"}),
    ("ExternalMeetingId too long", {"ExternalMeetingId": LONG}),
    ("ExternalMeetingId too short", {"ExternalMeetingId": "x"}),
    ("MediaRegion unknown", {"MediaRegion": "mars-north-1"}),
    ("MeetingHostId too long", {"MeetingHostId": LONG}),
    ("TenantIds too many", {"TenantIds": [f"tenant{i}" for i in range(6)]}),
    ("TenantIds empty", {"TenantIds": []}),
    ("TenantId repeats", {"TenantIds": ["aaaab"]}),
    ("TenantId charset", {"TenantIds": ["sp ace"]}),
    ("Video resolution", {"MeetingFeatures": {"Video": {"MaxResolution": "8K"}}}),
    ("Echo reduction", {"MeetingFeatures": {"Audio": {"EchoReduction": "ON"}}}),
    ("MaxCount", {"MeetingFeatures": {"Attendee": {"MaxCount": 251}}}),
    ("PrimaryMeetingId", {"PrimaryMeetingId": LONG}),
    ("Tag key", {"Tags": [{"Key": "no spaces allowed", "Value": "v"}]}),
    ("Tag value missing", {"Tags": [{"Key": "k"}]}),
    ("Arn", {"NotificationsConfiguration": {"SqsQueueArn": "queue"}}),
    ("Network type", {"MediaPlacementNetworkType": "Ipv6Only"}),
    ("ExternalMeetingId type", {"ExternalMeetingId": 42}),
]


@pytest.mark.parametrize("case", MEETING_ERRORS, ids=[c[0] for c in MEETING_ERRORS])
async def test_create_meeting_validation(unchecked: Any, case: tuple[str, dict[str, Any]]) -> None:
    args = {"ClientRequestToken": "tok", "MediaRegion": "us-east-1", "ExternalMeetingId": "m1"}
    args.update(case[1])
    message = await fails(unchecked, "create_meeting", "BadRequestException", 400, **args)
    assert message


@pytest.mark.parametrize("missing", ["ClientRequestToken", "MediaRegion", "ExternalMeetingId"])
async def test_create_meeting_required_members(unchecked: Any, missing: str) -> None:
    args = {"ClientRequestToken": "tok", "MediaRegion": "us-east-1", "ExternalMeetingId": "m1"}
    del args[missing]
    if missing == "ClientRequestToken":
        args["ClientRequestToken"] = ""  # botocore fills an absent idempotency token
    message = await fails(unchecked, "create_meeting", "BadRequestException", 400, **args)
    assert missing[0].lower() + missing[1:] in message


async def test_validation_message_counts_and_names_every_error(unchecked: Any) -> None:
    message = await fails(
        unchecked,
        "create_meeting",
        "BadRequestException",
        400,
        ClientRequestToken="t" * 65,
        MediaRegion="us-east-1",
        ExternalMeetingId=LONG,
    )
    assert message.startswith("2 validation errors detected")
    assert "'clientRequestToken'" in message and "'externalMeetingId'" in message
    # Sensitive values are never echoed.
    assert "t" * 65 not in message and LONG not in message


ATTENDEE_ERRORS: list[tuple[str, dict[str, Any]]] = [
    ("ExternalUserId too long", {"ExternalUserId": LONG}),
    ("ExternalUserId too short", {"ExternalUserId": "x"}),
    ("ExternalUserId missing", {"ExternalUserId": None}),
    ("capability value", {"Capabilities": {**SR, "Audio": "Loud"}}),
    ("capability missing", {"Capabilities": {"Audio": "SendReceive", "Video": "SendReceive"}}),
    ("content without video", {"Capabilities": {**SR, "Video": "None"}}),
]


@pytest.mark.parametrize("case", ATTENDEE_ERRORS, ids=[c[0] for c in ATTENDEE_ERRORS])
async def test_create_attendee_validation(unchecked: Any, case: tuple[str, dict[str, Any]]) -> None:
    mid = (await new_meeting(unchecked))["MeetingId"]
    args: dict[str, Any] = {"MeetingId": mid, "ExternalUserId": "ann", **case[1]}
    args = {k: v for k, v in args.items() if v is not None}
    await fails(unchecked, "create_attendee", "BadRequestException", 400, **args)
    listed = await call(unchecked, "list_attendees", MeetingId=mid)
    assert listed["Attendees"] == []


async def test_ids_and_ranges_are_validated(unchecked: Any) -> None:
    mid = (await new_meeting(unchecked))["MeetingId"]
    aid = (await call(unchecked, "create_attendee", MeetingId=mid, ExternalUserId="ann"))[
        "Attendee"
    ]["AttendeeId"]
    bad = "not-a-guid"
    for op, kwargs in (
        ("get_meeting", {"MeetingId": bad}),
        ("delete_meeting", {"MeetingId": bad}),
        ("create_attendee", {"MeetingId": bad, "ExternalUserId": "ann"}),
        ("list_attendees", {"MeetingId": bad}),
        ("get_attendee", {"MeetingId": mid, "AttendeeId": bad}),
        ("delete_attendee", {"MeetingId": mid, "AttendeeId": bad}),
        ("get_attendee", {"MeetingId": bad, "AttendeeId": aid}),
        ("list_attendees", {"MeetingId": mid, "MaxResults": 0}),
        ("list_attendees", {"MeetingId": mid, "MaxResults": 101}),
        ("batch_create_attendee", {"MeetingId": mid, "Attendees": []}),
        ("batch_create_attendee", {"MeetingId": mid, "Attendees": [{"ExternalUserId": LONG}]}),
    ):
        await fails(unchecked, op, "BadRequestException", 400, **kwargs)
    for op, kwargs in (
        ("get_meeting", {"MeetingId": NO_SUCH_ID}),
        ("get_attendee", {"MeetingId": mid, "AttendeeId": NO_SUCH_ID}),
        ("delete_attendee", {"MeetingId": mid, "AttendeeId": NO_SUCH_ID}),
        ("get_attendee", {"MeetingId": NO_SUCH_ID, "AttendeeId": aid}),
    ):
        await fails(unchecked, op, "NotFoundException", 404, **kwargs)
    # Nothing was deleted by the failed calls.
    await call(unchecked, "get_attendee", MeetingId=mid, AttendeeId=aid)


# --- raw HTTP: what boto3 cannot send -------------------------------------------------------
async def test_raw_http_errors_are_json(embedded: EmbeddedChime) -> None:
    async def request(method: str, path: str, data: bytes | None = None) -> tuple[int, Any]:
        async with http.request(method, embedded.base_url + path, data=data) as response:
            body = json.loads(await response.read())
            assert response.headers["x-amzn-ErrorType"] == body["Code"]
            assert response.headers["x-amzn-RequestId"]
            return response.status, body

    async with aiohttp.ClientSession() as http:
        status, body = await request("GET", "/no/such/route")
        assert (status, body["Code"]) == (404, "UnknownOperationException")
        status, body = await request("PUT", "/meetings")
        assert (status, body["Code"]) == (404, "UnknownOperationException")
        status, body = await request("POST", "/meetings?operation=explode", b"{}")
        assert (status, body["Code"]) == (404, "UnknownOperationException")
        status, body = await request("POST", "/meetings", b"{not json")
        assert (status, body["Code"]) == (400, "BadRequestException")
        status, body = await request("POST", "/meetings", b"[1, 2]")
        assert (status, body["Code"]) == (400, "BadRequestException")
        path = f"/meetings/{NO_SUCH_ID}/attendees?max-results=ten"
        status, body = await request("GET", path)
        assert (status, body["Code"]) == (400, "BadRequestException")


# --- the service runner ---------------------------------------------------------------------
def test_refuses_non_loopback_hosts() -> None:
    for host in ("0.0.0.0", "192.0.2.10", "example.com", "::"):
        with pytest.raises(InvalidArgument):
            EmbeddedChime(host)
    EmbeddedChime("0.0.0.0", allow_remote=True)  # constructed, never started
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        EmbeddedChime(host)


async def test_urls_hooks_and_turn_url() -> None:
    svc = EmbeddedChime()
    events: list[str] = []

    async def started() -> None:
        events.append(f"startup {svc.base_url}")

    async def async_cleanup() -> None:
        events.append("async cleanup")

    svc.add_startup(started)
    svc.add_cleanup(lambda: events.append("first cleanup"))
    svc.add_cleanup(async_cleanup)
    await svc.start()
    try:
        assert svc.port > 0
        assert svc.base_url == f"http://127.0.0.1:{svc.port}"
        assert svc.ws_url == f"ws://127.0.0.1:{svc.port}"
        assert events == [f"startup {svc.base_url}"]
        svc.turn_url = "turn:127.0.0.1:3478"
        chime = _client(svc)
        try:
            meeting = await new_meeting(chime)
        finally:
            chime.close()
        assert meeting["MediaPlacement"]["TurnControlUrl"] == "turn:127.0.0.1:3478"
    finally:
        await svc.stop()
    assert events[1:] == ["async cleanup", "first cleanup"]
    await svc.stop()  # idempotent
    assert len(events) == 3
    # The port is released.
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"http://127.0.0.1:{svc.port}/meetings")


async def test_stop_closes_open_websockets() -> None:
    svc = EmbeddedChime()
    opened = asyncio.Event()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        opened.set()
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    svc.app.router.add_get("/test/echo", echo)
    await svc.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"{svc.ws_url}/test/echo") as ws:
                await asyncio.wait_for(opened.wait(), 5)
                await ws.send_str("hi")
                assert (await ws.receive(timeout=5)).data == "hi"
                stopping = asyncio.create_task(svc.stop())
                msg = await ws.receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
                await asyncio.wait_for(stopping, 10)
    finally:
        await svc.stop()


async def test_failed_startup_releases_the_port() -> None:
    svc = EmbeddedChime()
    cleaned = asyncio.Event()

    def broken() -> None:
        raise RuntimeError("relay failed")

    svc.add_startup(broken)
    svc.add_cleanup(cleaned.set)
    with pytest.raises(RuntimeError, match="relay failed"):
        await svc.start()
    assert cleaned.is_set()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{svc.base_url}/meetings")


# --- AWS CLI parity (only where the CLI is installed) ---------------------------------------
@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
@pytest.mark.slow
async def test_aws_cli_sees_the_same_json(
    embedded: EmbeddedChime, chime: Any, tmp_path: Any
) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_PAGER": "",
    }

    async def aws(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            "aws",
            "chime-sdk-meetings",
            *args,
            "--endpoint-url",
            embedded.base_url,
            "--output",
            "json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = await aws(
        "create-meeting",
        "--client-request-token",
        "cli-token",
        "--media-region",
        "us-east-1",
        "--external-meeting-id",
        "from-the-cli",
    )
    assert rc == 0, err
    cli_meeting = json.loads(out)
    mid = cli_meeting["Meeting"]["MeetingId"]
    assert cli_meeting == _strip(await call(chime, "get_meeting", MeetingId=mid))

    rc, out, err = await aws("create-attendee", "--meeting-id", mid, "--external-user-id", "cli")
    assert rc == 0, err
    listed = await call(chime, "list_attendees", MeetingId=mid)
    assert [json.loads(out)["Attendee"]] == listed["Attendees"]

    rc, out, err = await aws("get-meeting", "--meeting-id", NO_SUCH_ID)
    assert rc != 0 and "(NotFoundException)" in err
