"""Operations: ``/healthz`` (process up, data dir writable, executor thread alive) and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from zumik import fsutil
from zumik.context import current
from zumik.errors import ApiError
from zumik.metrics import render

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    zumik = current()
    if zumik.executor.dead:
        raise ApiError(503, f"The batch executor of worker {os.getpid()} has died; batches "
                            "are not being run by it. Restart the server.", type="server_error",
                       code="executor_dead")
    probe = fsutil.temp_path(zumik.settings.data_dir, "health-")
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
        writable = True
    except OSError:
        writable = False
    body = {"status": "ok" if writable else "degraded", "data_dir_writable": writable,
            "executor_running": zumik.executor.running, "pid": os.getpid()}
    return jsonify(body), 200 if writable else 503


@bp.get("/metrics")
def metrics() -> Response:
    zumik = current()
    zumik.metrics.flush(zumik.settings.data_dir)
    return Response(render(zumik.settings.data_dir, zumik.clock),
                    mimetype="text/plain; version=0.0.4")
