"""Blueprint ``/v1/uploads``: OpenAI's Uploads API (create, add a part, complete, cancel).

A file too big for one request goes up in parts (each at most ``max_part_bytes``, in parallel
and in any order); ``complete`` lists them in order and gets back a normal File, checked like
a direct upload. Storage and its rules live in ``zumik.storage.upload_sessions``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio import multipart as mp

from zumik.api.context import current, project_store
from zumik.api.errors import ApiError, bad_request, not_found
from zumik.api.receiving import CHUNK, clean_filename, json_file_fields, multipart_events
from zumik.api.requestbody import json_body
from zumik.core import ids
from zumik.storage.upload_records import public_upload
from zumik.storage.upload_sessions import UploadSessions

bp = Blueprint("uploads_api", __name__, url_prefix="/v1/uploads")

CREATE_FIELDS = frozenset({"bytes", "filename", "mime_type", "purpose", "expires_after"})
COMPLETE_FIELDS = frozenset({"part_ids", "md5"})
MIME_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")
MD5 = re.compile(r"[0-9a-fA-F]{32}")


def _sessions() -> UploadSessions:
    return UploadSessions(project_store().ensure(), current().settings)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object")
    return body


def _unknown(body: dict[str, Any], known: frozenset[str]) -> None:
    unknown = set(body) - known
    if unknown:
        raise bad_request(
            f"Unknown parameter(s): {', '.join(sorted(unknown))}",
            sorted(unknown)[0],
            "unknown_parameter",
        )


def _required(body: dict[str, Any], name: str, kind: type) -> Any:
    if body.get(name) is None:
        raise bad_request(
            f"Missing required parameter: '{name}'", name, "missing_required_parameter"
        )
    value = body[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise bad_request(
            f"'{name}' must be {'an integer' if kind is int else 'a string'}", name, "invalid_type"
        )
    return value


@bp.post("")
def create_upload() -> Response:
    settings = current().settings
    body = _object(json_body())
    _unknown(body, CREATE_FIELDS)
    nbytes = _required(body, "bytes", int)
    filename = _required(body, "filename", str)
    mime_type = _required(body, "mime_type", str)
    purpose = _required(body, "purpose", str)
    if not 1 <= nbytes <= settings.max_upload_bytes:
        raise bad_request(
            f"'bytes' must be from 1 to {settings.max_upload_bytes} (the largest "
            f"file, ZUMIK_MAX_UPLOAD_BYTES); got {nbytes}",
            "bytes",
            "invalid_value",
        )
    filename = clean_filename(filename, "filename")
    if not MIME_TYPE.fullmatch(mime_type):
        raise bad_request(
            "'mime_type' must be 1 to 255 printable ASCII characters, e.g. application/jsonl",
            "mime_type",
            "invalid_value",
        )
    purpose, file_expires_after = json_file_fields(purpose, body.get("expires_after"))
    record = _sessions().create(
        nbytes=nbytes,
        filename=filename,
        mime_type=mime_type,
        purpose=purpose,
        file_expires_after=file_expires_after,
    )
    return jsonify(public_upload(record, current().clock()))


def _upload_id(upload_id: str) -> str:
    """Refused early, before a part's body is read (the store refuses it too)."""
    if not ids.is_upload_id(upload_id):
        raise not_found("Upload", upload_id, "upload_id")
    return upload_id


def receive_part(stream: IO[bytes], boundary: bytes, tmp: Path, max_bytes: int) -> int:
    """Stream the multipart field ``data`` into ``tmp`` (fsynced); returns its size."""
    decoder = mp.MultipartDecoder(boundary, max_form_memory_size=4 * CHUNK, max_parts=8)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size, seen, current_is_data = 0, False, False
    try:
        for event in multipart_events(decoder, stream):
            if isinstance(event, (mp.File, mp.Field)):
                if event.name != "data":
                    raise bad_request(
                        f"Unexpected form field {event.name!r}; send the part's "
                        "bytes as the 'data' field",
                        event.name,
                    )
                if seen:
                    raise bad_request("More than one 'data' field", "data")
                seen = current_is_data = True
            elif isinstance(event, mp.Data) and current_is_data:
                size += len(event.data)
                if size > max_bytes:
                    raise ApiError(
                        413,
                        f"The part is larger than the {max_bytes}-byte part "
                        "limit (ZUMIK_MAX_PART_BYTES); send smaller parts",
                        param="data",
                        code="part_too_large",
                    )
                view = memoryview(event.data)
                while view:
                    view = view[os.write(fd, view) :]
                current_is_data = event.more_data
        if not seen:
            raise bad_request("Missing the 'data' field with the part's bytes", "data")
        if size == 0:
            raise bad_request("The part is empty", "data", "invalid_value")
        os.fsync(fd)
        return size
    except UnicodeDecodeError:
        raise bad_request("A multipart header is not valid UTF-8", "data") from None
    except ValueError as exc:
        raise bad_request(f"Malformed multipart body: {exc}", "data") from None
    except RequestEntityTooLarge:
        raise ApiError(
            413, "A multipart header or field is too large", code="request_too_large"
        ) from None
    finally:
        os.close(fd)


@bp.post("/<upload_id>/parts")
def add_part(upload_id: str) -> Response:
    sessions = _sessions()
    sessions.require_pending(_upload_id(upload_id), "parts may be added")  # before the body
    if request.mimetype != "multipart/form-data":
        raise bad_request(
            f"Unsupported Content-Type {request.mimetype or '(none)'!r}: send "
            "multipart/form-data with a 'data' field",
            "data",
        )
    boundary = request.mimetype_params.get("boundary", "").encode("latin-1", "replace")
    if not boundary:
        raise bad_request("multipart/form-data without a boundary", "data")
    tmp = sessions.part_temp()
    try:
        receive_part(request.stream, boundary, tmp, current().settings.max_part_bytes)
        part = sessions.add_part(upload_id, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return jsonify(part)


@bp.post("/<upload_id>/complete")
def complete_upload(upload_id: str) -> Response:
    _upload_id(upload_id)
    body = _object(json_body())
    _unknown(body, COMPLETE_FIELDS)
    part_ids = body.get("part_ids")
    if not isinstance(part_ids, list) or not part_ids:
        raise bad_request(
            "'part_ids' must be a non-empty list of part ids, in file order",
            "part_ids",
            "invalid_value",
        )
    limit = current().settings.max_upload_parts
    if len(part_ids) > limit:
        raise bad_request(
            f"'part_ids' lists {len(part_ids)} parts; an upload holds at most {limit}",
            "part_ids",
            "invalid_value",
        )
    for part_id in part_ids:
        if not ids.is_part_id(part_id):
            raise bad_request(
                f"'part_ids' holds {str(part_id)[:80]!r}, which is not a part id",
                "part_ids",
                "invalid_value",
            )
    if len(set(part_ids)) != len(part_ids):
        raise bad_request("'part_ids' lists a part more than once", "part_ids", "invalid_value")
    md5 = body.get("md5")
    if md5 is not None and (not isinstance(md5, str) or not MD5.fullmatch(md5)):
        raise bad_request("'md5' must be 32 hexadecimal digits", "md5", "invalid_value")
    record = _sessions().complete(upload_id, part_ids, md5)
    return jsonify(public_upload(record, current().clock()))


@bp.post("/<upload_id>/cancel")
def cancel_upload(upload_id: str) -> Response:
    record = _sessions().cancel(_upload_id(upload_id))
    return jsonify(public_upload(record, current().clock()))
