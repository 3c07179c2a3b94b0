"""Receiving an upload: stream multipart (or a JSON body) into a temp file beside its final place.

Bytes are counted and every JSONL line validated as they arrive, so a bad or oversized file is
refused without ever being held in memory, and the temp file is removed on any failure.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio import multipart as mp

from zumik.api.errors import ApiError, bad_request
from zumik.api.params import whole_number
from zumik.core.jsontext import surrogate_message, unencodable
from zumik.settings import Settings
from zumik.storage.tempsink import CHUNK, TempSink

SUPPORTED_PURPOSES = ("batch",)
MAX_FIELD_BYTES = 1024
MAX_FILENAME_BYTES = 255
MIN_EXPIRES_SECONDS, MAX_EXPIRES_SECONDS = 3600, 2_592_000
KNOWN_FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")


@dataclass
class Upload:
    """A validated upload waiting in ``tmp`` to be committed."""

    tmp: Path
    bytes: int
    requests: int
    filename: str
    purpose: str
    expires_after: int | None
    model: str | None = None  # the model every line names (None: several)


def clean_filename(name: str, param: str = "file") -> str:
    """The basename of a client-sent filename; 400 for control characters, lone surrogates or
    over-long names."""
    if "\x00" in name or any(ord(c) < 32 for c in name):
        raise bad_request("The filename contains control characters", param)
    if unencodable(name):
        raise bad_request(surrogate_message("filename"), param, "invalid_unicode")
    name = posixpath.basename(name.replace("\\", "/")).strip()
    if name in ("", ".", ".."):
        name = "upload"
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise bad_request(f"The filename is longer than {MAX_FILENAME_BYTES} bytes", param)
    return name


def check_file_fields(fields: dict[str, str]) -> tuple[str, int | None]:
    """``purpose`` and ``expires_after[seconds]`` of an upload's form fields, checked:
    (purpose, seconds or None). The one set of rules for every way a file arrives."""
    purpose = fields.get("purpose", "batch")
    if purpose not in SUPPORTED_PURPOSES:
        raise bad_request(
            f"Invalid purpose {purpose!r}; supported: {', '.join(SUPPORTED_PURPOSES)}",
            "purpose",
            "invalid_value",
        )
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return purpose, None
    if anchor != "created_at":
        raise bad_request(
            "expires_after[anchor] must be 'created_at'", "expires_after.anchor", "invalid_value"
        )
    value = whole_number(
        seconds,
        "expires_after.seconds",
        MIN_EXPIRES_SECONDS,
        MAX_EXPIRES_SECONDS,
        "expires_after[seconds]",
    )
    return purpose, value


def json_file_fields(purpose: str, expires_after: Any) -> tuple[str, int | None]:
    """``check_file_fields`` for a JSON body, where ``expires_after`` is an object."""
    fields = {"purpose": purpose}
    if expires_after is not None:
        if not isinstance(expires_after, dict):
            raise bad_request("'expires_after' must be an object", "expires_after")
        fields["expires_after[anchor]"] = str(expires_after.get("anchor"))
        fields["expires_after[seconds]"] = str(expires_after.get("seconds"))
    return check_file_fields(fields)


def multipart_events(decoder: mp.MultipartDecoder, stream: IO[bytes]) -> Iterator[mp.Event]:
    """The decoder's events over ``stream``, read ``CHUNK`` bytes at a time."""
    while True:
        event = decoder.next_event()
        if isinstance(event, mp.NeedData):
            chunk = stream.read(CHUNK)
            decoder.receive_data(chunk or None)
            continue
        yield event
        if isinstance(event, mp.Epilogue):
            return


