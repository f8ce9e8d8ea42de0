"""Paging of List RPCs: a stable order, an opaque cursor token, checked page sizes.

The token names the last item returned (its sort key), not an offset, so items created or
deleted between two pages neither repeat nor get skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from typing import TypeVar

from chimed.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 100

T = TypeVar("T")
Key = tuple[int, str]


def page(
    items: Iterable[T], key: Callable[[T], Key], page_size: int, page_token: str
) -> tuple[list[T], str]:
    """The items after page_token in key order, at most page_size (0 takes the default), and
    the token of the next page ("" on the last)."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    ordered = sorted(items, key=key)
    if page_token:
        after = _decode(page_token)
        ordered = [item for item in ordered if key(item) > after]
    chosen = ordered[:size]
    more = len(ordered) > size
    return chosen, _encode(key(chosen[-1])) if more else ""


def _encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode(token: str) -> Key:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raw = None
    match raw:
        case [int(n), str(s)]:
            return n, s
    raise InvalidArgument("page_token is not one this RPC returned")
