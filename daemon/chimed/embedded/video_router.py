"""The media server's video: the I/O around chimed.embedded.video_forwarding.

Per attendee session (its peer connection), the camera section's receiver becomes an ingress
(its packets go to the meeting's Forwarding, never to a decoder) and each section the session
receives a stream on becomes an egress slot (chimed.media.rtp_forward via shortcuts). Packets
are forwarded as they arrive; keyframe requests go to the sender as RTCP PLI.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from chimed.embedded.sdp_sections import MediaSection, VideoLayout, sections
from chimed.embedded.video_forwarding import Forwarding, Section, codec_key
from chimed.media import shortcuts
from chimed.media.rtp_forward import Egress, Ingress

log = logging.getLogger(__name__)

# (meeting id, video stream id, width, height): a source's picture size, seen in a keyframe.
SizeSink = Callable[[str, int, int, int], None]


@dataclass(frozen=True)
class VideoTrack:
    """A section the server sends a stream on (SUBSCRIBE_ACK.tracks)."""

    stream_id: int
    ssrc: int
    mid: str


@dataclass
class _Session:
    meeting_id: str
    session: int  # its audio stream id
    source: int | None = None  # the video stream id it sends, while admitted
    source_ssrc: int | None = None
    ingress: Ingress | None = None
    ingress_receiver: Any = None
    egress: dict[str, Egress] = field(default_factory=dict)  # by mid


class VideoRouter:
    def __init__(self) -> None:
        self.on_size: SizeSink | None = None
        self._meetings: dict[str, Forwarding] = {}
        self._sessions: dict[tuple[str, int], _Session] = {}

    def forwarding(self, meeting_id: str) -> Forwarding:
        found = self._meetings.get(meeting_id)
        if found is None:
            found = self._meetings[meeting_id] = Forwarding()
        return found

    def _session(self, meeting_id: str, session: int) -> _Session:
        key = (meeting_id, session)
        found = self._sessions.get(key)
        if found is None:
            found = self._sessions[key] = _Session(meeting_id, session)
        return found

    # --- negotiation -----------------------------------------------------------------------
    def attach(
        self,
        meeting_id: str,
        session: int,
        pc: RTCPeerConnection,
        layout: VideoLayout,
        send_stream_id: int | None,
    ) -> None:
        """Set the video transceivers' directions for the answer (after the offer is set):
        the camera `recvonly` while admitted, each subscribed section `sendonly`, the rest
        inactive."""
        state = self._session(meeting_id, session)
        forwarding = self.forwarding(meeting_id)
        if state.source is not None and state.source != send_stream_id:
            forwarding.remove_source(state.source)
            state.source, state.source_ssrc = None, None
        for transceiver in pc.getTransceivers():
            if transceiver.kind != "video":
                continue
            mid = transceiver.mid
            if mid is not None and mid == layout.camera and send_stream_id is not None:
                transceiver.direction = "recvonly"
                if state.ingress_receiver is not transceiver.receiver:
                    state.ingress_receiver = transceiver.receiver
                    state.ingress = shortcuts.forward_ingress(
                        transceiver.receiver,
                        lambda packet, codec: self._packet(state, packet, codec),
                    )
                if state.source is None:
                    state.source = send_stream_id
                    forwarding.add_source(send_stream_id)
            elif mid is not None and mid in layout.receive:
                transceiver.direction = "sendonly"
                if mid not in state.egress:
                    egress = shortcuts.forward_egress(
                        transceiver.sender,
                        mid,
                        functools.partial(self._feedback, state, mid),
                        functools.partial(self._nack, state, mid),
                    )
                    if egress is not None:
                        state.egress[mid] = egress
            else:
                transceiver.direction = "inactive"

    def answered(
        self, meeting_id: str, session: int, answer_sdp: str, layout: VideoLayout
    ) -> list[VideoTrack]:
        """After the answer: the sections to forward on, and the SUBSCRIBE_ACK tracks."""
        state = self._session(meeting_id, session)
        answer: dict[str, MediaSection] = {s.mid: s for s in sections(answer_sdp)}
        subscribed: list[Section] = []
        tracks: list[VideoTrack] = []
        for mid, stream_id in layout.receive.items():
            egress = state.egress.get(mid)
            section = answer.get(mid)
            if egress is None or section is None:
                continue
            subscribed.append(Section(session, mid, stream_id, dict(section.payload_types)))
            tracks.append(VideoTrack(stream_id, egress.ssrc, mid))
        for stream_id in self.forwarding(meeting_id).subscribe(session, subscribed):
            self.request_keyframe(meeting_id, stream_id)
        return tracks

    # --- control ---------------------------------------------------------------------------
    def pause(self, meeting_id: str, session: int, stream_ids: set[int], paused: bool) -> None:
        for stream_id in self.forwarding(meeting_id).pause(session, stream_ids, paused):
            self.request_keyframe(meeting_id, stream_id)

    def bitrate(self, meeting_id: str, stream_id: int) -> int:
        """A source's average bitrate now (bits/s; 0 for none)."""
        forwarding = self._meetings.get(meeting_id)
        return forwarding.bitrate(stream_id, time.monotonic()) if forwarding is not None else 0

    def request_keyframe(self, meeting_id: str, stream_id: int) -> None:
        sender = self._sender(meeting_id, stream_id)
        if sender is not None and sender.ingress is not None and sender.source_ssrc is not None:
            sender.ingress.request_keyframe(sender.source_ssrc)
            self.forwarding(meeting_id).requested(stream_id, time.monotonic())
        # else it stays wanted: the source's first packet (its SSRC known) asks for it

    def close(self, meeting_id: str, session: int) -> None:
        state = self._sessions.pop((meeting_id, session), None)
        forwarding = self._meetings.get(meeting_id)
        if forwarding is None:
            return
        forwarding.remove_receiver(session)
        if state is not None and state.source is not None:
            forwarding.remove_source(state.source)
        if not any(m == meeting_id for m, _ in self._sessions):
            del self._meetings[meeting_id]

    # --- media -----------------------------------------------------------------------------
    def _packet(self, state: _Session, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        if state.source is None:
            return
        state.source_ssrc = packet.ssrc
        now = time.monotonic()
        forwarding = self.forwarding(state.meeting_id)

        def connected(section: Section) -> bool:
            return self._egress(state.meeting_id, section) is not None

        result = forwarding.packet(
            state.source,
            codec_key(codec.name, codec.parameters),
            packet.sequence_number,
            packet.timestamp,
            packet.payload,
            now,
            connected,
        )
        for out in result.outgoing:
            egress = self._egress(state.meeting_id, out.section)
            if egress is not None:
                egress.send(
                    out.payload_type,
                    packet.marker,
                    out.sequence_number,
                    out.timestamp,
                    packet.payload,
                )
        if result.keyframe_wanted and state.ingress is not None:
            state.ingress.request_keyframe(packet.ssrc)
        if result.size is not None and self.on_size is not None:
            self.on_size(state.meeting_id, state.source, *result.size)

    def _egress(self, meeting_id: str, section: Section) -> Egress | None:
        """The section's slot, if its connection can carry a packet now."""
        receiver = self._sessions.get((meeting_id, section.receiver))
        egress = receiver.egress.get(section.mid) if receiver is not None else None
        return egress if egress is not None and egress.ready else None

    def _nack(self, state: _Session, mid: str, lost: list[int]) -> None:
        """A receiver lost packets on a section: the sender is asked for them again."""
        stream_id, original = self.forwarding(state.meeting_id).lost(state.session, mid, lost)
        sender = self._sender(state.meeting_id, stream_id)
        if original and sender is not None and sender.ingress and sender.source_ssrc is not None:
            sender.ingress.request_retransmission(sender.source_ssrc, original)

    def _sender(self, meeting_id: str, stream_id: int | None) -> _Session | None:
        """The session that sends the stream `stream_id`."""
        if stream_id is None:
            return None
        return next(
            (
                s
                for s in self._sessions.values()
                if s.meeting_id == meeting_id and s.source == stream_id
            ),
            None,
        )

    def _feedback(self, state: _Session, mid: str) -> None:
        stream_id = self.forwarding(state.meeting_id).feedback(state.session, mid, time.monotonic())
        if stream_id is not None:
            self.request_keyframe(state.meeting_id, stream_id)
