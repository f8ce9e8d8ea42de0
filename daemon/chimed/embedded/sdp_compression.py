"""Chime's compressed SDP, as JOIN / JOIN_ACK `wants_compressed_sdp` agree to it.

The scheme (amazon-chime-sdk-js ZLIBTextCompressor and its subscribe task): raw DEFLATE (no
zlib header or checksum), primed with the previous SDP *of the same direction* on this
signaling session as the preset dictionary, cut to its first 31744 characters. Each side keeps
two dictionaries, the previous offer and the previous answer, both empty after JOIN.

The JS client (3.32) records an empty string as its "previous offer" once it sends compressed
offers, so its offers are in practice compressed without a dictionary. A stream compressed
without a dictionary never refers back before its own start, so inflating it with our
(possibly longer) dictionary still gives the same text: keeping the real previous offer serves
that client and any client that does prime with the previous offer.

Plain state, no I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# The JS client's dictionary cap (ZLIBTextCompressor.MAX_DICTIONARY_SIZE), in characters.
MAX_DICTIONARY_CHARS = 31744
# An inflated SDP larger than this is refused (a small frame must not inflate into gigabytes).
MAX_SDP_BYTES = 1 << 20
_RAW_DEFLATE = -15  # wbits for a raw stream with a 32 KiB window
_MEM_LEVEL = 9  # what the JS client compresses with


class SdpCompressionError(ValueError):
    """A compressed SDP that cannot be inflated (corrupt, truncated, too large, not UTF-8)."""


def _dictionary(previous: str) -> bytes:
    return previous[:MAX_DICTIONARY_CHARS].encode()


def compress_sdp(sdp: str, previous: str = "") -> bytes:
    """`sdp` as raw DEFLATE, primed with `previous` (the last SDP of the same direction)."""
    zdict = _dictionary(previous)
    if zdict:
        compressor = zlib.compressobj(wbits=_RAW_DEFLATE, memLevel=_MEM_LEVEL, zdict=zdict)
    else:
        compressor = zlib.compressobj(wbits=_RAW_DEFLATE, memLevel=_MEM_LEVEL)
    return compressor.compress(sdp.encode()) + compressor.flush()


def decompress_sdp(data: bytes, previous: str = "", max_bytes: int = MAX_SDP_BYTES) -> str:
    """The SDP text of a compressed SDP primed with `previous`; SdpCompressionError if bad."""
    zdict = _dictionary(previous)
    try:
        if zdict:
            inflater = zlib.decompressobj(wbits=_RAW_DEFLATE, zdict=zdict)
        else:
            inflater = zlib.decompressobj(wbits=_RAW_DEFLATE)
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as e:
        raise SdpCompressionError(f"not a raw DEFLATE stream: {e}") from None
    if len(out) > max_bytes:
        raise SdpCompressionError(f"inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise SdpCompressionError("truncated DEFLATE stream")
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise SdpCompressionError("the inflated SDP is not UTF-8") from None


@dataclass
class SdpCodec:
    """One signaling session's compression state: agreed at JOIN, dictionaries per direction."""

    enabled: bool = False
    previous_offer: str = ""
    previous_answer: str = ""

    def offer(self, sdp_offer: str, compressed_sdp_offer: bytes) -> str:
        """The offer text of a SUBSCRIBE (compressed when it carries one, else plain); remembers
        it as the next offer dictionary. Empty when the SUBSCRIBE negotiates nothing."""
        if compressed_sdp_offer:
            sdp = decompress_sdp(compressed_sdp_offer, self.previous_offer)
        else:
            sdp = sdp_offer
        if sdp:
            self.previous_offer = sdp
        return sdp

    def answer(self, sdp: str) -> bytes | None:
        """The compressed answer when compression was agreed (None: send it plain); remembers
        the answer as the next answer dictionary."""
        compressed = compress_sdp(sdp, self.previous_answer) if self.enabled else None
        self.previous_answer = sdp
        return compressed
