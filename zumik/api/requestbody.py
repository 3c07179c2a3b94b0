"""Reading JSON request bodies with the envelope's errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from zumik.api.context import current
from zumik.api.errors import bad_request
from zumik.core.jsontext import may_hold_surrogate, surrogate_message, surrogate_path, too_deep


def json_body(allow_empty: bool = False, free_text: tuple[str, ...] = ()) -> Any:
    """The request's JSON document; 400 when it is not JSON (an empty body may count as ``{}``),
    is nested deeper than ``ZUMIK_MAX_JSON_DEPTH`` or holds a lone surrogate anywhere but in
    the top-level ``free_text`` fields (whose owner checks them itself, e.g. an upload's
    ``content``, refused by line)."""
    data = request.get_data(cache=False)
    limit = request.max_content_length
    if limit is not None and len(data) >= limit and request.content_length is None:
        # A streamed (chunked) body is cut off silently at the cap; reading on raises the 413.
        request.stream.read(1)
    if not data.strip():
        if allow_empty:
            return {}
        raise bad_request("The request body is empty; send a JSON object")
    if request.mimetype not in ("application/json", "") and not request.mimetype.endswith("+json"):
        raise bad_request(f"Unsupported Content-Type {request.mimetype!r}: send application/json")
    max_depth = current().settings.max_json_depth
    try:
        text = data.decode("utf-8")
        if too_deep(data, max_depth):
            raise bad_request(
                f"The request body is nested deeper than the {max_depth}-level limit for JSON",
                code="nesting_too_deep",
            )
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:  # (not reached: too_deep bounds what the decoder sees)
        raise bad_request(
            "The request body is nested too deeply", code="nesting_too_deep"
        ) from None
    if may_hold_surrogate(data):
        checked = (
            {k: v for k, v in document.items() if k not in free_text}
            if isinstance(document, dict)
            else document
        )
        path = surrogate_path(checked)
        if path is not None:
            raise bad_request(surrogate_message(path), path, "invalid_unicode")
    return document
