"""Operations: ``/healthz`` (process up, data dir writable) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import os

from flask import Blueprint, Response, jsonify

from zumik import fsutil
from zumik.context import current
from zumik.metrics import render

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    zumik = current()
    probe = fsutil.temp_path(zumik.settings.data_dir, "health-")
    try:
        probe.write_bytes(b"ok")
        writable = True
    except OSError:  # ENOSPC, EROFS, EACCES...
        writable = False
    finally:  # a failed write can still have created the file
        probe.unlink(missing_ok=True)
    body = {"status": "ok" if writable else "degraded", "data_dir_writable": writable,
            "executor_running": zumik.executor.running, "pid": os.getpid()}
    return jsonify(body), 200 if writable else 503


@bp.get("/metrics")
def metrics() -> Response:
    zumik = current()
    zumik.metrics.flush(zumik.settings.data_dir)
    return Response(render(zumik.settings.data_dir, zumik.clock),
                    mimetype="text/plain; version=0.0.4")
