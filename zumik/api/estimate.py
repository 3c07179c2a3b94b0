"""``POST /v1/files/{file_id}/estimate`` (a Zumik extension, issue 25): what a batch of this
file would take, before it runs. The body is checked as a batch create's is (the same
fields, the same errors; ``input_file_id`` is the path's); the answer is a
``batch.estimate`` (``zumik.execution.estimate``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from zumik.api.batches import check_metadata, check_output_expires_after
from zumik.api.batchoptions import EXTENSION_FIELDS, check_batch_input, check_batch_options
from zumik.api.context import current, project_store
from zumik.api.errors import bad_request, not_found
from zumik.api.requestbody import json_body
from zumik.core import ids
from zumik.core.lines import SUPPORTED_ENDPOINTS, LineError
from zumik.execution.estimate import estimate_file

bp = Blueprint("estimate", __name__, url_prefix="/v1/files")
FIELDS = EXTENSION_FIELDS | {
    "endpoint",
    "input_file_id",
    "completion_window",
    "metadata",
    "output_expires_after",
    "tokenizer",
}


def _check_body(body: Any, file_id: str) -> tuple[str, bool]:
    """The endpoint and whether to ask the provider's tokenizer (``"tokenizer": false``
    skips it)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise bad_request(
            f"Unknown parameter(s): {', '.join(sorted(unknown))}",
            sorted(unknown)[0],
            "unknown_parameter",
        )
    endpoint = body.get("endpoint")
    if endpoint is None:
        raise bad_request(
            "Missing required parameter: 'endpoint'", "endpoint", "missing_required_parameter"
        )
    if not isinstance(endpoint, str) or endpoint not in SUPPORTED_ENDPOINTS:
        raise bad_request(
            f"Invalid value: {str(endpoint)[:60]!r}. Supported values are: "
            f"{', '.join(SUPPORTED_ENDPOINTS)}",
            "endpoint",
            "invalid_value",
        )
    given = body.get("input_file_id", file_id)
    if given != file_id:
        raise bad_request(
            "'input_file_id' must be the file of the path (or left out)",
            "input_file_id",
            "invalid_value",
        )
    tokenizer = body.get("tokenizer", True)
    if not isinstance(tokenizer, bool):
        raise bad_request("'tokenizer' must be true or false", "tokenizer", "invalid_type")
    check_metadata(body.get("metadata"))
    check_output_expires_after(body.get("output_expires_after"))
    return endpoint, tokenizer


@bp.post("/<file_id>/estimate")
def estimate(file_id: str) -> Response:
    return jsonify(estimate_for(file_id, json_body()))


def estimate_for(file_id: str, body: Any) -> dict[str, Any]:
    """The estimate of the request's project's file ``file_id`` for a create-like ``body``
    (``ApiError`` as a create would answer; the dashboard shows it too)."""
    zumik = current()
    store = project_store()
    meta = store.get_file(file_id) if ids.is_file_id(file_id) else None
    if meta is None:
        raise not_found("File", file_id)
    endpoint, use_tokenizer = _check_body(body, file_id)
    pricing = body.get("max_cost") is not None  # then judged again with the file's models
    check_batch_options(body, zumik.settings, zumik.router, set() if pricing else None)
    check_batch_input(meta, file_id, zumik.settings)
    path = str(store.file_data_path(file_id))
    try:
        answer = estimate_file(
            path,
            endpoint,
            zumik.router,
            zumik.settings.data_dir,
            # within what a connection may wait for its answer (ZUMIK_CLIENT_TIMEOUT)
            min(zumik.settings.estimate_seconds, zumik.settings.client_timeout * 0.6),
            use_tokenizer=use_tokenizer,
        )
        if pricing:
            check_batch_options(body, zumik.settings, zumik.router, set(answer["models"]))
    except FileNotFoundError:  # deleted since its metadata was read
        raise not_found("File", file_id) from None
    except LineError as exc:
        raise bad_request(str(exc), exc.param or "input_file_id", exc.code) from None
    return answer
