"""``POST /v1/batches/{batch_id}/retry`` (Zumik extension): a new batch over only the lines of
a finished batch that did not succeed (``zumik.storage.retry_lines`` picks them).

The new input file (purpose ``batch``, ``<original name>-retry.jsonl``) and the new batch go
through the same admission as an upload and a create (quotas, the active-batch cap); the
batch carries ``retry_of`` and its original lists it in ``_retries`` (the chain a merged
download walks). ``Idempotency-Key`` is honoured as on create.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from flask import Blueprint, Response, jsonify

from zumik.api.batches import check_metadata
from zumik.api.batchoptions import BatchOptions, window_seconds
from zumik.api.context import current, idempotent_request, project_store
from zumik.api.errors import ApiError, bad_request, not_found
from zumik.api.requestbody import json_body
from zumik.core import ids, records
from zumik.core.records import Status
from zumik.storage import retry_lines
from zumik.storage.idempotency import REPLAYED_HEADER
from zumik.storage.store import ProjectStore

bp = Blueprint("batch_retry", __name__, url_prefix="/v1/batches")
log = logging.getLogger("zumik.batches")

RETRY_FIELDS = {"lines", "metadata", "completion_window"}
RETRYABLE = (Status.COMPLETED, Status.CANCELLED, Status.EXPIRED)


def _options(body: Any, original: dict[str, Any]) -> tuple[str, dict[str, str], str]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    unknown = set(body) - RETRY_FIELDS
    if unknown:
        raise bad_request(
            f"Unknown parameter(s): {', '.join(sorted(unknown))}",
            sorted(unknown)[0],
            "unknown_parameter",
        )
    kind = body.get("lines", "not_succeeded")
    if kind not in retry_lines.KINDS:
        raise bad_request(
            f"Invalid value for 'lines': {kind!r}. Supported values are: "
            f"{', '.join(retry_lines.KINDS)}",
            "lines",
            "invalid_value",
        )
    metadata = (
        check_metadata(body["metadata"])
        if "metadata" in body
        else dict(original.get("metadata") or {})
    )
    window = body.get("completion_window", original.get("completion_window") or "24h")
    window_seconds(window, current().settings)  # a clear 400 for a window not offered
    return kind, metadata, window


def _result_paths(store: ProjectStore, original: dict[str, Any]) -> list[Any]:
    paths = []
    for field in ("output_file_id", "error_file_id"):
        file_id = original.get(field)
        if file_id is None:
            continue
        if store.get_file(file_id) is None:
            raise bad_request(
                f"The {field.split('_')[0]} file {file_id} of batch {original['id']} has "
                "expired or was deleted; what failed can no longer be told",
                "batch_id",
                "results_gone",
            )
        paths.append(store.file_data_path(file_id))
    return paths


@bp.post("/<batch_id>/retry")
def retry_batch(batch_id: str) -> tuple[Response, int]:
    return retry(batch_id, json_body(allow_empty=True))


def retry(batch_id: str, body: Any) -> tuple[Response, int]:
    """Retry ``batch_id`` as ``body`` asks (the route's JSON body, or the dashboard's form)."""
    store = project_store()
    original = store.get_batch(batch_id) if ids.is_batch_id(batch_id) else None
    if original is None:
        raise not_found("Batch", batch_id)
    kind, metadata, window = _options(body, original)
    if original["status"] not in RETRYABLE:
        raise ApiError(
            409,
            f"Batch {batch_id} is {original['status']}; only a completed, cancelled or "
            "expired batch can be retried",
            param="batch_id",
            code="batch_not_finished",
        )
    keyed = idempotent_request(
        store,
        "batches.retry",
        {"retry_of": batch_id, "lines": kind, "metadata": metadata, "completion_window": window},
    )
    earlier = keyed.replay(store.get_batch) if keyed else None
    if earlier is not None:
        response = jsonify(records.public_batch(earlier))
        response.headers[REPLAYED_HEADER] = "true"
        return response, 200
    input_meta = store.get_file(original["input_file_id"])
    if input_meta is None:
        raise bad_request(
            f"The input file {original['input_file_id']} of batch {batch_id} has expired "
            "or was deleted; upload the lines again",
            "batch_id",
            "input_file_gone",
        )
    outcomes = retry_lines.read_outcomes(_result_paths(store, original))
    tmp = retry_lines.temp_for(store.files_dir)
    try:
        count = retry_lines.write_selection(
            store.file_data_path(original["input_file_id"]), outcomes, kind, tmp
        )
        if count == 0:
            raise bad_request(
                f"Batch {batch_id} has no {kind.replace('_', ' ')} lines to retry",
                "lines",
                "nothing_to_retry",
            )
        stored = _create(store, original, tmp, count, input_meta, metadata, window, keyed)
    finally:
        tmp.unlink(missing_ok=True)
    return stored


def _create(
    store: ProjectStore,
    original: dict[str, Any],
    tmp: Any,
    count: int,
    input_meta: dict[str, Any],
    metadata: dict[str, str],
    window: str,
    keyed: Any,
) -> tuple[Response, int]:
    """Admit the new input file, then the batch over it, as an upload and a create would be;
    the file goes again if the batch is refused (or a concurrent keyed retry made one)."""
    zumik = current()
    settings = zumik.settings
    if count > settings.max_requests:
        raise bad_request(f"{count} lines to retry, over the limit of {settings.max_requests}")
    now = int(zumik.clock())
    file_meta: dict[str, Any] = {
        "id": ids.new_id(ids.FILE_PREFIX, zumik.clock()),
        "object": "file",
        "bytes": os.path.getsize(tmp),
        "created_at": now,
        "filename": retry_lines.retry_filename(str(input_meta.get("filename") or "input")),
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
        "expires_at": None,
        "requests": count,
    }
    store.commit_upload(tmp, file_meta, max_files=settings.max_files, max_bytes=settings.max_bytes)
    record = records.new_batch(
        ids.new_id(ids.BATCH_PREFIX, zumik.clock()),
        now=now,
        input_file_id=file_meta["id"],
        endpoint=original["endpoint"],
        window=window,
        metadata=metadata,
        total=count,
        window_seconds=window_seconds(window, settings),
    )
    record["retry_of"] = original["id"]
    # as a create stores them: the original's priority; its budgets were for the original
    record.update(BatchOptions(priority=original.get("priority") or "normal").record_fields())
    if original.get("_output_ttl"):
        record["_output_ttl"] = original["_output_ttl"]
    try:
        stored, replayed = store.create_batch(
            record,
            max_active=settings.max_active_batches,
            max_files=settings.max_files,
            max_bytes=settings.max_bytes,
            idempotent=keyed,
        )
    except BaseException:
        store.remove_file(file_meta["id"])
        raise
    response = jsonify(records.public_batch(stored))
    if replayed:
        store.remove_file(file_meta["id"])
        response.headers[REPLAYED_HEADER] = "true"
        return response, 200

    def link(current_record: dict[str, Any]) -> None:
        retries = current_record.setdefault("_retries", [])
        if record["id"] not in retries:
            retries.append(record["id"])

    with contextlib.suppress(KeyError):  # the original was swept meanwhile: nothing to link
        store.batch(original["id"]).update(link)
    log.info(
        "batch %s: created, retrying %d lines of %s",
        record["id"],
        count,
        original["id"],
        extra={"batch_id": record["id"], "project": store.project, "retry_of": original["id"]},
    )
    zumik.executor.wake()
    return response, 200
