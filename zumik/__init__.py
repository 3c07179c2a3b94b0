"""Zumik: the OpenAI Files and Batch APIs for any OpenAI-compatible model server."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Flask, request

from zumik.api import errors
from zumik.api.auth import authenticate
from zumik.api.context import Zumik
from zumik.api.receiving import body_cap
from zumik.ops import logs
from zumik.ops.metrics import Metrics
from zumik.settings import Settings, load_settings
from zumik.storage import fsutil
from zumik.storage.keys import KeyRing
from zumik.storage.store import ProjectStore, iter_projects

__all__ = ["create_app", "Settings", "load_settings"]


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    start_executor: bool = False,
) -> Flask:
    """Build the WSGI app. The executor starts only when asked (gunicorn does it after fork)."""
    from zumik import dashboard
    from zumik.api import batches, estimate, files, health, models, openapi, results, retry
    from zumik.api import uploads as uploads_api
    from zumik.execution.executor import Executor
    from zumik.execution.routing import Router

    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Flask("zumik")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # DefaultJSONProvider's knob
    app.config["MAX_FORM_MEMORY_SIZE"] = 64 * 1024
    router = Router.from_settings(settings)
    metrics = Metrics()
    zumik = Zumik(
        settings=settings,
        clock=clock,
        keyring=KeyRing(settings.data_dir, settings.api_keys),
        router=router,
        executor=Executor(settings, router, clock=clock, metrics=metrics),
        metrics=metrics,
    )
    app.extensions["zumik"] = zumik
    errors.init_app(app)
    for blueprint in (
        files.bp,
        estimate.bp,
        batches.bp,
        retry.bp,
        results.bp,
        models.bp,
        uploads_api.bp,
    ):
        blueprint_guard(blueprint.name, app, zumik)
        app.register_blueprint(blueprint)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    dashboard.init_app(app, zumik)
    logs.setup()
    recover(settings, clock)
    if start_executor:
        zumik.executor.start()
    return app


def blueprint_guard(name: str, app: Flask, zumik: Zumik) -> None:
    """Authenticate every request of an API blueprint and cap its body size."""

    def guard() -> None:
        request.max_content_length = body_cap(zumik.settings, request.endpoint, request.mimetype)
        authenticate(zumik.keyring)

    app.before_request_funcs.setdefault(name, []).append(guard)


def recover(settings: Settings, clock: Callable[[], float]) -> None:
    """Start-up recovery: sweep temp files of dead writers (in the data dir itself, e.g.
    ``/healthz`` probes, in ``.metrics/`` and in every project) and blobs without metadata."""
    for directory in (settings.data_dir, settings.data_dir / ".metrics"):
        fsutil.sweep_temps(directory)
    for project in iter_projects(settings.data_dir):
        ProjectStore.open(settings, project, clock).ensure().sweep()
