"""Blueprint ``/v1/files``: upload, list, retrieve, content, delete."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request, send_file
from werkzeug.exceptions import RequestEntityTooLarge

from zumik.api.context import current, idempotency_key, idempotent_request, project_store
from zumik.api.errors import bad_request, not_found
from zumik.api.params import whole_number
from zumik.api.receiving import json_upload_too_large, receive_json, receive_multipart
from zumik.api.requestbody import json_body
from zumik.core import ids, records
from zumik.storage.idempotency import REPLAYED_HEADER
from zumik.storage.store import public_file

bp = Blueprint("files", __name__, url_prefix="/v1/files")

MAX_LIST_LIMIT = 10_000


@bp.post("")
def create_file() -> tuple[Response, int]:
    zumik = current()
    idempotency_key()  # refuse a bad key before reading the upload (checked once, cached)
    store = project_store().ensure()
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        boundary = request.mimetype_params.get("boundary", "").encode("latin-1", "replace")
        if not boundary:
            raise bad_request("multipart/form-data without a boundary", "file")
        upload = receive_multipart(request.stream, boundary, store.files_dir, zumik.settings)
    elif mimetype == "application/json":
        try:
            document = json_body(free_text=("content",))
        except RequestEntityTooLarge:  # (refused before reading when Content-Length says so)
            raise json_upload_too_large(zumik.settings) from None
        upload = receive_json(document, store.files_dir, zumik.settings)
    else:
        raise bad_request(
            f"Unsupported Content-Type {mimetype or '(none)'!r}: send "
            "multipart/form-data with a 'file' part, or a JSON body with 'content'"
        )
    now = int(zumik.clock())
    meta = records.new_file(
        ids.new_id(ids.FILE_PREFIX, zumik.clock()),
        nbytes=upload.bytes,
        now=now,
        filename=upload.filename,
        purpose=upload.purpose,
        requests=upload.requests,
        expires_at=now + upload.expires_after if upload.expires_after else None,
        model=upload.model,  # internal: a batch over the file starts with it
    )
    try:
        keyed = idempotent_request(
            store,
            "files",
            {
                "filename": upload.filename,
                "purpose": upload.purpose,
                "bytes": upload.bytes,
                "expires_after": upload.expires_after,
            },
        )
        stored, replayed = store.commit_upload(
            upload.tmp,
            meta,
            max_files=zumik.settings.max_files,
            max_bytes=zumik.settings.max_bytes,
            idempotent=keyed,
            max_records=zumik.settings.max_records,
        )
    finally:
        upload.tmp.unlink(missing_ok=True)
    response = jsonify(public_file(stored))
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return response, 200


def _list_params() -> tuple[str | None, str, str | None, int]:
    args = request.args
    unknown = set(args) - {"purpose", "order", "after", "limit"}
    if unknown:
        raise bad_request(
            f"Unknown query parameter(s): {', '.join(sorted(unknown))}", sorted(unknown)[0]
        )
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'", "order", "invalid_value")
    after = args.get("after")
    if after is not None and not ids.is_file_id(after):
        raise bad_request(f"'after' must be a file id, got {after!r}", "after", "invalid_value")
    limit = parse_limit(args.get("limit"), MAX_LIST_LIMIT, MAX_LIST_LIMIT)
    return args.get("purpose"), order, after, limit


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    """A ``limit`` query parameter between 1 and ``maximum``."""
    return default if raw is None else whole_number(raw, "limit", 1, maximum)


@bp.get("")
def list_files() -> Response:
    purpose, order, after, limit = _list_params()
    page, has_more = project_store().list_files(
        purpose=purpose, order=order, after=after, limit=limit
    )
    data = [public_file(meta) for meta in page]
    return jsonify(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


def _get_meta(file_id: str) -> dict[str, Any]:
    meta = project_store().get_file(file_id)  # (None for a malformed id too)
    if meta is None:
        raise not_found("File", file_id)
    return meta


@bp.get("/<file_id>")
def retrieve_file(file_id: str) -> Response:
    return jsonify(public_file(_get_meta(file_id)))


@bp.get("/<file_id>/content")
def file_content(file_id: str) -> Response:
    meta = _get_meta(file_id)
    path = project_store().file_data_path(meta["id"])
    mimetype = (
        "application/jsonl"
        if meta["filename"].endswith(".jsonl") or meta["purpose"] in ("batch", "batch_output")
        else "application/octet-stream"
    )
    try:  # a path (not a handle) gives Content-Length, ranges and sendfile
        response = send_file(
            path,
            mimetype=mimetype,
            conditional=True,
            etag=meta["id"],
            last_modified=meta["created_at"],
            max_age=0,
        )
    except FileNotFoundError:  # deleted since the metadata was read
        raise not_found("File", file_id) from None
    response.headers["Content-Disposition"] = (
        f"attachment; filename*=UTF-8''{quote(meta['filename'], safe='')}"
    )
    return response


@bp.delete("/<file_id>")
def delete_file(file_id: str) -> Response:
    if not project_store().delete_file(file_id):
        raise not_found("File", file_id)
    return jsonify({"id": file_id, "object": "file", "deleted": True})