def receive_multipart(
    stream: IO[bytes], boundary: bytes, directory: Path, settings: Settings
) -> Upload:
    """Stream a multipart upload into a temp file in ``directory``."""
    decoder = mp.MultipartDecoder(boundary, max_form_memory_size=4 * CHUNK, max_parts=16)
    fields: dict[str, str] = {}
    sink: TempSink | None = None
    filename = ""
    current: str | None = None  # field name being read, or "\0file"
    value = bytearray()
    try:
        for event in multipart_events(decoder, stream):
            if isinstance(event, mp.File):
                if event.name != "file":
                    raise bad_request(
                        f"Unexpected file part {event.name!r}; send the file as the 'file' part",
                        "file",
                    )
                if sink is not None:
                    raise bad_request("More than one 'file' part", "file")
                filename = clean_filename(event.filename or "")
                sink = TempSink(directory, settings)
                current = "\0file"
            elif isinstance(event, mp.Field):
                if event.name == "file":
                    raise bad_request("The 'file' part must be a file (with a filename)", "file")
                if event.name not in KNOWN_FIELDS:
                    raise bad_request(
                        f"Unknown form field {event.name!r}; known: file, "
                        f"{', '.join(KNOWN_FIELDS)}",
                        event.name,
                    )
                if event.name in fields:
                    raise bad_request(f"Form field {event.name!r} is sent twice", event.name)
                current, value = event.name, bytearray()
            elif isinstance(event, mp.Data):
                if current == "\0file" and sink is not None:
                    sink.write(event.data)
                elif current is not None:
                    value += event.data
                    if len(value) > MAX_FIELD_BYTES:
                        raise bad_request(f"Form field {current!r} is too long", current)
                if not event.more_data and current is not None:
                    if current != "\0file":
                        fields[current] = _field_text(current, bytes(value))
                    current = None
        if sink is None:
            raise bad_request("Missing the 'file' part of the multipart upload", "file")
        purpose, expires = check_file_fields(fields)
        requests = sink.finish()
        return Upload(
            sink.path, sink.size, requests, filename, purpose, expires, sink.validator.model
        )
    except UnicodeDecodeError:
        if sink is not None:
            sink.discard()
        raise bad_request("A multipart header (the filename?) is not valid UTF-8", "file") from None
    except ValueError as exc:
        if sink is not None:
            sink.discard()
        raise bad_request(f"Malformed multipart body: {exc}", "file") from None
    except RequestEntityTooLarge:
        if sink is not None:
            sink.discard()
        raise ApiError(
            413, "A multipart header or field is too large", code="request_too_large"
        ) from None
    except BaseException:
        if sink is not None:
            sink.discard()
        raise


def _field_text(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad_request(f"Form field {name!r} is not valid UTF-8", name) from None


# The views that receive a whole file, whichever way in (the API, the dashboard's upload).
UPLOAD_ENDPOINTS = frozenset({"files.create_file", "dashboard.upload"})
PART_ENDPOINTS = frozenset({"uploads_api.add_part"})
SLACK = 1 << 20  # multipart framing and form fields around the content


def body_cap(settings: Settings, endpoint: str | None, mimetype: str) -> int:
    """The one table of request body caps (``request.max_content_length``), by view.

    A file upload's multipart stream is counted as it is written, so it may be as large as the
    file (with its CR/BOM normalisation slack); a JSON-body upload is decoded whole in memory
    (about 3x its size), so it has its own smaller cap; an Uploads API part is one part; every
    other body (JSON requests, the dashboard's forms) is small."""
    if endpoint in UPLOAD_ENDPOINTS:
        if mimetype == "multipart/form-data":
            return settings.max_upload_bytes * 2 + SLACK
        return settings.max_json_upload_bytes
    if endpoint in PART_ENDPOINTS:
        return settings.max_part_bytes + SLACK
    return settings.max_json_bytes


def json_upload_too_large(settings: Settings) -> ApiError:
    """413 for a JSON-body upload over ``ZUMIK_MAX_JSON_UPLOAD_BYTES``."""
    return ApiError(
        413,
        f"A JSON-body upload is limited to {settings.max_json_upload_bytes} "
        "bytes (ZUMIK_MAX_JSON_UPLOAD_BYTES); send larger files as "
        "multipart/form-data with a 'file' part",
        param="content",
        code="request_too_large",
    )


def receive_json(document: Any, directory: Path, settings: Settings) -> Upload:
    """Store ``{"content", "filename", "purpose"}`` (in-memory content) like an upload."""
    if not isinstance(document, dict):
        raise bad_request("The JSON body must be an object with 'content'")
    unknown = set(document) - {"content", "filename", "purpose", "expires_after"}
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    content = document.get("content")
    if not isinstance(content, str):
        raise bad_request("'content' is required and must be a string", "content")
    filename = document.get("filename", "upload.jsonl")
    if not isinstance(filename, str):
        raise bad_request("'filename' must be a string", "filename")
    purpose = document.get("purpose", "batch")
    if not isinstance(purpose, str):
        raise bad_request("'purpose' must be a string", "purpose")
    purpose, expires = json_file_fields(purpose, document.get("expires_after"))
    name = clean_filename(filename, "filename")
    sink = TempSink(directory, settings)
    try:
        data = content.encode("utf-8", "surrogatepass")
        for start in range(0, len(data), CHUNK):
            sink.write(data[start : start + CHUNK])
        requests = sink.finish()
    except BaseException:
        sink.discard()
        raise
    return Upload(sink.path, sink.size, requests, name, purpose, expires, sink.validator.model)
