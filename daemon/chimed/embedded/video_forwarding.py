"""One meeting's video forwarding, as Chime's SFU does it: plain state, no I/O.

Each video source (a sender session's camera, by its server-assigned stream id) is forwarded
to every receiver section subscribed to it (a receiver session's `recvonly` m-section, by mid),
packet by packet and never decoded. Per section the packet is renumbered: the section's own
payload type for the codec (each peer connection negotiates its own), and sequence numbers and
timestamps that stay continuous for the section across pauses and restarts, so the receiver's
jitter buffer sees one stream. A section starts (and restarts after RESUME) on a keyframe: the
packets before it could not be decoded, so they are dropped and the sender is asked for one.

The I/O adapter (chimed.embedded.media_server) feeds `packet()` and sends what it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from chimed.media.video_bitstream import Size, SizeWatcher, vp8_payload_size

VP8 = "VP8"
H264 = "H264"
CLOCK_RATE = 90000  # every video codec's RTP clock
KEYFRAME_RETRY_S = 1.0  # while a section waits for a keyframe, ask again this often
FEEDBACK_INTERVAL_S = 0.2  # receivers' keyframe requests reach the sender at most this often
BITRATE_WINDOW_S = 2.0  # a source's average bitrate is measured over this (as Chime's BITRATES)
_KEY_NALS = (5, 7)  # IDR slice, sequence parameter set
_STAP_A, _FU_A = 24, 28


def codec_key(name: str, parameters: Mapping[str, object]) -> str | None:
    """What a codec is forwarded as: VP8, or H264 in packetization mode 1 (the baseline
    profiles Chrome and aiortc offer, which one decoder takes); None for anything else."""
    name = name.upper()
    if name == VP8:
        return VP8
    if name == H264 and str(parameters.get("packetization-mode", "0")) == "1":
        return H264
    return None


def keyframe_start(codec: str, payload: bytes) -> bool:
    """Whether an RTP payload starts a keyframe: VP8's keyframe header in the first partition,
    or an H.264 sequence parameter set or IDR slice at the start of a NAL unit (alone, in a
    STAP-A, or as an FU-A's first fragment)."""
    if codec == VP8:
        return vp8_payload_size(payload) is not None
    if not payload:
        return False
    kind = payload[0] & 0x1F
    if kind == _STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            if payload[offset + 2] & 0x1F in _KEY_NALS:
                return True
            offset += 2 + int.from_bytes(payload[offset : offset + 2], "big")
        return False
    if kind == _FU_A:
        return len(payload) >= 2 and bool(payload[1] & 0x80) and payload[1] & 0x1F in _KEY_NALS
    return kind in _KEY_NALS


def _older(seq: int, than: int) -> bool:
    return (seq - than) & 0xFFFF >= 0x8000


@dataclass(eq=False)
class Section:
    """A receiver's m-section that carries one source (or nothing while it waits)."""

    receiver: int  # the receiver session (its audio stream id)
    mid: str
    stream_id: int  # the source it is subscribed to
    payload_types: dict[str, int]  # codec key -> this section's negotiated payload type
    paused: bool = False
    waiting: bool = True  # for a keyframe: nothing is forwarded until one starts
    connected: bool = True  # its connection could carry a packet (last time it was asked)
    forwarded: int = 0  # packets sent
    _started: bool = False
    _seq_offset: int = 0
    _ts_offset: int = 0
    _first_seq: int = 0  # the source's number of the packet this run started with
    _last_seq: int = 0  # the last numbers sent, and when
    _last_ts: int = 0
    _last_time: float = 0.0

    def original(self, seq: int) -> int | None:
        """The source's number of a packet this section sent as `seq` in its current run
        (None: before it, or never sent)."""
        if not self._started or self.waiting:
            return None
        first = (self._first_seq + self._seq_offset) & 0xFFFF
        if _older(seq, first) or _older(self._last_seq, seq):
            return None
        return (seq - self._seq_offset) & 0xFFFF

    def restart(self) -> None:
        """Wait for a keyframe, then go on numbering from where the section stopped."""
        self.waiting = True

    def rewrite(
        self, seq: int, timestamp: int, keyframe: bool, now: float
    ) -> tuple[int, int] | None:
        """This section's (sequence number, timestamp) for a source packet; None to drop it."""
        if self.paused:
            return None
        if self.waiting:
            if not keyframe:
                return None
            self.waiting = False
            if self._started:  # continue the numbering; the clock ran on while it stopped
                elapsed = max(1, int((now - self._last_time) * CLOCK_RATE))
                self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
                self._ts_offset = (self._last_ts + elapsed - timestamp) & 0xFFFFFFFF
            self._started = True
            self._first_seq = seq
        elif _older(seq, self._first_seq):
            return None  # from before this run: its numbers may already be taken
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        if not _older(out_seq, self._last_seq) or self.forwarded == 0:
            self._last_seq, self._last_ts, self._last_time = out_seq, out_ts, now
        self.forwarded += 1
        return out_seq, out_ts


@dataclass(frozen=True)
class Outgoing:
    section: Section
    payload_type: int
    sequence_number: int
    timestamp: int


@dataclass
class Forwarded:
    """What one source packet became."""

    outgoing: list[Outgoing] = field(default_factory=list)
    keyframe_wanted: bool = False  # ask the sender for a keyframe now
    size: Size | None = None  # the source's picture size changed to this


@dataclass
class _Source:
    codec: str | None = None
    bytes_in: int = 0  # payload bytes since `window_start`, and in the window before
    window_start: float = 0.0
    last_rate_bps: int = 0
    watcher: SizeWatcher | None = None
    last_request: float = float("-inf")
    wanted: bool = False  # a keyframe request is due (new subscriber, resume, feedback)


class Forwarding:
    """The forwarding of one meeting: sources by stream id, receivers' sections by mid."""

    def __init__(self) -> None:
        self._sources: dict[int, _Source] = {}
        self._sections: dict[int, dict[str, Section]] = {}  # receiver -> mid -> section
        self._paused: dict[int, set[int]] = {}  # receiver -> stream ids it paused
        # stream id -> the sections showing it, derived from _sections when they change
        # (negotiations), so that a packet touches only its own stream's sections.
        self._showing: dict[int, list[Section]] = {}

    # --- sources ---------------------------------------------------------------------------
    def add_source(self, stream_id: int) -> None:
        self._sources.setdefault(stream_id, _Source())

    def remove_source(self, stream_id: int) -> None:
        self._sources.pop(stream_id, None)
        for section in self._showing.get(stream_id, ()):
            section.restart()

    def source_ids(self) -> list[int]:
        return list(self._sources)

    def codec(self, stream_id: int) -> str | None:
        """The codec a source sends (None until its first packet)."""
        source = self._sources.get(stream_id)
        return source.codec if source is not None else None

    def bitrate(self, stream_id: int, now: float) -> int:
        """A source's average bitrate (bits/s) over the last full window of BITRATE_WINDOW_S."""
        source = self._sources.get(stream_id)
        if source is None:
            return 0
        self._roll(source, now)
        return source.last_rate_bps

    @staticmethod
    def _roll(source: _Source, now: float) -> None:
        elapsed = now - source.window_start
        if elapsed >= BITRATE_WINDOW_S:
            fresh = elapsed < 2 * BITRATE_WINDOW_S  # else nothing came in the last window
            source.last_rate_bps = int(source.bytes_in * 8 / elapsed) if fresh else 0
            source.bytes_in, source.window_start = 0, now

    def size(self, stream_id: int) -> Size | None:
        source = self._sources.get(stream_id)
        return source.watcher.size if source is not None and source.watcher else None

    # --- receivers -------------------------------------------------------------------------
    def subscribe(self, receiver: int, sections: Iterable[Section]) -> list[int]:
        """A receiver's sections after a (re-)negotiation; those already forwarding the same
        source keep their state. Returns the stream ids to ask a keyframe of now."""
        old = self._sections.get(receiver, {})
        new: dict[str, Section] = {}
        wanted: list[int] = []
        paused = self._paused.get(receiver, set())
        for section in sections:
            kept = old.get(section.mid)
            if kept is not None and kept.stream_id == section.stream_id:
                kept.payload_types = section.payload_types
                section = kept
            else:
                section.paused = section.stream_id in paused
                if not section.paused:
                    wanted.append(section.stream_id)
            new[section.mid] = section
        self._sections[receiver] = new
        self._index()
        return self._want(wanted)

    def remove_receiver(self, receiver: int) -> None:
        self._sections.pop(receiver, None)
        self._paused.pop(receiver, None)
        self._index()

    def _index(self) -> None:
        showing: dict[int, list[Section]] = {}
        for sections in self._sections.values():
            for section in sections.values():
                showing.setdefault(section.stream_id, []).append(section)
        self._showing = showing

    def sections(self, receiver: int) -> list[Section]:
        return list(self._sections.get(receiver, {}).values())

    def pause(self, receiver: int, stream_ids: Iterable[int], paused: bool) -> list[int]:
        """PAUSE / RESUME from a receiver: stop or restart forwarding those streams to it
        alone. Returns the stream ids to ask a keyframe of (resumed ones)."""
        ids = set(stream_ids)
        held = self._paused.setdefault(receiver, set())
        if paused:
            held |= ids
        else:
            held -= ids
        wanted: list[int] = []
        for section in self._sections.get(receiver, {}).values():
            if section.stream_id in ids and section.paused != paused:
                section.paused = paused
                if not paused:
                    section.restart()
                    wanted.append(section.stream_id)
        return self._want(wanted)

    def feedback(self, receiver: int, mid: str, now: float) -> int | None:
        """A receiver's PLI or FIR on a section: the stream id to ask a keyframe of, or None
        (nothing forwarded there, or asked too recently)."""
        section = self._sections.get(receiver, {}).get(mid)
        if section is None or section.paused:
            return None
        source = self._sources.get(section.stream_id)
        if source is None or now - source.last_request < FEEDBACK_INTERVAL_S:
            return None
        source.last_request = now
        return section.stream_id

    def lost(self, receiver: int, mid: str, seqs: Iterable[int]) -> tuple[int | None, list[int]]:
        """A receiver's NACK on a section: the stream and the source's own numbers of the
        packets to send again (those of the section's current run)."""
        section = self._sections.get(receiver, {}).get(mid)
        if section is None:
            return None, []
        original = [o for o in map(section.original, seqs) if o is not None]
        return section.stream_id, original

    def _want(self, stream_ids: list[int]) -> list[int]:
        out = []
        for stream_id in dict.fromkeys(stream_ids):
            source = self._sources.get(stream_id)
            if source is not None:
                source.wanted = True
                out.append(stream_id)
        return out

    def requested(self, stream_id: int, now: float) -> None:
        """The adapter asked the sender of `stream_id` for a keyframe at `now`."""
        source = self._sources.get(stream_id)
        if source is not None:
            source.wanted = False
            source.last_request = now

    # --- packets ---------------------------------------------------------------------------
    def packet(
        self,
        stream_id: int,
        codec: str | None,
        seq: int,
        timestamp: int,
        payload: bytes,
        now: float,
        connected: Callable[[Section], bool] = lambda _section: True,
    ) -> Forwarded:
        """One packet from a source: where it goes, with which numbers. A section whose
        connection cannot carry it yet (`connected`) waits, and starts at the first keyframe
        after it can."""
        out = Forwarded()
        source = self._sources.get(stream_id)
        if source is None or codec is None:
            return out
        if codec != source.codec:
            source.codec = codec
            source.watcher = SizeWatcher(codec)
            for section in self._showing.get(stream_id, ()):
                section.restart()  # a new codec starts over at a keyframe
        assert source.watcher is not None
        out.size = source.watcher.feed(payload)
        self._roll(source, now)
        source.bytes_in += len(payload)
        keyframe = keyframe_start(codec, payload)
        waiting = False
        for section in self._showing.get(stream_id, ()):
            payload_type = section.payload_types.get(codec)
            if payload_type is None:
                continue  # that receiver cannot decode what this sender sends
            if not connected(section):
                section.connected = False
                section.restart()
                continue
            if not section.connected:
                section.connected = True
                source.wanted = source.wanted or not section.paused  # its first picture
            numbers = section.rewrite(seq, timestamp, keyframe, now)
            if numbers is not None:
                out.outgoing.append(Outgoing(section, payload_type, *numbers))
            elif section.waiting and not section.paused:
                waiting = True
        if source.wanted or (waiting and now - source.last_request >= KEYFRAME_RETRY_S):
            out.keyframe_wanted = True
            self.requested(stream_id, now)
        return out
