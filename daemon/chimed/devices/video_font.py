"""A 5x7 bitmap font for ASCII 32-126, drawn into 8-bit planes with numpy.

Each glyph is five columns of seven bits (bit 0 the top row), the layout of the classic
character-LCD fonts, so the table stays one short line per eight characters. Text is drawn
scaled by whole pixels; characters outside the table draw as '?'.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
ADVANCE = GLYPH_WIDTH + 1  # one column of spacing between characters
FIRST, LAST = 32, 126

# Columns of the glyphs from ' ' (32) to '~' (126), ten hex digits (five columns) a glyph.
_COLUMNS = (
    "0000000000 00005f0000 0007000700 147f147f14 242a7f2a12 2313086462 3649552250 0005030000"
    "001c224100 0041221c00 082a1c2a08 08083e0808 0050300000 0808080808 0060600000 2010080402"
    "3e5149453e 00427f4000 4261514946 2141454b31 1814127f10 2745454539 3c4a494930 0171090503"
    "3649494936 064949291e 0036360000 0056360000 0008142241 1414141414 4122140800 0201510906"
    "324979413e 7e1111117e 7f49494936 3e41414122 7f4141221c 7f49494941 7f09090101 3e41415132"
    "7f0808087f 00417f4100 2040413f01 7f08142241 7f40404040 7f0204027f 7f0408107f 3e4141413e"
    "7f09090906 3e4151215e 7f09192946 4649494931 01017f0101 3f4040403f 1f2040201f 7f2018207f"
    "6314081463 0304780403 6151494543 00007f4141 0204081020 41417f0000 0402010204 4040404040"
    "0001020400 2054545478 7f48444438 3844444420 384444487f 3854545418 087e090102 081454543c"
    "7f08040478 00447d4000 2040443d00 007f102844 00417f4000 7c0418047c 7c08040478 3844444438"
    "7c14141408 081414187c 7c08040408 4854545420 043f444020 3c4040207c 1c2040201c 3c4030403c"
    "4428102844 0c5050503c 4464544c44 0008364100 00007f0000 0041360800 0804081008"
)

Mask = npt.NDArray[np.bool_]


@functools.cache
def _glyphs() -> Mask:
    """All glyphs as booleans, shape (95, 7, 5): [glyph, row, column]."""
    columns = np.frombuffer(bytes.fromhex("".join(_COLUMNS).replace(" ", "")), dtype=np.uint8)
    columns = columns.reshape(LAST - FIRST + 1, GLYPH_WIDTH)
    rows = np.arange(GLYPH_HEIGHT, dtype=np.uint8).reshape(1, GLYPH_HEIGHT, 1)
    return ((columns[:, np.newaxis, :] >> rows) & 1).astype(np.bool_)


def text_mask(text: str, scale: int = 1) -> Mask:
    """The pixels of `text` on one line, each font pixel `scale` x `scale`.

    Shape (7 * scale, 6 * scale * len(text)); every character is followed by one blank column."""
    glyphs = _glyphs()
    codes = [ord(c) if FIRST <= ord(c) <= LAST else ord("?") for c in text]
    cells = np.zeros((len(codes), GLYPH_HEIGHT, ADVANCE), dtype=np.bool_)
    cells[:, :, :GLYPH_WIDTH] = glyphs[np.array(codes, dtype=np.intp) - FIRST]
    line = cells.transpose(1, 0, 2).reshape(GLYPH_HEIGHT, len(codes) * ADVANCE)
    return np.kron(line, np.ones((scale, scale), dtype=np.bool_)).astype(np.bool_)


def text_width(length: int, scale: int = 1) -> int:
    """Width in pixels of `length` characters drawn at `scale`."""
    return length * ADVANCE * scale
