"""The dashboard's retry and results: a "Retry N lines" button on a finished batch (through
the API's retry view), links between a batch and its retries, the failed lines of a running
batch as they happen and its latest results page by page (``static/results.js`` polls
``/dashboard/api/batches/<id>/results``, the API's view), and the merged download of a chain.
``templates/_results.html`` is included by the batch page."""

from __future__ import annotations

from typing import Any

from flask import Response, flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from zumik.api import results as results_api
from zumik.api import retry as retry_api
from zumik.api.errors import ApiError
from zumik.core.exceptions import ZumikError
from zumik.core.records import is_terminal
from zumik.dashboard import bp
from zumik.dashboard.pages import _batch

LINE_CHOICES = ("not_succeeded", "failed", "unfinished")


@bp.app_template_global()
def retry_info(record: dict[str, Any]) -> dict[str, Any]:
    """What the batch page shows about retrying: how many lines failed, never finished or did
    not succeed, whether the button shows, and the batches it is linked to."""
    counts = record.get("request_counts") or {}
    total, completed, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
    retryable = record.get("status") in retry_api.RETRYABLE
    return {
        "retryable": retryable and total > completed,
        "not_succeeded": max(total - completed, 0),
        "failed": failed,
        "unfinished": max(total - completed - failed, 0),
        "retry_of": record.get("retry_of"),
        "retries": list(record.get("_retries") or []),
        "chain": bool(record.get("retry_of") or record.get("_retries")),
        "terminal": is_terminal(record),
    }


@bp.post("/batches/<batch_id>/retry")
def retry(batch_id: str) -> ResponseReturnValue:
    _batch(batch_id)
    lines = request.form.get("lines", "not_succeeded")
    try:
        response, _ = retry_api.retry(batch_id, {"lines": lines})
    except (ApiError, ZumikError) as error:
        flash(error.message, "error")
        return redirect(url_for("dashboard.batch", batch_id=batch_id))
    created = response.get_json()
    flash(f"Retrying {created['request_counts']['total']} lines of {batch_id}.")
    return redirect(url_for("dashboard.batch", batch_id=created["id"]))


@bp.get("/api/batches/<batch_id>/results")
def results(batch_id: str) -> Response:
    return results_api.batch_results(batch_id)


@bp.get("/batches/<batch_id>/merged")
def merged(batch_id: str) -> Response:
    return results_api.merged_results(batch_id)
