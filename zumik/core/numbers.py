"""Numbers that come from outside (a provider's ``usage``, ``Retry-After``, rate-limit headers,
a journal entry), bounded before any arithmetic: the one gate every such number goes through.

Python ints have no size limit, so one 400-digit ``prompt_tokens`` would overflow a float cost
sum or put a token bucket years in debt; a float may be ``inf`` or ``nan``.
"""

from __future__ import annotations

import math
from typing import Any

TOKENS_MAX = 10**9  # no single request uses a billion tokens: more is a provider's nonsense
NUMBER_CHARS = 64  # a header value longer than this is not a number anyone means


def bounded_int(value: Any, limit: int = TOKENS_MAX) -> int:
    """``value`` as a whole number in ``0..limit``: 0 when it is not an int (a bool, a float,
    a string, None), ``limit`` when it is larger."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return 0
    return value if value <= limit else limit


def bounded_seconds(value: Any, limit: float) -> float | None:
    """``value`` (a number or its text) as seconds in ``0..limit``; None when it is not a
    finite number (never an exception)."""
    if isinstance(value, str):
        if len(value) > NUMBER_CHARS:
            return None
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        return limit if value > 0 else 0.0
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), limit)
