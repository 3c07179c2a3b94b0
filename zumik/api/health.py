"""Operations: ``/healthz`` (process up, data dir writable, executor thread alive) and
``/metrics`` (Prometheus).

``/metrics`` names projects and tenant-chosen model names, so it answers only a scraper that
sends ``Authorization: Bearer $ZUMIK_METRICS_TOKEN``, or, when no token is configured, a
client on this host (a loopback peer address; the documented nginx site also restricts it).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from flask import Blueprint, Response, jsonify, request

from zumik.api.context import current
from zumik.api.errors import ApiError
from zumik.ops.metrics import render
from zumik.storage import fsutil

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    zumik = current()
    if zumik.executor.dead:
        raise ApiError(
            503,
            f"The batch executor of worker {os.getpid()} has died; batches "
            "are not being run by it. Restart the server.",
            type="server_error",
            code="executor_dead",
        )
    probe = fsutil.temp_path(zumik.settings.data_dir, "health-")
    try:
        probe.write_bytes(b"ok")
        writable = True
    except OSError:  # ENOSPC, EROFS, EACCES...
        writable = False
    finally:  # a failed write can still have created the file
        probe.unlink(missing_ok=True)
    body = {
        "status": "ok" if writable else "degraded",
        "data_dir_writable": writable,
        "executor_running": zumik.executor.running,
        "pid": os.getpid(),
    }
    return jsonify(body), 200 if writable else 503


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:  # a unix socket's peer has no address: only this host can reach it
        return address is not None and (address == "" or address.startswith("/"))


def check_scraper(token: str | None) -> None:
    """Refuse a ``/metrics`` client that is neither authorized nor local.

    :raise ApiError: 401 for a missing or wrong token, 403 for a remote client without one.
    """
    if token:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise ApiError(
                401,
                "/metrics needs 'Authorization: Bearer <ZUMIK_METRICS_TOKEN>'",
                code="invalid_api_key",
            )
    elif not _is_loopback(request.remote_addr):
        raise ApiError(
            403,
            "/metrics answers only clients on this host; set "
            "ZUMIK_METRICS_TOKEN to scrape it from elsewhere",
            code="forbidden",
        )


@bp.get("/metrics")
def metrics() -> Response:
    zumik = current()
    check_scraper(zumik.settings.metrics_token)
    zumik.metrics.flush(zumik.settings.data_dir)
    return Response(render(zumik.settings, zumik.clock), mimetype="text/plain; version=0.0.4")
