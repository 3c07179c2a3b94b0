"""API errors and OpenAI's error envelope ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import errno
import logging
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from zumik.core.exceptions import (
    Conflict,
    FileInUse,
    InvalidRequest,
    NoSuchInput,
    NotFound,
    QuotaExceeded,
    TooLarge,
    TooManyActive,
    ZumikError,
)

log = logging.getLogger("zumik")
access = logging.getLogger("zumik.access")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    415: "invalid_request_error",
    417: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error answered to the client in OpenAI's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        fallback = "server_error" if status >= 500 else "invalid_request_error"
        self.type = type or _TYPES.get(status, fallback)
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error`` naming the offending field."""
    return ApiError(400, message, param=param, code=code)


def not_found(kind: str, object_id: str, param: str = "id") -> ApiError:
    """A 404 in OpenAI's words: ``No such File object: file-...``."""
    return ApiError(404, f"No such {kind} object: {object_id}", param=param)


def error_body(error: ApiError) -> dict[str, dict[str, str | None]]:
    """OpenAI's error envelope for ``error``."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def envelope(error: ApiError) -> Response:
    """Render ``error`` as a JSON response with its status and headers."""
    response = jsonify(error_body(error))
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status == 409:
        response.headers["x-should-retry"] = "false"
    return response


# Each domain error's HTTP status; the one place they meet HTTP (subclasses first).
HTTP_STATUS: tuple[tuple[type[ZumikError], int], ...] = (
    (InvalidRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
    (TooLarge, 413),
    (QuotaExceeded, 400),
    (NoSuchInput, 400),
    (TooManyActive, 429),
    (FileInUse, 409),
)


def from_domain(exc: ZumikError) -> ApiError:
    """The API error for a domain error (an unmapped one is a 500)."""
    status = next((s for kind, s in HTTP_STATUS if isinstance(exc, kind)), 500)
    return ApiError(status, exc.message, param=exc.param, code=exc.code)


def _from_http_exception(exc: HTTPException) -> ApiError:
    status = exc.code or 500
    if status == 404:
        return ApiError(404, f"Unknown route: {request.method} {request.path}", code="unknown_url")
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or []))
        return ApiError(
            405,
            f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )
    if status == 413:
        return ApiError(413, _too_large_message(), code="request_too_large")
    return ApiError(status, exc.description or exc.name)


_BODY_SETTINGS = {  # which setting caps the body of each route (the others: JSON bodies)
    "files.create_file": "ZUMIK_MAX_UPLOAD_BYTES",
    "uploads_api.add_part": "ZUMIK_MAX_PART_BYTES",
    "dashboard.upload": "ZUMIK_MAX_UPLOAD_BYTES",
}


def _too_large_message() -> str:
    """A 413 that names the limit in bytes and the setting that sets it."""
    limit = request.max_content_length
    setting = _BODY_SETTINGS.get(request.endpoint or "", "ZUMIK_MAX_JSON_BYTES")
    size = f"{limit}-byte" if limit is not None else "size"
    return (
        f"The request body is too large: over the {size} limit for {request.path} "
        f"(set by {setting})"
    )


POLL_HEADER = "X-Zumik-Poll"  # the dashboard's background refreshes send it


def is_poll() -> bool:
    """A dashboard page's background poll (every few seconds): logged at debug, so the access
    log keeps the requests people and clients make (what matters behind nginx)."""
    return request.endpoint == "dashboard.poll_batches" or POLL_HEADER in request.headers


def init_app(app: Flask) -> None:
    """Give every response a request id and every error the envelope."""

    @app.before_request
    def assign_request_id() -> None:
        sent = request.headers.get("X-Request-Id", "")[:64]
        g.request_id = (
            sent if sent.isascii() and sent.isprintable() and sent else "req_" + uuid.uuid4().hex
        )
        g.started = time.perf_counter()

    @app.after_request
    def add_request_id(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        access.log(
            logging.DEBUG if is_poll() else logging.INFO,
            "request",
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "project": g.get("project"),
                "ms": round(
                    (time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2
                ),
            },
        )
        return response

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> Response:
        return envelope(error)

    @app.errorhandler(ZumikError)
    def handle_domain_error(error: ZumikError) -> Response:
        return envelope(from_domain(error))

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        return envelope(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        request_id = g.get("request_id", "-")
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("request %s: disk full (%s)", request_id, exc)
            return envelope(
                ApiError(
                    507,
                    "The server's storage is full; nothing was stored. Try again later.",
                    type="server_error",
                    code="insufficient_storage",
                )
            )
        log.exception("request %s %s %s failed", request_id, request.method, request.path)
        return envelope(
            ApiError(
                500,
                f"Internal server error (request id {request_id})",
                type="server_error",
                code="internal_error",
            )
        )
