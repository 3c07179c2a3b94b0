"""Object ids: a prefix and 24 hex digits, the first 12 a millisecond clock.

Because the clock leads, sorting ids sorts by creation time, so listings and cursors need no
index: a folder listing sorted by name is the order.
"""

from __future__ import annotations

import re
import secrets
import time

FILE_PREFIX = "file-"
BATCH_PREFIX = "batch_"
BATCH_REQUEST_PREFIX = "batch_req_"
UPLOAD_PREFIX = "upload_"
PART_PREFIX = "part_"

FILE_ID = re.compile(r"file-[0-9a-f]{24}")  # with fullmatch: "$" would allow a final "\n"
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")
UPLOAD_ID = re.compile(r"upload_[0-9a-f]{24}")
PART_ID = re.compile(r"part_[0-9a-f]{24}")


def new_id(prefix: str, now: float | None = None) -> str:
    """A new time-ordered id with ``prefix``."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}{millis & 0xFFFFFFFFFFFF:012x}{secrets.token_hex(6)}"


def is_file_id(value: object) -> bool:
    """Whether ``value`` is shaped like a file id (checked before any path is built from it)."""
    return isinstance(value, str) and FILE_ID.fullmatch(value) is not None


def is_batch_id(value: object) -> bool:
    """Whether ``value`` is shaped like a batch id."""
    return isinstance(value, str) and BATCH_ID.fullmatch(value) is not None


def is_upload_id(value: object) -> bool:
    """Whether ``value`` is shaped like an upload id."""
    return isinstance(value, str) and UPLOAD_ID.fullmatch(value) is not None


def is_part_id(value: object) -> bool:
    """Whether ``value`` is shaped like an upload part id."""
    return isinstance(value, str) and PART_ID.fullmatch(value) is not None
