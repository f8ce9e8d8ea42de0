"""Picture sizes from keyframe headers, without decoding: what a received stream that nobody
views reports as its tile's size.

  vp8_payload_size(payload)    an RTP VP8 payload (RFC 7741) starting a keyframe
  vp8_frame_size(frame)        a VP8 frame (RFC 6386 section 9.1)
  h264_payload_size(payload)   an RTP H.264 payload (RFC 6184): single NAL unit, STAP-A or the
                               first FU-A fragment, when it carries a sequence parameter set
  h264_sps_size(nal)           a sequence parameter set NAL unit (H.264 section 7.3.2.1.1)
  h264_annexb_size(stream)     the first SPS of an Annex B byte stream (start codes)
  SizeWatcher                  a stream's size changes, from every payload it receives

Each returns (width, height), or None for anything else: an inter frame, another NAL unit, a
truncated or corrupt header. Garbage never raises.
"""

from __future__ import annotations

from collections.abc import Iterator

Size = tuple[int, int]

MAX_SIDE = 16384
_VP8_START = b"\x9d\x01\x2a"
_SPS = 7
_STAP_A, _FU_A = 24, 28
# Profiles whose SPS carries chroma format, bit depths and scaling matrices.
_HIGH_PROFILES = frozenset((44, 83, 86, 100, 110, 118, 122, 128, 134, 135, 138, 139, 144, 244))


def _plausible(width: int, height: int) -> Size | None:
    return (width, height) if 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE else None


# --- VP8 --------------------------------------------------------------------------------------


def vp8_frame_size(frame: bytes) -> Size | None:
    """The size in a VP8 keyframe's header; None for an inter frame or a bad header."""
    if len(frame) < 10 or frame[0] & 0x01:  # frame tag bit 0: 1 = inter frame
        return None
    if frame[3:6] != _VP8_START:
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF  # the top 2 bits are a scaling hint
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return _plausible(width, height)


def vp8_payload_size(payload: bytes) -> Size | None:
    """The size when an RTP VP8 payload starts a keyframe (S=1, partition 0); else None."""
    if not payload:
        return None
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S: start of a partition; PID: partition 0
        return None
    offset = 1
    if first & 0x80:  # X: an extension byte follows
        if len(payload) < 2:
            return None
        extension = payload[1]
        offset = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits (M)
            if len(payload) <= offset:
                return None
            offset += 2 if payload[offset] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            offset += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            offset += 1
    return vp8_frame_size(payload[offset:])


# --- H.264 ------------------------------------------------------------------------------------


class _Truncated(Exception):
    """The bits ran out, or a value is out of its range: not a usable SPS."""


class _Bits:
    """An MSB-first bit reader with exp-Golomb codes (H.264 section 9.1)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._left = 8 * len(data)

    def u(self, count: int) -> int:
        if count > self._left:
            raise _Truncated
        self._left -= count
        return (self._value >> self._left) & ((1 << count) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise _Truncated
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: emulation prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale:
            delta = bits.se()
            if not -128 <= delta <= 127:
                raise _Truncated
            next_scale = (last + delta + 256) % 256
        last = next_scale or last


def h264_sps_size(nal: bytes) -> Size | None:
    """The cropped picture size in an SPS NAL unit (its one-byte header included)."""
    if len(nal) < 4 or nal[0] & 0x1F != _SPS or nal[0] & 0x80:
        return None
    try:
        return _sps_size(_Bits(_unescape(nal[1:])))
    except _Truncated:
        return None


def _sps_size(bits: _Bits) -> Size | None:
    profile = bits.u(8)
    bits.u(16)  # constraint flags, reserved bits, level_idc
    if bits.ue() > 31:  # seq_parameter_set_id
        raise _Truncated
    chroma_format = 1
    separate_planes = 0
    if profile in _HIGH_PROFILES:
        chroma_format = bits.ue()
        if chroma_format > 3:
            raise _Truncated
        if chroma_format == 3:
            separate_planes = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        cycle = bits.ue()
        if cycle > 255:
            raise _Truncated
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise _Truncated
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    left = right = top = bottom = 0
    if bits.u(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    # Crop units (section 7.4.2.1.1): chroma samples for 4:2:0 and 4:2:2, doubled for fields.
    chroma_array_type = 0 if separate_planes else chroma_format
    crop_x = 1 if chroma_array_type in (0, 3) else 2
    crop_y = (2 if chroma_array_type == 1 else 1) * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (left + right)
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (top + bottom)
    return _plausible(width, height)


def _stap_units(payload: bytes) -> Iterator[bytes]:
    """The NAL units of a STAP-A payload (RFC 6184 section 5.7.1); stops at a bad length."""
    offset = 1
    while offset + 2 <= len(payload):
        size = int.from_bytes(payload[offset : offset + 2], "big")
        offset += 2
        if not size or offset + size > len(payload):
            return
        yield payload[offset : offset + size]
        offset += size


def h264_payload_size(payload: bytes) -> Size | None:
    """The size when an RTP H.264 payload carries an SPS: as a single NAL unit, inside a STAP-A,
    or at the start of an FU-A (then only if the fragment holds enough of it); else None."""
    if not payload:
        return None
    kind = payload[0] & 0x1F
    if kind == _SPS:
        return h264_sps_size(payload)
    if kind == _STAP_A:
        for unit in _stap_units(payload):
            if unit and unit[0] & 0x1F == _SPS:
                return h264_sps_size(unit)
        return None
    if kind == _FU_A and len(payload) >= 2:
        header = payload[1]
        if header & 0x80 and header & 0x1F == _SPS:  # S: the first fragment
            return h264_sps_size(bytes([payload[0] & 0xE0 | _SPS]) + payload[2:])
    return None


def h264_annexb_size(stream: bytes) -> Size | None:
    """The size in the first SPS of an Annex B byte stream (NAL units after 00 00 01)."""
    for unit in stream.split(b"\x00\x00\x01")[1:]:
        if unit and unit[0] & 0x1F == _SPS:
            return h264_sps_size(unit.rstrip(b"\x00"))  # a 4-byte start code's leading zero
    return None


class SizeWatcher:
    """Follows a received stream's picture size through its keyframe headers, for a stream that
    nobody views (so nothing decodes it): feed() each RTP payload; it returns the size when a
    keyframe shows one that differs from the last seen, else None."""

    def __init__(self, codec: str, *, frames: bool = False) -> None:
        """`frames`: feed() takes whole depayloaded frames (a VP8 frame, an H.264 Annex B
        access unit: what aiortc's receiver hands its decoder) instead of RTP payloads."""
        parsers = (
            {"VP8": vp8_frame_size, "H264": h264_annexb_size}
            if frames
            else {"VP8": vp8_payload_size, "H264": h264_payload_size}
        )
        if codec.upper() not in parsers:
            raise ValueError(f"no keyframe size parser for codec {codec!r}")
        self._parse = parsers[codec.upper()]
        self.size: Size | None = None
        self.keyframe = False

    def feed(self, payload: bytes) -> Size | None:
        size = self._parse(payload)
        self.keyframe = size is not None  # the last payload fed starts a keyframe
        if size is None or size == self.size:
            return None
        self.size = size
        return size
