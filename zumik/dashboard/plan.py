"""Planning a batch from a stored file (issue 25): the estimate first (lines, tokens, cost,
time), then a create with a window, a priority and a budget. The estimate and the create go
through the API's own code (``api.estimate.estimate_for``, ``api.batches.create_batch``), so
the page and the API can never disagree on a rule."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, g, render_template, request

from zumik.api import batches as batches_api
from zumik.api.context import project_store
from zumik.api.errors import ApiError
from zumik.api.estimate import estimate_for
from zumik.core import ids
from zumik.core.lines import CHAT, SUPPORTED_ENDPOINTS
from zumik.dashboard import bp


@bp.get("/files/<file_id>/plan")
def plan(file_id: str) -> str:
    meta = project_store().get_file(file_id) if ids.is_file_id(file_id) else None
    if meta is None or meta.get("purpose") != "batch":
        abort(404, f"No batch input file {file_id} in project {g.project}.")
    endpoint = request.args.get("endpoint", CHAT)
    if endpoint not in SUPPORTED_ENDPOINTS:
        endpoint = CHAT
    estimate: dict[str, Any] | None = None
    problem = None
    try:
        estimate = estimate_for(file_id, {"endpoint": endpoint})
    except ApiError as error:
        problem = error.message
    return render_template(
        "plan.html",
        file=meta,
        endpoint=endpoint,
        endpoints=SUPPORTED_ENDPOINTS,
        estimate=estimate,
        problem=problem,
    )


@bp.post("/api/batches")
def create() -> tuple[Response, int]:
    """The create the plan page sends (JSON, as the API takes it), through the API's view."""
    return batches_api.create_batch()
