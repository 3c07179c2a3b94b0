"""The bad-input corpus: every case answers a clear 4xx in OpenAI's envelope, says what was
wrong (and which field or line), and leaves the data dir exactly as it was."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTH_A, AUTH_B, echo_lines, jsonl, request_line

from zumik.storage.keys import create_key, revoke_key

GOOD = request_line("a")
GOOD_TEXT = json.dumps(GOOD)
DEEP = "[" * 1000 + "]" * 1000


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int
    words: tuple[str, ...] = ()
    param: str | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH_A))
    data: Any = None
    content_type: str | None = None
    json_body: Any = None
    upload: bytes | None = None  # a multipart upload of this content
    filename: str = "in.jsonl"
    form: dict[str, str] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)


def jl(*lines: Any) -> bytes:
    return jsonl(list(lines))


def multipart(*parts: tuple[str, str | None, bytes], boundary: str = "BOUND") -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MP = "multipart/form-data; boundary=BOUND"
FILE_PATH = "/v1/files/FILE"
BATCH_PATH = "/v1/batches/BATCH"
UPLOAD_PATH = "/v1/uploads/UPLOAD"
NEW_UPLOAD = {
    "bytes": 270,
    "filename": "big.jsonl",
    "mime_type": "application/jsonl",
    "purpose": "batch",
}

CASES = [
    # -- auth --------------------------------------------------------------------------------
    Case("no key", "GET", "/v1/files", 401, ("Missing API key",), headers={}),
    Case("malformed bearer", "GET", "/v1/files", 401, headers={"Authorization": "Bearer"}),
    Case("basic scheme", "GET", "/v1/files", 401, headers={"Authorization": "Basic eDp5"}),
    Case(
        "wrong key",
        "GET",
        "/v1/files",
        401,
        ("Invalid API key",),
        headers={"Authorization": "Bearer zk_nope"},
    ),
    Case(
        "wrong x-api-key", "POST", "/v1/batches", 401, headers={"x-api-key": "nope"}, json_body={}
    ),
    Case("revoked key", "GET", "/v1/files", 401, headers={"Authorization": "Bearer REVOKED"}),
    Case("key with spaces", "GET", "/v1/files", 401, headers={"Authorization": "Bearer a b c"}),
    # -- multipart and content types ---------------------------------------------------------
    Case(
        "no file part",
        "POST",
        "/v1/files",
        400,
        ("Missing the 'file' part",),
        "file",
        data=multipart(("purpose", None, b"batch")),
        content_type=MP,
    ),
    Case("empty multipart", "POST", "/v1/files", 400, data=b"--BOUND--\r\n", content_type=MP),
    Case("empty body", "POST", "/v1/files", 400, data=b"", content_type=MP),
    Case(
        "no boundary",
        "POST",
        "/v1/files",
        400,
        ("boundary",),
        data=b"x",
        content_type="multipart/form-data",
    ),
    Case(
        "text/plain",
        "POST",
        "/v1/files",
        400,
        ("Content-Type",),
        data=b"hello",
        content_type="text/plain",
    ),
    Case("no content type", "POST", "/v1/files", 400, ("Content-Type",), data=b"hello"),
    Case(
        "truncated multipart",
        "POST",
        "/v1/files",
        400,
        ("Malformed multipart",),
        data=multipart(("file", "a.jsonl", jl(GOOD)))[:-30],
        content_type=MP,
    ),
    Case(
        "file as a field",
        "POST",
        "/v1/files",
        400,
        ("must be a file",),
        "file",
        data=multipart(("file", None, jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "two file parts",
        "POST",
        "/v1/files",
        400,
        ("More than one",),
        "file",
        data=multipart(("file", "a.jsonl", jl(GOOD)), ("file", "b.jsonl", jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "duplicate purpose",
        "POST",
        "/v1/files",
        400,
        ("twice",),
        "purpose",
        data=multipart(
            ("purpose", None, b"batch"), ("purpose", None, b"batch"), ("file", "a.jsonl", jl(GOOD))
        ),
        content_type=MP,
    ),
    Case(
        "unknown field",
        "POST",
        "/v1/files",
        400,
        ("Unknown form field",),
        "colour",
        data=multipart(("colour", None, b"red"), ("file", "a.jsonl", jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "other file part name",
        "POST",
        "/v1/files",
        400,
        ("Unexpected file part",),
        "file",
        data=multipart(("upload", "a.jsonl", jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "bad purpose",
        "POST",
        "/v1/files",
        400,
        ("assistants", "batch"),
        "purpose",
        upload=jl(GOOD),
        form={"purpose": "assistants"},
    ),
    Case(
        "expires seconds text",
        "POST",
        "/v1/files",
        400,
        ("whole number",),
        "expires_after.seconds",
        upload=jl(GOOD),
        form={"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"},
    ),
    Case(
        "expires too long",
        "POST",
        "/v1/files",
        400,
        ("between",),
        "expires_after.seconds",
        upload=jl(GOOD),
        form={"expires_after[anchor]": "created_at", "expires_after[seconds]": "99999999"},
    ),
    Case(
        "oversized by content-length",
        "POST",
        "/v1/files",
        413,
        ("too large", "ZUMIK_MAX_UPLOAD_BYTES"),
        data=b"",
        content_type=MP,
        environ={"CONTENT_LENGTH": str(10**12)},
    ),
    Case(
        "oversized JSON body",
        "POST",
        "/v1/batches",
        413,
        ("too large", "-byte limit", "ZUMIK_MAX_JSON_BYTES"),
        data=b"{}",
        content_type="application/json",
        environ={"CONTENT_LENGTH": str(10**9)},
    ),
    Case(
        "oversized JSON-body upload",
        "POST",
        "/v1/files",
        413,
        ("JSON-body upload", "multipart/form-data"),
        "content",
        data=b"{}",
        content_type="application/json",
        environ={"CONTENT_LENGTH": str(17 * 2**20)},
    ),
    Case(
        "expires seconds superscript",
        "POST",
        "/v1/files",
        400,
        ("whole number",),
        "expires_after.seconds",
        upload=jl(GOOD),
        form={"expires_after[anchor]": "created_at", "expires_after[seconds]": "\u00b2"},
    ),
    Case(
        "expires seconds full-width digits",
        "POST",
        "/v1/files",
        400,
        ("whole number",),
        "expires_after.seconds",
        upload=jl(GOOD),
        form={
            "expires_after[anchor]": "created_at",
            "expires_after[seconds]": "\uff13\uff16\uff10\uff10",
        },
    ),
    # -- filenames ---------------------------------------------------------------------------
    Case(
        "NUL in filename",
        "POST",
        "/v1/files",
        400,
        ("control characters",),
        "file",
        data=multipart(("file", "a\x00b.jsonl", jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "very long filename",
        "POST",
        "/v1/files",
        400,
        ("longer than 255",),
        "file",
        upload=jl(GOOD),
        filename="x" * 300 + ".jsonl",
    ),
    Case(
        "non-UTF-8 filename",
        "POST",
        "/v1/files",
        400,
        ("not valid UTF-8",),
        "file",
        data=multipart(("file", None, b""))[:0]
        + (
            b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.jsonl"'
            b"\r\n\r\n" + jl(GOOD) + b"\r\n--BOUND--\r\n"
        ),
        content_type=MP,
    ),
    Case(
        "newline in filename",
        "POST",
        "/v1/files",
        400,
        (),
        "file",
        data=multipart(("file", "a\nb.jsonl", jl(GOOD))),
        content_type=MP,
    ),
    Case(
        "lone surrogate in JSON upload filename",
        "POST",
        "/v1/files",
        400,
        ("filename", "lone surrogate"),
        "filename",
        json_body={"content": jl(GOOD).decode(), "filename": "a\ud800"},
    ),
    # -- JSONL content -----------------------------------------------------------------------
    Case("empty file", "POST", "/v1/files", 400, ("no request lines",), "file", upload=b""),
    Case(
        "only blank lines",
        "POST",
        "/v1/files",
        400,
        ("no request lines",),
        "file",
        upload=b"\n\n  \n",
    ),
    Case(
        "not UTF-8",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "UTF-8"),
        "file",
        upload=b'{"custom_id":"\xff"}\n',
    ),
    Case("binary", "POST", "/v1/files", 400, ("Line 1",), "file", upload=bytes(range(256)) * 4),
    Case(
        "JSON array line",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "object"),
        "file",
        upload=b"[1, 2, 3]\n",
    ),
    Case(
        "JSON scalar line", "POST", "/v1/files", 400, ("Line 1", "object"), "file", upload=b"42\n"
    ),
    Case(
        "missing custom_id",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "custom_id"),
        "file",
        upload=jl(GOOD, {k: v for k, v in GOOD.items() if k != "custom_id"}),
    ),
    Case(
        "non-string custom_id",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "custom_id"),
        "file",
        upload=jl({**GOOD, "custom_id": ["a"]}),
    ),
    Case(
        "duplicate custom_id",
        "POST",
        "/v1/files",
        400,
        ("Line 3", "'a'"),
        "file",
        upload=jl(GOOD, request_line("b"), GOOD),
    ),
    Case(
        "method GET",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "POST"),
        "file",
        upload=jl({**GOOD, "method": "GET"}),
    ),
    Case(
        "missing method",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "method"),
        "file",
        upload=jl({k: v for k, v in GOOD.items() if k != "method"}),
    ),
    Case(
        "wrong url",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "/v1/completions"),
        "file",
        upload=jl({**GOOD, "url": "/v1/completions"}),
    ),
    Case(
        "body not an object",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "body"),
        "file",
        upload=jl({**GOOD, "body": [1]}),
    ),
    Case(
        "body without model",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "model"),
        "file",
        upload=jl({**GOOD, "body": {"messages": [{"role": "user", "content": "x"}]}}),
    ),
    Case(
        "model not a string",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "model"),
        "file",
        upload=jl(request_line("a", model=7)),
    ),  # type: ignore[arg-type]
    Case(
        "no messages",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "messages"),
        "file",
        upload=jl({**GOOD, "body": {"model": "m"}}),
    ),
    Case(
        "stream true",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "stream"),
        "file",
        upload=jl(request_line("a", stream=True)),
    ),
    Case(
        "line over the cap",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "line limit"),
        "file",
        upload=jl(GOOD, request_line("b", "y" * 5000)),
    ),
    Case(
        "more lines than the cap",
        "POST",
        "/v1/files",
        400,
        ("more than 5",),
        "file",
        upload=echo_lines(6),
    ),
    Case(
        "blank line in the middle",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "empty line"),
        "file",
        upload=jl(GOOD) + b"\n" + jl(request_line("b")),
    ),
    Case(
        "truncated JSON",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "not valid JSON"),
        "file",
        upload=jl(GOOD) + b'{"custom_id": "b", "method"',
    ),
    Case(
        "JSON upload, content not string",
        "POST",
        "/v1/files",
        400,
        ("content",),
        "content",
        json_body={"content": 5},
    ),
    Case(
        "JSON upload, bad line",
        "POST",
        "/v1/files",
        400,
        ("Line 1",),
        "file",
        json_body={"content": "nope\n"},
    ),
    Case(
        "JSON upload, unknown field",
        "POST",
        "/v1/files",
        400,
        ("Unknown",),
        "colour",
        json_body={"content": jl(GOOD).decode(), "colour": "red"},
    ),
    Case(
        "line nested 1,000 deep",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "100-level"),
        "file",
        upload=jl(GOOD)
        + json.dumps(request_line("b")).encode()[:-2]
        + b', "x": '
        + DEEP.encode()
        + b"}}\n",
    ),
    Case(
        "lone surrogate custom_id",
        "POST",
        "/v1/files",
        400,
        ("Line 2", "'custom_id'", "lone surrogate"),
        "file",
        upload=jl(GOOD) + GOOD_TEXT.replace('"a"', '"\\ud800"').encode() + b"\n",
    ),
    Case(
        "lone surrogate in message content",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "'body.messages[0].content'", "lone surrogate"),
        "file",
        upload=GOOD_TEXT.replace('"hello"', '"hi \\udc00"').encode() + b"\n",
    ),
    Case(
        "lone surrogate in a body field not checked",
        "POST",
        "/v1/files",
        400,
        ("Line 1", "'body.tools[0]'"),
        "file",
        upload=json.dumps(request_line("a", tools=["\ud83d"])).encode() + b"\n",
    ),
    # -- batch bodies ------------------------------------------------------------------------
    Case(
        "batch: empty body",
        "POST",
        "/v1/batches",
        400,
        ("empty",),
        data=b"",
        content_type="application/json",
    ),
    Case(
        "batch: not JSON",
        "POST",
        "/v1/batches",
        400,
        ("not valid JSON",),
        data=b"{x",
        content_type="application/json",
    ),
    Case("batch: array", "POST", "/v1/batches", 400, ("object",), json_body=[1]),
    Case(
        "batch: body nested 100,000 deep",
        "POST",
        "/v1/batches",
        400,
        ("100-level",),
        data="[" * 100_000 + "]" * 100_000,
        content_type="application/json",
    ),
    Case(
        "batch: metadata value lone surrogate",
        "POST",
        "/v1/batches",
        400,
        ("lone surrogate",),
        "metadata.k",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "metadata": {"k": "v\udfff"},
        },
    ),
    Case(
        "batch: metadata key lone surrogate",
        "POST",
        "/v1/batches",
        400,
        ("lone surrogate",),
        "metadata.\\ud800",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "metadata": {"\ud800": "v"},
        },
    ),
    Case(
        "batch: form encoded",
        "POST",
        "/v1/batches",
        400,
        ("Content-Type",),
        data=b"a=b",
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "batch: file id number",
        "POST",
        "/v1/batches",
        400,
        ("string",),
        "input_file_id",
        json_body={"input_file_id": 1, "endpoint": "/v1/chat/completions"},
    ),
    Case(
        "batch: file id null",
        "POST",
        "/v1/batches",
        400,
        ("Missing",),
        "input_file_id",
        json_body={"input_file_id": None, "endpoint": "/v1/chat/completions"},
    ),
    Case(
        "batch: unknown file",
        "POST",
        "/v1/batches",
        400,
        ("No such File",),
        "input_file_id",
        json_body={
            "input_file_id": "file-00000000000000000000dead",
            "endpoint": "/v1/chat/completions",
        },
    ),
    Case(
        "batch: traversal file id",
        "POST",
        "/v1/batches",
        400,
        ("No such File",),
        "input_file_id",
        json_body={"input_file_id": "../../keys", "endpoint": "/v1/chat/completions"},
    ),
    Case(
        "batch: other project's file",
        "POST",
        "/v1/batches",
        400,
        ("No such File",),
        "input_file_id",
        headers=dict(AUTH_B),
        json_body={"input_file_id": "FILE", "endpoint": "/v1/chat/completions"},
    ),
    Case(
        "batch: endpoint list",
        "POST",
        "/v1/batches",
        400,
        ("string",),
        "endpoint",
        json_body={"input_file_id": "FILE", "endpoint": ["/v1/chat/completions"]},
    ),
    Case(
        "batch: images",
        "POST",
        "/v1/batches",
        400,
        ("Supported values",),
        "endpoint",
        json_body={"input_file_id": "FILE", "endpoint": "/v1/images/generations"},
    ),
    Case(
        "batch: window 0h",
        "POST",
        "/v1/batches",
        400,
        ("24h",),
        "completion_window",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "completion_window": "0h",
        },
    ),
    Case(
        "batch: window number",
        "POST",
        "/v1/batches",
        400,
        ("string",),
        "completion_window",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "completion_window": 24,
        },
    ),
    Case(
        "batch: metadata string",
        "POST",
        "/v1/batches",
        400,
        ("object",),
        "metadata",
        json_body={"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "metadata": "x"},
    ),
    Case(
        "batch: metadata nested",
        "POST",
        "/v1/batches",
        400,
        ("expected a string",),
        "metadata.k",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "metadata": {"k": {"a": 1}},
        },
    ),
    Case(
        "batch: 17 metadata pairs",
        "POST",
        "/v1/batches",
        400,
        ("at most 16",),
        "metadata",
        json_body={
            "input_file_id": "FILE",
            "endpoint": "/v1/chat/completions",
            "metadata": {str(i): "v" for i in range(17)},
        },
    ),
    Case(
        "batch: unknown field",
        "POST",
        "/v1/batches",
        400,
        ("Unknown parameter",),
        "model",
        json_body={"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "model": "x"},
    ),
    # -- ids and traversal -------------------------------------------------------------------
    Case("file id traversal", "GET", "/v1/files/..%2F..%2Fkeys.json", 404),
    Case("file id dots", "GET", "/v1/files/..", 404),
    Case("file id encoded dots", "GET", "/v1/files/%2e%2e%2fkeys", 404),
    Case("file id shape", "GET", "/v1/files/file-xyz", 404, ("No such File",), "id"),
    Case("file content traversal", "GET", "/v1/files/file-..%2F..%2Fx/content", 404),
    Case("batch id traversal", "GET", "/v1/batches/..%2Fbatches", 404),
    Case("batch id shape", "GET", "/v1/batches/batch_nope", 404, ("No such Batch",), "id"),
    Case("cancel unknown", "POST", "/v1/batches/batch_000000000000000000000000/cancel", 404),
    Case("other project's file", "GET", FILE_PATH, 404, headers=dict(AUTH_B)),
    Case("other project's batch", "GET", BATCH_PATH, 404, headers=dict(AUTH_B)),
    Case("cancel other project's batch", "POST", BATCH_PATH + "/cancel", 404, headers=dict(AUTH_B)),
    Case("delete other project's file", "DELETE", FILE_PATH, 404, headers=dict(AUTH_B)),
    # -- list parameters ---------------------------------------------------------------------
    Case("files limit 0", "GET", "/v1/files?limit=0", 400, ("limit",), "limit"),
    Case("files limit huge", "GET", "/v1/files?limit=99999999999", 400, ("limit",), "limit"),
    Case("files limit negative", "GET", "/v1/files?limit=-1", 400, ("limit",), "limit"),
    Case("files order", "GET", "/v1/files?order=random", 400, ("order",), "order"),
    Case("files limit superscript two", "GET", "/v1/files?limit=%C2%B2", 400, ("limit",), "limit"),
    Case(
        "files limit full-width one", "GET", "/v1/files?limit=%EF%BC%91", 400, ("limit",), "limit"
    ),
    Case(
        "batches limit Arabic-Indic three",
        "GET",
        "/v1/batches?limit=%D9%A3",
        400,
        ("limit",),
        "limit",
    ),
    Case(
        "files after with a newline",
        "GET",
        "/v1/files?after=file-" + "0" * 24 + "%0A",
        400,
        ("after",),
        "after",
    ),
    Case("files after traversal", "GET", "/v1/files?after=../x", 400, ("after",), "after"),
    Case("batches limit 101", "GET", "/v1/batches?limit=101", 400, ("limit",), "limit"),
    Case("batches after", "GET", "/v1/batches?after=file-x", 400, ("after",), "after"),
    Case("batches unknown param", "GET", "/v1/batches?order=asc", 400, ("Unknown",), "order"),
    # -- idempotency keys --------------------------------------------------------------------
    Case(
        "idempotency key too long",
        "POST",
        "/v1/batches",
        400,
        ("Idempotency-Key",),
        "Idempotency-Key",
        headers={**AUTH_A, "Idempotency-Key": "k" * 300},
        json_body={"input_file_id": "FILE", "endpoint": "/v1/chat/completions"},
    ),
    Case(
        "idempotency key with a tab",
        "POST",
        "/v1/files",
        400,
        ("Idempotency-Key",),
        "Idempotency-Key",
        headers={**AUTH_A, "Idempotency-Key": "a\tb"},
        upload=jl(GOOD),
    ),
    Case(
        "empty idempotency key",
        "POST",
        "/v1/files",
        400,
        ("Idempotency-Key",),
        "Idempotency-Key",
        headers={**AUTH_A, "Idempotency-Key": ""},
        upload=jl(GOOD),
    ),
    # -- uploads API -------------------------------------------------------------------------
    Case(
        "upload: not JSON",
        "POST",
        "/v1/uploads",
        400,
        ("not valid JSON",),
        data=b"{x",
        content_type="application/json",
    ),
    Case(
        "upload: bytes as text",
        "POST",
        "/v1/uploads",
        400,
        ("integer",),
        "bytes",
        json_body={**NEW_UPLOAD, "bytes": "270"},
    ),
    Case(
        "upload: bytes over the file limit",
        "POST",
        "/v1/uploads",
        400,
        ("ZUMIK_MAX_UPLOAD_BYTES",),
        "bytes",
        json_body={**NEW_UPLOAD, "bytes": 10**12},
    ),
    Case(
        "upload: no filename",
        "POST",
        "/v1/uploads",
        400,
        ("Missing required",),
        "filename",
        json_body={k: v for k, v in NEW_UPLOAD.items() if k != "filename"},
    ),
    Case(
        "upload: bad purpose",
        "POST",
        "/v1/uploads",
        400,
        ("supported: batch",),
        "purpose",
        json_body={**NEW_UPLOAD, "purpose": "fine-tune"},
    ),
    Case(
        "upload: mime type with a newline",
        "POST",
        "/v1/uploads",
        400,
        ("mime_type",),
        "mime_type",
        json_body={**NEW_UPLOAD, "mime_type": "text/plain\nX: y"},
    ),
    Case(
        "upload: unknown field",
        "POST",
        "/v1/uploads",
        400,
        ("Unknown",),
        "colour",
        json_body={**NEW_UPLOAD, "colour": "red"},
    ),
    Case(
        "part: unknown upload",
        "POST",
        "/v1/uploads/upload_000000000000000000000000/parts",
        404,
        ("No such Upload",),
        "upload_id",
        upload=b"x",
    ),
    Case("part: traversal id", "POST", "/v1/uploads/..%2F..%2Fkeys.json/parts", 404, upload=b"x"),
    Case(
        "part: other project's upload",
        "POST",
        UPLOAD_PATH + "/parts",
        404,
        ("No such Upload",),
        headers=dict(AUTH_B),
        upload=b"x",
    ),
    Case(
        "part: not in 'data'", "POST", UPLOAD_PATH + "/parts", 400, ("'data'",), "file", upload=b"x"
    ),
    Case(
        "part: empty",
        "POST",
        UPLOAD_PATH + "/parts",
        400,
        ("empty",),
        "data",
        data=multipart(("data", "upload", b"")),
        content_type=MP,
    ),
    Case(
        "part: JSON body",
        "POST",
        UPLOAD_PATH + "/parts",
        400,
        ("Content-Type",),
        "data",
        json_body={"data": "x"},
    ),
    Case(
        "part: truncated multipart",
        "POST",
        UPLOAD_PATH + "/parts",
        400,
        ("Malformed multipart",),
        "data",
        data=multipart(("data", "upload", b"x" * 100))[:-30],
        content_type=MP,
    ),
    Case(
        "part: oversized by content-length",
        "POST",
        UPLOAD_PATH + "/parts",
        413,
        ("too large", "ZUMIK_MAX_PART_BYTES"),
        data=b"",
        content_type=MP,
        environ={"CONTENT_LENGTH": str(10**12)},
    ),
    Case(
        "complete: parts short of bytes",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("add up to 10 bytes", "bytes=270"),
        "part_ids",
        json_body={"part_ids": ["PART"]},
    ),
    Case(
        "complete: unknown part",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("No part",),
        "part_ids",
        json_body={"part_ids": ["part_000000000000000000000000"]},
    ),
    Case(
        "complete: part_ids a string",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("list",),
        "part_ids",
        json_body={"part_ids": "PART"},
    ),
    Case(
        "complete: traversal part id",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("not a part id",),
        "part_ids",
        json_body={"part_ids": ["../../keys.json"]},
    ),
    Case(
        "complete: a part twice",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("more than once",),
        "part_ids",
        json_body={"part_ids": ["PART", "PART"]},
    ),
    Case(
        "complete: md5 not hex",
        "POST",
        UPLOAD_PATH + "/complete",
        400,
        ("md5",),
        "md5",
        json_body={"part_ids": ["PART"], "md5": "z" * 32},
    ),
    Case(
        "complete: other project's upload",
        "POST",
        UPLOAD_PATH + "/complete",
        404,
        headers=dict(AUTH_B),
        json_body={"part_ids": ["PART"]},
    ),
    Case(
        "cancel: unknown upload",
        "POST",
        "/v1/uploads/upload_000000000000000000000000/cancel",
        404,
        ("No such Upload",),
    ),
    Case(
        "cancel: other project's upload", "POST", UPLOAD_PATH + "/cancel", 404, headers=dict(AUTH_B)
    ),
    Case("GET uploads", "GET", "/v1/uploads", 405),
    # -- wrong methods and routes ------------------------------------------------------------
    Case("PUT files", "PUT", "/v1/files", 405, ("PUT",)),
    Case("DELETE files", "DELETE", "/v1/files", 405),
    Case("POST file", "POST", FILE_PATH, 405),
    Case("PATCH file", "PATCH", FILE_PATH, 405),
    Case("POST content", "POST", FILE_PATH + "/content", 405),
    Case("DELETE batches", "DELETE", "/v1/batches", 405),
    Case("DELETE batch", "DELETE", BATCH_PATH, 405),
    Case("GET cancel", "GET", BATCH_PATH + "/cancel", 405),
    Case("unknown route", "GET", "/v1/fine_tuning/jobs", 404, ("Unknown route",)),
]


def snapshot(root) -> dict[str, str]:
    """Every file under the data dir (but lock files, which persist by design) and its hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture
