"""Dropping received audio before decoding while nobody hears it.

aiortc's audio receiver queues every encoded frame for its decoder thread. `DecodeGate`
stands in for that queue: while `decoding` is off, frames are dropped instead of decoded;
the end-of-stream marker (None) always passes, so the track still ends. Installed before the
receiver starts, so its decoder thread reads through it.

On an aiortc upgrade, re-check (aiortc 1.16): RTCRtpReceiver's private `__decoder_queue` (a
queue.Queue the receiver puts into and its decoder thread gets from, created with the
receiver).
"""

from __future__ import annotations

import queue
from typing import Any

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"


class DecodeGate:
    """An aiortc receiver's decoder queue, gated: see the module docstring."""

    def __init__(self, inner: queue.Queue[Any]) -> None:
        self.inner = inner
        self.decoding = True
        self.dropped = 0

    def put(self, item: Any) -> None:
        if item is None or self.decoding:
            self.inner.put(item)
        else:
            self.dropped += 1

    def get(self) -> Any:
        return self.inner.get()


def install(receiver: Any) -> DecodeGate | None:
    """Gate `receiver`'s decoder queue; None (decoding stays on) if this aiortc has none."""
    inner = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(inner, queue.Queue):
        return None
    gate = DecodeGate(inner)
    setattr(receiver, _DECODER_QUEUE, gate)
    return gate
