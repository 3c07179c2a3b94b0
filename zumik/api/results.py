"""Zumik extensions that read a batch's results (``zumik.storage.results``,
``zumik.storage.merged``):

- ``GET /v1/batches/{batch_id}/results?after=&limit=&outcome=``: result lines page by page,
  while the batch runs and after; ``last_id`` is the opaque cursor to pass as ``after``;
- ``GET /v1/batches/{batch_id}/merged?file=output|error``: one output (or error) file for a
  batch and every retry of it, the latest result of each ``custom_id`` winning.

Result lines are sent as stored (spliced into the JSON answer unparsed), so ``data`` holds
them exactly as they appear, or will appear, in the output and error files.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from zumik.api.context import current, project_store
from zumik.api.errors import bad_request, not_found
from zumik.api.files import parse_limit
from zumik.core import ids
from zumik.storage import merged
from zumik.storage.results import OUTCOMES, Cursor, read_page

bp = Blueprint("batch_results", __name__, url_prefix="/v1/batches")

MAX_LIMIT, DEFAULT_LIMIT = 1000, 100


def _record(batch_id: str) -> dict[str, Any]:
    record = project_store().get_batch(batch_id) if ids.is_batch_id(batch_id) else None
    if record is None:
        raise not_found("Batch", batch_id)
    return record


def _only(allowed: set[str]) -> None:
    unknown = set(request.args) - allowed
    if unknown:
        raise bad_request(
            f"Unknown query parameter(s): {', '.join(sorted(unknown))}", sorted(unknown)[0]
        )


@bp.get("/<batch_id>/results")
def batch_results(batch_id: str) -> Response:
    _only({"after", "limit", "outcome"})
    record = _record(batch_id)
    args = request.args
    outcome = args.get("outcome", "all")
    if outcome not in OUTCOMES:
        raise bad_request(
            f"Invalid value for 'outcome': {outcome!r}. Supported values are: "
            f"{', '.join(OUTCOMES)}",
            "outcome",
            "invalid_value",
        )
    limit = parse_limit(args.get("limit"), DEFAULT_LIMIT, MAX_LIMIT)
    after = args.get("after")
    cursor = Cursor.decode(after) if after else Cursor()
    page = read_page(
        project_store(),
        record,
        cursor,
        outcome=outcome,
        limit=limit,
        combined=current().settings.result_files == "combined",
    )
    body = b"".join(
        (
            b'{"object":"list","data":[',
            b",".join(line.rstrip(b"\n") for line in page.lines),
            b'],"first_id":',
            json.dumps(page.ids[0].encode() if page.ids else None).encode(),
            b',"last_id":',
            json.dumps(page.cursor.encode()).encode(),
            b',"has_more":',
            b"true" if page.has_more else b"false",
            b"}",
        )
    )
    return Response(body, mimetype="application/json")


@bp.get("/<batch_id>/merged")
def merged_results(batch_id: str) -> Response:
    _only({"file"})
    record = _record(batch_id)
    which = request.args.get("file", "output")
    if which not in ("output", "error"):
        raise bad_request(
            f"Invalid value for 'file': {which!r}. Supported values are: output, error",
            "file",
            "invalid_value",
        )
    store = project_store()
    chain = merged.chain(store, record)
    response = Response(
        merged.lines(store, chain, failed=which == "error"), mimetype="application/jsonl"
    )
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{chain[0]["id"]}_merged_{which}.jsonl"'
    )
    return response
