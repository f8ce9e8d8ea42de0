"""Data messages of one meeting: validation, throttling, stamping, lifetime buffer. No I/O.

Limits follow the SDK's published numbers (amazon-chime-sdk-js guides/03_API_Overview.md and
DataMessage.throttled): a soft limit of 100 messages/s with a burst of 200 per meeting; a
message over it is not posted and goes back to its sender with `ingest_time_ns` 0 (the client
reads that as `throttled`, "throttled or rejected"). Hard limits, 200/s burst 2000 per
attendee and 500/s burst 10000 per meeting, make the server hang up on the sender. A message
with an invalid topic or size is rejected the same way as a throttled one: bounced, flagged.
With a lifetime, a posted message is kept (at most 1024, at most 5 minutes) and replayed to
attendees who join later.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from chime.signaling import signaling_pb2

from chimed.signaling.data_limits import MAX_DATA_BYTES, valid_topic

Payload = signaling_pb2.SdkDataMessagePayload

MAX_BUFFERED = 1024
MAX_LIFETIME_NS = 5 * 60 * 1_000_000_000


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`; time is given by the caller."""

    def __init__(self, rate: float, burst: float, now_ns: int = 0) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._at_ns = now_ns

    def take(self, now_ns: int) -> bool:
        elapsed = max(0, now_ns - self._at_ns) / 1e9
        self._at_ns = max(self._at_ns, now_ns)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Limits:
    soft_rate: float = 100
    soft_burst: float = 200
    attendee_hard_rate: float = 200
    attendee_hard_burst: float = 2000
    meeting_hard_rate: float = 500
    meeting_hard_burst: float = 10000


@dataclass
class IngestResult:
    deliver: list[Payload] = field(default_factory=list)  # to every other attendee
    bounce: list[Payload] = field(default_factory=list)  # back to the sender, flagged
    hang_up: bool = False  # the sender broke a hard limit


def is_valid(message: Payload) -> bool:
    return valid_topic(message.topic) and len(message.data) <= MAX_DATA_BYTES


class DataMessages:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._soft: TokenBucket | None = None
        self._meeting_hard: TokenBucket | None = None
        self._attendee_hard: dict[str, TokenBucket] = {}
        self._last_ingest_ns = 0
        self._buffer: deque[tuple[int, Payload]] = deque()  # (expiry ns, message)

    def ingest(
        self,
        sender_attendee_id: str,
        sender_external_user_id: str,
        messages: list[Payload],
        now_ns: int,
    ) -> IngestResult:
        """Stamp and sort one frame's messages; `now_ns` is wall-clock (the client shows it)."""
        lim = self.limits
        if self._soft is None or self._meeting_hard is None:
            self._soft = TokenBucket(lim.soft_rate, lim.soft_burst, now_ns)
            self._meeting_hard = TokenBucket(lim.meeting_hard_rate, lim.meeting_hard_burst, now_ns)
        attendee_hard = self._attendee_hard.get(sender_attendee_id)
        if attendee_hard is None:
            attendee_hard = TokenBucket(lim.attendee_hard_rate, lim.attendee_hard_burst, now_ns)
            self._attendee_hard[sender_attendee_id] = attendee_hard
        result = IngestResult()
        for message in messages:
            if not (attendee_hard.take(now_ns) and self._meeting_hard.take(now_ns)):
                result.hang_up = True
                break
            out = Payload(
                topic=message.topic,
                data=message.data,
                lifetime_ms=message.lifetime_ms,
                sender_attendee_id=sender_attendee_id,
                sender_external_user_id=sender_external_user_id,
            )
            if not is_valid(message) or not self._soft.take(now_ns):
                out.ingest_time_ns = 0
                result.bounce.append(out)
                continue
            self._last_ingest_ns = max(now_ns, self._last_ingest_ns + 1)
            out.ingest_time_ns = self._last_ingest_ns
            result.deliver.append(out)
            if out.lifetime_ms > 0:
                self._keep(out, now_ns)
        return result

    def _keep(self, message: Payload, now_ns: int) -> None:
        lifetime_ns = min(message.lifetime_ms * 1_000_000, MAX_LIFETIME_NS)
        self._buffer.append((now_ns + lifetime_ns, message))
        while len(self._buffer) > MAX_BUFFERED:
            self._buffer.popleft()

    def replay(self, now_ns: int) -> list[Payload]:
        """The buffered messages still alive, oldest first, for an attendee who just joined."""
        self._buffer = deque((t, m) for t, m in self._buffer if t > now_ns)
        return [m for _, m in self._buffer]
