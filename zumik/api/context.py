"""The app's shared state and helpers to reach it from a request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app, g, request

from zumik.ops.metrics import Metrics
from zumik.settings import Settings
from zumik.storage import idempotency
from zumik.storage.keys import KeyRing
from zumik.storage.store import ProjectStore

if TYPE_CHECKING:
    from zumik.execution.executor import Executor
    from zumik.execution.routing import Router


@dataclass
class Zumik:
    """Everything one app instance shares: settings, clock, keys, routes, its executor."""

    settings: Settings
    clock: Callable[[], float]
    keyring: KeyRing
    router: Router
    executor: Executor
    metrics: Metrics
    extra: dict[str, Any] = field(default_factory=dict)

    def store(self, project: str) -> ProjectStore:
        return ProjectStore.open(self.settings, project, self.clock, api_view=True)


def current() -> Zumik:
    """The Zumik state of the running app."""
    return current_app.extensions["zumik"]


def project_store() -> ProjectStore:
    """The store of the project the request's key belongs to."""
    return current().store(g.project)


def idempotency_key() -> str | None:
    """The request's ``Idempotency-Key``, checked once per request (a clear 400 when it is
    malformed); an upload asks first, to refuse a bad key before reading the body."""
    if "idempotency_key" not in g:
        g.idempotency_key = idempotency.check_key(request.headers.get(idempotency.HEADER))
    return g.idempotency_key


def idempotent_request(
    store: ProjectStore, route: str, parts: dict[str, Any]
) -> idempotency.IdempotentRequest | None:
    """The request's ``Idempotency-Key`` bound to what it asks for, or None without one."""
    key = idempotency_key()
    if key is None:
        return None
    zumik = current()
    return idempotency.IdempotentRequest(
        store.idempotency_dir,
        key,
        route,
        idempotency.fingerprint(parts),
        zumik.clock(),
        zumik.settings.idempotency_ttl,
    )
