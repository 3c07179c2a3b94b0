"""Request authentication: the key a request presents, resolved to its project by the
``KeyRing`` (``zumik.storage.keys``), or 401 ``invalid_api_key``."""

from __future__ import annotations

from flask import g, request

from zumik.api.errors import ApiError
from zumik.storage.keys import KeyRing


def presented_key() -> str | None:
    """The key from ``Authorization: Bearer`` or ``x-api-key``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip() or None


def authenticate(keyring: KeyRing) -> str:
    """Set ``g.project`` from the request's key, or raise 401 ``invalid_api_key``."""
    key = presented_key()
    if key is None:
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
            code="invalid_api_key",
        )
    project = keyring.project_for(key)
    if project is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    g.project = project
    return project
