"""Blueprint ``/v1/batches``: create, list, retrieve, cancel."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request

from zumik.api.batchoptions import (
    EXTENSION_FIELDS,
    BatchOptions,
    check_batch_input,
    check_batch_options,
)
from zumik.api.context import current, idempotent_request, project_store
from zumik.api.errors import bad_request, not_found
from zumik.api.files import parse_limit
from zumik.api.requestbody import json_body
from zumik.core import ids, records
from zumik.core.lines import SUPPORTED_ENDPOINTS
from zumik.execution.estimate import models_of
from zumik.storage.idempotency import REPLAYED_HEADER

bp = Blueprint("batches", __name__, url_prefix="/v1/batches")
log = logging.getLogger("zumik.batches")

CREATE_FIELDS = EXTENSION_FIELDS | {
    "input_file_id",
    "endpoint",
    "completion_window",
    "metadata",
    "output_expires_after",
}
OUTPUT_TTL_MIN, OUTPUT_TTL_MAX = 3600, 2_592_000  # OpenAI's bounds: 1 hour to 30 days
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


def check_metadata(metadata: Any) -> dict[str, str]:
    """OpenAI's metadata rules: at most 16 string pairs, keys <= 64 and values <= 512 chars.

    Absent metadata is ``{}``, as Zumik's Batches page shows it."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise bad_request(
            "'metadata' must be an object of string pairs", "metadata", "invalid_type"
        )
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"'metadata' has {len(metadata)} pairs; at most {MAX_METADATA_PAIRS} are allowed",
            "metadata",
            "invalid_value",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(
                f"metadata key {key[:20]!r}... is longer than {MAX_METADATA_KEY} characters",
                "metadata",
                "invalid_value",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid type for 'metadata.{key}': expected a string, but got "
                f"{type(value).__name__}",
                f"metadata.{key}",
                "invalid_type",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(
                f"'metadata.{key}' is longer than {MAX_METADATA_VALUE} characters",
                f"metadata.{key}",
                "invalid_value",
            )
    return metadata


def check_output_expires_after(value: Any) -> int | None:
    """``{"anchor": "created_at", "seconds": 3600..2592000}``: seconds the output and error
    files live after their own creation; None when absent."""
    if value is None:
        return None
    param = "output_expires_after"
    if not isinstance(value, dict):
        raise bad_request(
            f"'{param}' must be an object with 'anchor' and 'seconds'", param, "invalid_type"
        )
    unknown = set(value) - {"anchor", "seconds"}
    if unknown:
        raise bad_request(
            f"Unknown parameter: '{param}.{sorted(unknown)[0]}'",
            f"{param}.{sorted(unknown)[0]}",
            "unknown_parameter",
        )
    if value.get("anchor") != "created_at":
        raise bad_request(
            f"Invalid value for '{param}.anchor': {value.get('anchor')!r}. "
            "Supported values are: 'created_at'",
            f"{param}.anchor",
            "invalid_value",
        )
    seconds = value.get("seconds")
    if (
        not isinstance(seconds, int)
        or isinstance(seconds, bool)
        or not OUTPUT_TTL_MIN <= seconds <= OUTPUT_TTL_MAX
    ):
        raise bad_request(
            f"'{param}.seconds' must be an integer from {OUTPUT_TTL_MIN} to "
            f"{OUTPUT_TTL_MAX}, got {seconds!r}",
            f"{param}.seconds",
            "invalid_value",
        )
    return seconds


def _string_field(body: dict[str, Any], name: str, default: str | None = None) -> str:
    value = body.get(name, default)
    if value is None:
        raise bad_request(
            f"Missing required parameter: '{name}'", name, "missing_required_parameter"
        )
    if not isinstance(value, str):
        raise bad_request(
            f"Invalid type for '{name}': expected a string, but got {type(value).__name__}",
            name,
            "invalid_type",
        )
    return value


@bp.post("")
def create_batch() -> tuple[Response, int]:
    return create_from(json_body())


def create_from(body: Any) -> tuple[Response, int]:
    """Create a batch from a request body (the API's JSON, or the dashboard's form)."""
    zumik = current()
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    unknown = set(body) - CREATE_FIELDS
    if unknown:
        raise bad_request(
            f"Unknown parameter(s): {', '.join(sorted(unknown))}",
            sorted(unknown)[0],
            "unknown_parameter",
        )
    input_file_id = _string_field(body, "input_file_id")
    endpoint = _string_field(body, "endpoint")
    _string_field(body, "completion_window", "24h")
    metadata = check_metadata(body.get("metadata"))
    output_ttl = check_output_expires_after(body.get("output_expires_after"))
    if endpoint not in SUPPORTED_ENDPOINTS:
        raise bad_request(
            f"Invalid value: {endpoint!r}. Supported values are: {', '.join(SUPPORTED_ENDPOINTS)}",
            "endpoint",
            "invalid_value",
        )
    options = _options(body, None)
    store = project_store().ensure()
    meta = store.get_file(input_file_id)
    if meta is None:
        raise bad_request(f"No such File object: {input_file_id}", "input_file_id")
    requests = check_batch_input(meta, input_file_id, zumik.settings)
    if options.max_cost is not None:  # a cost budget needs every model of the file priced
        options = _options(body, models_of(str(store.file_data_path(input_file_id))))
    window = options.window
    record = records.new_batch(
        ids.new_id(ids.BATCH_PREFIX, zumik.clock()),
        now=int(zumik.clock()),
        input_file_id=input_file_id,
        endpoint=endpoint,
        window=window,
        metadata=metadata,
        total=requests,
        window_seconds=options.window_seconds,
    )
    record["model"] = meta.get("model")  # as OpenAI does, known at create (the upload's lines)
    record.update(options.record_fields())
    if output_ttl is not None:
        record["_output_ttl"] = output_ttl
    keyed = idempotent_request(
        store,
        "batches",
        {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": window,
            "metadata": metadata,
            **({"output_expires_after": output_ttl} if output_ttl else {}),
            **{k: v for k, v in options.record_fields().items() if k in body},
        },
    )
    stored, replayed = store.create_batch(
        record,
        max_active=zumik.settings.max_active_batches,
        max_files=zumik.settings.max_files,
        max_bytes=zumik.settings.max_bytes,
        idempotent=keyed,
        max_records=zumik.settings.max_records,
    )
    response = jsonify(records.public_batch(stored))
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
        return response, 200
    log.info(
        "batch %s: created",
        record["id"],
        extra={
            "batch_id": record["id"],
            "project": store.project,
            "status": record["status"],
            "total": requests,
        },
    )
    zumik.executor.wake()
    return response, 200


def _options(body: dict[str, Any], models: set[str] | None) -> BatchOptions:
    """The window and Zumik's extension fields (``zumik.api.batchoptions``); ``max_cost``
    is judged against the file's models once they are known."""
    zumik = current()
    if models is None and body.get("max_cost") is not None:
        models = set()  # checked again with the file's models
    return check_batch_options(body, zumik.settings, zumik.router, models)


@bp.get("")
def list_batches() -> Response:
    args = request.args
    unknown = set(args) - {"after", "limit"}
    if unknown:
        raise bad_request(
            f"Unknown query parameter(s): {', '.join(sorted(unknown))}", sorted(unknown)[0]
        )
    after = args.get("after")
    if after is not None and not ids.is_batch_id(after):
        raise bad_request(f"'after' must be a batch id, got {after!r}", "after", "invalid_value")
    limit = parse_limit(args.get("limit"), 20, 100)
    page, has_more = project_store().list_batches(after=after, limit=limit)
    data = [records.public_batch(r) for r in page]
    return jsonify(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


def _get(batch_id: str) -> dict[str, Any]:
    record = project_store().get_batch(batch_id)  # (None for a malformed id too)
    if record is None:
        raise not_found("Batch", batch_id)
    return record


@bp.get("/<batch_id>")
def retrieve_batch(batch_id: str) -> Response:
    return jsonify(records.public_batch(_get(batch_id)))


@bp.post("/<batch_id>/cancel")
def cancel_batch(batch_id: str) -> Response:
    zumik = current()
    _get(batch_id)
    store = project_store()
    handle = store.batch(batch_id)
    record = handle.update(lambda r: records.request_cancel(r, int(zumik.clock())))
    if record["status"] == "cancelling":
        handle.mark_cancel()
        log.info(
            "batch %s: cancel requested",
            batch_id,
            extra={"batch_id": batch_id, "project": store.project, "status": record["status"]},
        )
        zumik.executor.wake()
    # as GET shows it: with the running claim's latest counts and usage, not the bare record
    return jsonify(records.public_batch(handle.read() or record))