def world(make_app, settings):
    client = make_app(max_requests=5, max_line_bytes=4000).test_client()
    file_id = client.post(
        "/v1/files",
        headers=AUTH_A,
        data={"file": (__import__("io").BytesIO(echo_lines(2)), "a.jsonl")},
        content_type="multipart/form-data",
    ).get_json()["id"]
    batch_id = client.post(
        "/v1/batches",
        headers=AUTH_A,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).get_json()["id"]
    revoked = create_key(settings.data_dir, "proj-a")
    revoke_key(settings.data_dir, revoked)
    return client, file_id, batch_id, revoked


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(world, settings, case: Case):
    client, file_id, batch_id, revoked = world
    path = case.path.replace("FILE", file_id).replace("BATCH", batch_id)
    part_id = ""
    if "UPLOAD" in path:  # a pending upload of 270 bytes holding one 10-byte part
        upload_id = client.post("/v1/uploads", headers=AUTH_A, json=NEW_UPLOAD).get_json()["id"]
        part_id = client.post(
            f"/v1/uploads/{upload_id}/parts",
            headers=AUTH_A,
            data={"data": (__import__("io").BytesIO(b"0123456789"), "upload")},
            content_type="multipart/form-data",
        ).get_json()["id"]
        path = path.replace("UPLOAD", upload_id)
    headers = {k: v.replace("REVOKED", revoked) for k, v in case.headers.items()}
    json_body = case.json_body
    if isinstance(json_body, dict) and json_body.get("input_file_id") == "FILE":
        json_body = {**json_body, "input_file_id": file_id}
    before = snapshot(settings.data_dir)
    kwargs: dict[str, Any] = {"headers": headers, "environ_overrides": case.environ}
    if case.upload is not None:
        kwargs["data"] = {
            "file": (__import__("io").BytesIO(case.upload), case.filename),
            **case.form,
        }
        kwargs["content_type"] = "multipart/form-data"
    elif json_body is not None:
        kwargs["data"] = json.dumps(json_body).replace('"PART"', f'"{part_id}"')
        kwargs["content_type"] = "application/json"
    elif case.data is not None:
        kwargs["data"] = case.data
        if case.content_type:
            kwargs["content_type"] = case.content_type
    response = client.open(path, method=case.method, **kwargs)
    assert response.status_code == case.status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    for word in case.words:
        assert word in error["message"], error["message"]
    if case.param is not None:
        assert error["param"] == case.param, error
    assert snapshot(settings.data_dir) == before


def test_corpus_size_by_category():
    """Count the cases under each section comment of ``CASES``; print the table for the log."""
    counts: dict[str, int] = {}
    section = None
    for line in Path(__file__).read_text().splitlines():
        if line.startswith("    # -- "):
            section = line.strip("# -").strip()
        elif line.startswith("    Case(") and section is not None:
            counts[section] = counts.get(section, 0) + 1
    print("\nbad-input corpus:", counts, "total", len(CASES))
    assert sum(counts.values()) == len(CASES) >= 60
    assert all(count >= 3 for count in counts.values()), counts
