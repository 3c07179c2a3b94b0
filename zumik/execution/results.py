"""Result lines as OpenAI writes them: a provider's answer (2xx or an HTTP error) or a failure
without an answer to show (timeout, ``batch_expired``, no route)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import msgspec

from zumik.core import ids

if TYPE_CHECKING:
    from zumik.execution.upstream import Outcome

encode = msgspec.json.encode


def response_line(custom_id: str, outcome: Outcome, request_id: str) -> bytes:
    """A result line for a request the provider answered, 2xx or an HTTP error (then it goes to
    the error file with its ``status_code`` and the provider's JSON error body, ``error`` null,
    as OpenAI writes it), splicing the provider's compact body in unparsed."""
    assert outcome.body is not None
    return b"".join(
        (
            b'{"id":"',
            request_id.encode(),
            b'","custom_id":',
            encode(custom_id),
            b',"response":{"status_code":',
            str(outcome.status_code).encode(),
            b',"request_id":',
            encode(outcome.request_id),
            b',"body":',
            outcome.body,
            b'},"error":null,"provider":',
            encode(outcome.provider),
            b"}\n",
        )
    )


def outcome_line(custom_id: str, outcome: Outcome, request_id: str) -> bytes:
    """The result line of a sent request: the provider's answer, or the failure without one."""
    if outcome.body is not None and outcome.status_code is not None:
        return response_line(custom_id, outcome, request_id)
    return error_line(
        custom_id,
        outcome.error_code or "upstream_error",
        outcome.error_message or "request failed",
        request_id,
        outcome.provider or None,
    )


def error_line(
    custom_id: str,
    code: str,
    message: str,
    request_id: str | None = None,
    provider: str | None = None,
) -> bytes:
    """A result line for a request that failed without an HTTP answer to show (timeout,
    connection error, ``batch_expired``, no route, an unreadable body): ``response`` null,
    ``error`` set. ``provider`` (Zumik's extension, on every line) names the provider last
    tried; null when none was (no route, expired before it ran, a bug)."""
    request_id = request_id or ids.new_id(ids.BATCH_REQUEST_PREFIX)
    return (
        json.dumps(
            {
                "id": request_id,
                "custom_id": custom_id,
                "response": None,
                "error": {"code": code, "message": message},
                "provider": provider,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def custom_id_of(raw: bytes, number: int) -> str:
    """A line's custom_id when the typed decode failed, else a stand-in naming the line."""
    try:
        custom_id = json.loads(raw).get("custom_id")
    except (ValueError, AttributeError, RecursionError):
        custom_id = None
    return custom_id if isinstance(custom_id, str) else f"line-{number}"
