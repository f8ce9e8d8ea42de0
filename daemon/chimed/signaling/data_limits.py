"""Chime's limits on a data message, kept by both ends: the SDK refuses to send what breaks
them and the service bounces it. A topic is 1-36 of [a-zA-Z0-9_-]; data is at most 2 KiB."""

from __future__ import annotations

import re

TOPIC_PATTERN = "^[a-zA-Z0-9_-]{1,36}$"
MAX_DATA_BYTES = 2048
_TOPIC = re.compile(TOPIC_PATTERN)


def valid_topic(topic: str) -> bool:
    # fullmatch: with match, "$" would also accept a topic that ends in a newline.
    return _TOPIC.fullmatch(topic) is not None
