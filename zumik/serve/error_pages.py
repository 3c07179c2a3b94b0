"""The errors gunicorn raises itself, answered in OpenAI's envelope (a worker mix-in).

A request gunicorn cannot parse (a malformed request line, a URL over ``limit_request_line``,
more than ``limit_request_fields`` headers or one over ``limit_request_field_size``, a bad
``Content-Length``...) never reaches Flask: gunicorn answers it from ``handle_error`` with an
HTML page. ``JsonErrorPages`` (mixed into ``zumik.serve.worker.ZumikWorker``) answers the
same status as JSON ``{"error": {...}}`` with an ``X-Request-Id``, like every other Zumik
error; anything that is not the client's fault still goes to gunicorn's own handler.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http

from zumik.api.errors import ApiError, error_body

# (exception, status, reason, code); the first that matches wins, ParseException is the rest
_CLIENT_ERRORS: tuple[tuple[type[Exception], int, str, str], ...] = (
    (http.LimitRequestLine, 414, "URI Too Long", "uri_too_long"),
    (http.LimitRequestHeaders, 431, "Request Header Fields Too Large", "headers_too_large"),
    (http.ExpectationFailed, 417, "Expectation Failed", "expectation_failed"),
    (http.ForbiddenProxyRequest, 403, "Forbidden", "forbidden"),
    (http.UnsupportedTransferCoding, 501, "Not Implemented", "unsupported_transfer_coding"),
    (http.ParseException, 400, "Bad Request", "invalid_http_request"),
)
_NOT_THE_CLIENTS = (
    http.InvalidResponseHeader,
    http.InvalidResponseHeaderName,
    http.ConfigurationProblem,
)


def client_error(exc: BaseException) -> tuple[int, str, str] | None:
    """Status, reason and code for an error in what the client sent; None for the rest."""
    if isinstance(exc, _NOT_THE_CLIENTS):
        return None
    for kind, status, reason, code in _CLIENT_ERRORS:
        if isinstance(exc, kind):
            return status, reason, code
    return None


def error_response(status: int, reason: str, code: str, detail: str) -> bytes:
    """A complete HTTP/1.1 response (connection closed) carrying the JSON envelope."""
    request_id = "req_" + uuid.uuid4().hex
    body = json.dumps(error_body(ApiError(status, f"{reason}: {detail}", code=code))).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorPages:
    """Mix-in for a gunicorn worker (before the worker class in the bases): JSON errors."""

    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        found = client_error(exc)
        if found is None:
            super().handle_error(req, client, addr, exc)  # type: ignore[misc]  # the worker's
            return
        status, reason, code = found
        self.log.warning("Invalid request from ip=%s: %s (%d)", (addr or ("",))[0], exc, status)
        try:
            util.write_nonblock(client, error_response(status, reason, code, str(exc)))
        except Exception:  # the client may be gone; nothing else to do for it
            self.log.debug("Failed to send error message.")
