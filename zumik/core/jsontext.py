"""Two things valid JSON may hold that Zumik refuses: nesting deeper than a limit (the
decoders recurse, and raise ``RecursionError`` near 1,000 levels) and lone surrogates
(``"\\ud800"`` is a valid escape, but the string it makes cannot be encoded as UTF-8 later).

Both checks cost two or three C-speed scans of the raw bytes when the input is ordinary, and
do the exact work only for input that could fail them.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

DEFAULT_MAX_DEPTH = 100

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def too_deep(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` opens more than ``limit`` arrays or objects at once.

    Brackets inside strings do not count. Text that is not JSON may be judged either way, but
    a recursive decoder never goes deeper than ``limit`` on text judged not too deep.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    return max(accumulate(map(_STEP.__getitem__, brackets))) > limit


def may_hold_surrogate(raw: bytes) -> bool:
    """False when the UTF-8 JSON text ``raw`` surely holds no surrogate escape (``\\uD...``)."""
    return b"\\ud" in raw or b"\\uD" in raw


def unencodable(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_path(value: Any, path: str = "") -> str | None:
    """The path (``body.messages[0].content``) of the first string or key in ``value`` that
    holds a lone surrogate, or None. A bad key is shown escaped, so the path is always text."""
    if isinstance(value, str):
        return (path or "(value)") if unencodable(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if unencodable(key):
                return _join(path, key.encode("utf-8", "backslashreplace").decode())
            found = surrogate_path(item, _join(path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = surrogate_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def surrogate_message(path: str) -> str:
    """The words for a refused lone surrogate at ``path``."""
    return (
        f"'{path}' holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is "
        "not encodable text; send valid Unicode"
    )
