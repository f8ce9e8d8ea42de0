"""Dropping received audio before decoding while nobody hears it.

aiortc's audio receiver queues every encoded frame for its decoder thread. `DecodeGate`
stands in for that queue: while `decoding` is off, frames are dropped instead of decoded;
the end-of-stream marker (None) always passes, so the track still ends. Installed before the
receiver starts, so its decoder thread reads through it.

A received video stream gets the same gate (VideoDecodeGate), closed until a view binds, so a
stream nobody views is never decoded; its picture size comes from keyframe headers instead.

On an aiortc upgrade, re-check (aiortc 1.16): RTCRtpReceiver's private `__decoder_queue` (a
queue.Queue the receiver puts into and its decoder thread gets from, created with the
receiver; video items are (codec, JitterFrame) with the depayloaded frame in `.data`) and
its coroutine `_send_rtcp_pli(media_ssrc)`.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from typing import Any

from chimed.media.video_bitstream import SizeWatcher

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_SEND_PLI = "_send_rtcp_pli"
_requests: set[asyncio.Future[None]] = set()


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


class VideoDecodeGate(DecodeGate):
    """A video receiver's decoder queue, gated like the audio one, that also reads each
    frame's picture size from keyframe headers (so a stream nobody views still has a size)
    and, once decoding is turned on, drops frames until a keyframe (decoding cannot start
    from an inter frame; the receiver asks for one, see `request_keyframe`).

    Until a keyframe has shown the size, and while decoding waits for one, `ask_keyframe` is
    called (at most every KEYFRAME_ASK_S): a sender only sends keyframes when asked, and a new
    receiver has to ask, as browsers do.

    put() runs on the event loop (aiortc's receiver handles RTP there), so the callbacks do too.
    """

    KEYFRAME_ASK_S = 0.5

    def __init__(
        self,
        inner: queue.Queue[Any],
        on_size: Callable[[int, int], None],
        ask_keyframe: Callable[[], object],
    ) -> None:
        super().__init__(inner)
        self.decoding = False
        self.on_size = on_size
        self.ask_keyframe = ask_keyframe
        self._asked = -self.KEYFRAME_ASK_S
        self._watchers: dict[str, SizeWatcher] = {}
        self._need_keyframe = True

    def set_decoding(self, decoding: bool) -> None:
        if decoding and not self.decoding:
            self._need_keyframe = True
        self.decoding = decoding

    def put(self, item: Any) -> None:
        if item is None:
            self.inner.put(item)
            return
        codec, encoded = item
        name = str(getattr(codec, "mimeType", "")).split("/")[-1].upper()
        watcher = self._watchers.get(name)
        if watcher is None and name in ("VP8", "H264"):
            watcher = self._watchers[name] = SizeWatcher(name, frames=True)
        data = bytes(getattr(encoded, "data", b""))
        size = watcher.feed(data) if watcher is not None else None
        if size is not None:
            self.on_size(*size)
        keyframe = watcher is not None and watcher.keyframe
        waiting = watcher is not None and (
            watcher.size is None or (self.decoding and self._need_keyframe)
        )
        now = time.monotonic()
        if waiting and not keyframe and now - self._asked >= self.KEYFRAME_ASK_S:
            self._asked = now
            self.ask_keyframe()
        if not self.decoding or (self._need_keyframe and not keyframe):
            self.dropped += 1
            return
        self._need_keyframe = False
        self.inner.put(item)


def install_video(receiver: Any, on_size: Callable[[int, int], None]) -> VideoDecodeGate | None:
    """Gate a video `receiver`'s decoder queue (decoding off); None if this aiortc has none."""
    inner = getattr(receiver, _DECODER_QUEUE, None)
    if not isinstance(inner, queue.Queue):
        return None
    gate = VideoDecodeGate(inner, on_size, lambda: request_keyframe(receiver))
    setattr(receiver, _DECODER_QUEUE, gate)
    return gate


def request_keyframe(receiver: Any) -> bool:
    """Ask the senders of what `receiver` gets for a keyframe (RTCP PLI per SSRC heard so
    far); False if this aiortc has no way to."""
    send_pli = getattr(receiver, _SEND_PLI, None)
    if send_pli is None:
        return False
    for source in receiver.getSynchronizationSources():
        request = asyncio.ensure_future(send_pli(source.source))
        _requests.add(request)
        request.add_done_callback(_requests.discard)
    return True
