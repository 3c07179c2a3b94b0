"""Request values parsed one way everywhere: whole numbers and text a client sends.

``"²".isdigit()`` is True and ``int("３６００")`` is 3600, so a digit check by ``str.isdigit``
followed by ``int`` either crashes or accepts what no client meant; these helpers accept ASCII
digits only and answer a 400 naming the parameter for anything else.
"""

from __future__ import annotations

from typing import Any

from zumik.api.errors import bad_request


def whole_number(raw: Any, param: str, low: int, high: int, label: str | None = None) -> int:
    """``raw`` (ASCII digits, or a JSON integer) as an int in ``low..high``; 400 otherwise."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        value = int(raw.strip())
    else:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(
            f"'{label or param}' must be a whole number between {low} and {high}",
            param,
            "invalid_value",
        )
    return value
