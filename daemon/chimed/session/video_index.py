"""Which remote video streams to receive, from the service's INDEX, as the web client's
DefaultVideoStreamIndex and AllHighestVideoBandwidthPolicy choose them: each INDEX is the
complete list; only VIDEO sources count; per attendee only the newest group (group ids grow
with each sender session); never our own attendee nor our own content share; at most
`limit` streams, the lowest stream ids kept."""

from __future__ import annotations

from chime.signaling import signaling_pb2 as sig

CONTENT_SUFFIX = "#content"
SUBSCRIPTION_LIMIT = 25


def is_content(attendee_id: str) -> bool:
    return attendee_id.endswith(CONTENT_SUFFIX)


def wanted_sources(
    index: sig.SdkIndexFrame, self_attendee_id: str, limit: int = SUBSCRIPTION_LIMIT
) -> dict[int, sig.SdkStreamDescriptor]:
    """The sources to receive, by stream id, ascending."""
    own = {self_attendee_id, self_attendee_id + CONTENT_SUFFIX}
    newest: dict[str, sig.SdkStreamDescriptor] = {}
    for source in index.sources:
        if source.media_type != sig.VIDEO or source.attendee_id in own:
            continue
        if not source.stream_id:
            continue
        best = newest.get(source.attendee_id)
        if (
            best is None
            or source.group_id > best.group_id
            or (
                source.group_id == best.group_id and source.max_bitrate_kbps > best.max_bitrate_kbps
            )
        ):
            newest[source.attendee_id] = source
    chosen = sorted(newest.values(), key=lambda s: s.stream_id)[:limit]
    return {s.stream_id: s for s in chosen}
