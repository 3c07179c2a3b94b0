"""Reading JSON request bodies with the envelope's errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from zumik.errors import bad_request


def json_body(allow_empty: bool = False) -> Any:
    """The request's JSON document; 400 when it is not JSON (an empty body may count as ``{}``)."""
    data = request.get_data(cache=False)
    if not data.strip():
        if allow_empty:
            return {}
        raise bad_request("The request body is empty; send a JSON object")
    if request.mimetype not in ("application/json", "") and not request.mimetype.endswith("+json"):
        raise bad_request(f"Unsupported Content-Type {request.mimetype!r}: send application/json")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
