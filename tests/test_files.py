"""The Files API through the Flask test client: upload, validation, quotas, list, content."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from conftest import (
    AUTH_A,
    AUTH_B,
    echo_lines,
    jsonl,
    request_line,
    unreaped_zombie,
    upload,
)

from zumik import create_app
from zumik.settings import load_settings
from zumik.storage import fsutil


def data_files(settings) -> list[str]:
    root = settings.data_dir
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    )


def assert_envelope(response, status: int, *words: str, param=None, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    for word in words:
        assert word in error["message"], error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_upload_returns_file_object(client):
    response = upload(client, echo_lines(3), purpose="batch")
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"].startswith("file-") and len(body["id"]) == 29
    assert body["object"] == "file" and body["bytes"] == len(echo_lines(3))
    assert body["filename"] == "in.jsonl" and body["purpose"] == "batch"
    assert body["status"] == "processed" and body["expires_at"] is None
    assert isinstance(body["created_at"], int) and "status_details" in body


def test_purpose_defaults_to_batch_and_others_are_refused(client):
    assert upload(client, echo_lines(1)).get_json()["purpose"] == "batch"
    error = assert_envelope(
        upload(client, echo_lines(1), purpose="fine-tune"),
        400,
        "fine-tune",
        "batch",
        param="purpose",
    )
    assert error["code"] == "invalid_value"


def test_expires_after_sets_expires_at(client):
    body = upload(
        client,
        echo_lines(1),
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    ).get_json()
    assert body["expires_at"] == body["created_at"] + 3600
    assert_envelope(
        upload(
            client,
            echo_lines(1),
            **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "10"},
        ),
        400,
        "between",
        param="expires_after.seconds",
    )
    assert_envelope(
        upload(
            client,
            echo_lines(1),
            **{"expires_after[anchor]": "last_used", "expires_after[seconds]": "3600"},
        ),
        400,
        "created_at",
        param="expires_after.anchor",
    )


def test_filename_is_reduced_to_basename(client):
    body = upload(client, echo_lines(1), filename="../../etc/passwd.jsonl").get_json()
    assert body["filename"] == "passwd.jsonl"
    body = upload(client, echo_lines(1), filename="/abs/dir/x.jsonl").get_json()
    assert body["filename"] == "x.jsonl"
    body = upload(client, echo_lines(1), filename="café ünïcode.jsonl").get_json()
    assert body["filename"] == "café ünïcode.jsonl"


def test_json_body_upload(client):
    content = echo_lines(2).decode()
    response = client.post(
        "/v1/files",
        headers=AUTH_A,
        json={"content": content, "filename": "mem.jsonl", "purpose": "batch"},
    )
    assert response.status_code == 200
    file_id = response.get_json()["id"]
    assert client.get(f"/v1/files/{file_id}/content", headers=AUTH_A).data == content.encode()
    assert_envelope(
        client.post("/v1/files", headers=AUTH_A, json={"filename": "x"}),
        400,
        "content",
        param="content",
    )


def test_crlf_and_bom_are_accepted(client):
    body = b"\xef\xbb\xbf" + echo_lines(2).replace(b"\n", b"\r\n")
    assert upload(client, body).status_code == 200


BAD_FILES = [
    (b"", "no request lines", "empty_file"),
    (b"not json\n", "Line 1", "invalid_json_line"),
    (b"[1,2]\n", "JSON object", "invalid_json_line"),
    (jsonl([request_line("a"), {"method": "POST"}]), "Line 2", "missing_required_parameter"),
    (jsonl([request_line("")]), "custom_id", "invalid_value"),
    (jsonl([{**request_line("a"), "custom_id": 7}]), "custom_id", "invalid_value"),
    (jsonl([request_line("a"), request_line("a")]), "Line 2", "duplicate_custom_id"),
    (jsonl([{**request_line("a"), "method": "GET"}]), "POST", "invalid_value"),
    (jsonl([{**request_line("a"), "url": "/v1/audio/speech"}]), "/v1/audio/speech", "invalid_url"),
    (jsonl([{**request_line("a"), "body": "x"}]), "body", "invalid_value"),
    (
        jsonl([{**request_line("a"), "body": {"messages": [{"role": "user"}]}}]),
        "model",
        "invalid_request",
    ),
    (jsonl([request_line("a", stream=True)]), "stream", "streaming_unsupported"),
    (
        jsonl([request_line("a")]) + b"\n" + jsonl([request_line("b")]),
        "Line 2",
        "invalid_json_line",
    ),
    (b"\xff\xfe\x00\n", "UTF-8", "invalid_json_line"),
    (b'{"custom_id": NaN}\n', "Line 1", "invalid_json_line"),
]


@pytest.mark.parametrize(("content", "words", "code"), BAD_FILES)
def test_bad_files_are_refused_and_leave_nothing(client, settings, content, words, code):
    before = data_files(settings)
    error = assert_envelope(upload(client, content), 400, words, param="file")
    assert error["code"] == code
    assert data_files(settings) == before


def test_line_and_request_limits(make_app, settings):
    client = make_app(max_line_bytes=300, max_requests=3).test_client()
    long_line = jsonl([request_line("a", "x" * 400)])
    assert_envelope(upload(client, long_line), 400, "Line 1", "300", code="line_too_long")
    assert_envelope(
        upload(client, echo_lines(4)), 400, "Line 4", "more than 3", code="too_many_requests"
    )
    assert upload(client, echo_lines(3)).status_code == 200


def test_upload_size_limit(make_app, settings):
    client = make_app(max_upload_bytes=1000).test_client()
    before = data_files(settings)
    response = upload(client, echo_lines(20))
    assert_envelope(response, 413, "1000", code="file_too_large")
    assert data_files(settings) == before


def test_oversized_content_length_is_refused_before_reading(make_app):
    client = make_app(max_upload_bytes=100).test_client()
    response = client.post(
        "/v1/files",
        headers=AUTH_A,
        data=b"",
        content_type="multipart/form-data; boundary=x",
        environ_overrides={"CONTENT_LENGTH": "999999999"},
    )
    error = assert_envelope(response, 413, "too large", code="request_too_large")
    assert "ZUMIK_MAX_UPLOAD_BYTES" in error["message"]
    assert re.search(r"over the \d+-byte limit", error["message"]), error["message"]


def test_a_line_that_is_not_json_names_its_column_not_a_second_line_number(client):
    content = echo_lines(1) + b"{bad json}\n"
    error = assert_envelope(upload(client, content), 400, code="invalid_json_line")
    message = error["message"]
    assert "line 2" in message.lower() and "at column 2: Expecting property name" in message
    assert "line 1" not in message and "char" not in message


def test_file_count_quota(make_app):
    client = make_app(max_files=2).test_client()
    assert upload(client, echo_lines(1)).status_code == 200
    assert upload(client, echo_lines(1)).status_code == 200
    assert_envelope(upload(client, echo_lines(1)), 400, "2 of 2", code="quota_exceeded")
    # another project has its own quota
    assert upload(client, echo_lines(1), auth=AUTH_B).status_code == 200


def test_byte_quota_counts_and_frees_on_delete(make_app):
    size = len(echo_lines(5))
    client = make_app(max_bytes=size * 2).test_client()
    first = upload(client, echo_lines(5)).get_json()["id"]
    assert upload(client, echo_lines(5)).status_code == 200
    assert_envelope(upload(client, echo_lines(5)), 400, "Storage quota", code="quota_exceeded")
    assert client.delete(f"/v1/files/{first}", headers=AUTH_A).status_code == 200
    assert upload(client, echo_lines(5)).status_code == 200


def test_multipart_refusals(client, settings):
    before = data_files(settings)
    no_file = client.post(
        "/v1/files", headers=AUTH_A, data={"purpose": "batch"}, content_type="multipart/form-data"
    )
    assert_envelope(no_file, 400, "Missing the 'file' part", param="file")
    wrong_type = client.post("/v1/files", headers=AUTH_A, data=b"abc", content_type="text/plain")
    assert_envelope(wrong_type, 400, "Content-Type")
    truncated = client.post(
        "/v1/files",
        headers=AUTH_A,
        data=b'--XX\r\nContent-Disposition: form-data; name="file"; '
        b'filename="a.jsonl"\r\n\r\n{"custom_id"',
        content_type="multipart/form-data; boundary=XX",
    )
    assert_envelope(truncated, 400, "Malformed multipart")
    twice = client.post(
        "/v1/files",
        headers=AUTH_A,
        data={
            "purpose": ["batch", "batch"],
            "file": (__import__("io").BytesIO(echo_lines(1)), "a.jsonl"),
        },
        content_type="multipart/form-data",
    )
    assert_envelope(twice, 400, "twice", param="purpose")
    assert data_files(settings) == before


def test_list_pages_in_both_orders(client):
    ids = [upload(client, echo_lines(1)).get_json()["id"] for _ in range(5)]
    listing = client.get("/v1/files", headers=AUTH_A).get_json()
    assert [f["id"] for f in listing["data"]] == ids[::-1]
    assert listing["has_more"] is False and listing["first_id"] == ids[-1]
    seen, after = [], None
    while True:
        query = "?limit=2&order=asc" + (f"&after={after}" if after else "")
        page = client.get("/v1/files" + query, headers=AUTH_A).get_json()
        seen += [f["id"] for f in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids
    assert client.get("/v1/files?purpose=batch_output", headers=AUTH_A).get_json()["data"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=10001", "limit=x", "order=up", "after=../x", "colour=red"]
)
def test_list_bad_parameters(client, query):
    assert_envelope(client.get(f"/v1/files?{query}", headers=AUTH_A), 400)


def test_retrieve_content_range_and_delete(client):
    content = echo_lines(3)
    file_id = upload(client, content).get_json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()["bytes"] == len(content)
    response = client.get(f"/v1/files/{file_id}/content", headers=AUTH_A)
    assert response.data == content
    assert response.headers["Content-Type"].startswith("application/jsonl")
    assert int(response.headers["Content-Length"]) == len(content)
    partial = client.get(f"/v1/files/{file_id}/content", headers={**AUTH_A, "Range": "bytes=0-9"})
    assert partial.status_code == 206 and partial.data == content[:10]
    deleted = client.delete(f"/v1/files/{file_id}", headers=AUTH_A)
    assert deleted.get_json() == {"id": file_id, "object": "file", "deleted": True}
    assert_envelope(client.get(f"/v1/files/{file_id}", headers=AUTH_A), 404, file_id, param="id")
    assert_envelope(client.delete(f"/v1/files/{file_id}", headers=AUTH_A), 404)


def test_other_projects_files_are_invisible(client):
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    for method, path in (
        ("get", f"/v1/files/{file_id}"),
        ("get", f"/v1/files/{file_id}/content"),
        ("delete", f"/v1/files/{file_id}"),
    ):
        assert_envelope(getattr(client, method)(path, headers=AUTH_B), 404)
    assert client.get("/v1/files", headers=AUTH_B).get_json()["data"] == []
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 200


@pytest.mark.parametrize(
    "file_id",
    ["..%2F..%2Fkeys.json", "file-../../x", "file-0123", "%2e%2e", "file-ZZZZZZZZZZZZZZZZZZZZZZZZ"],
)
def test_traversal_ids_are_404(client, file_id):
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 404


def test_expired_file_is_gone(make_app):
    now = [1_800_000_000.0]
    client = make_app(clock=lambda: now[0]).test_client()
    file_id = upload(
        client,
        echo_lines(1),
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    ).get_json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 200
    now[0] += 3601
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 404
    assert client.get("/v1/files", headers=AUTH_A).get_json()["data"] == []


def test_stale_temp_files_and_orphans_are_swept(make_app, settings):
    make_app()
    files_dir = settings.data_dir / "proj-a" / "files"
    files_dir.mkdir(parents=True)
    host = fsutil.host_id()
    (files_dir / f".tmp-{host}@999999999-upload-abc").write_bytes(b"partial")
    orphan = files_dir / "file-0000000000000000deadbeef.data"
    orphan.write_bytes(b"orphan")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    # a result blob another worker is publishing right now: its metadata follows in a moment
    publishing = files_dir / "file-0000000000000000cafef00d.data"
    publishing.write_bytes(b"fresh result")
    mine = files_dir / f".tmp-{host}@{os.getpid()}-upload-live"
    mine.write_bytes(b"in progress")
    other_host = files_dir / ".tmp-elsewhere.0badc0de@999999999-upload-live"
    other_host.write_bytes(b"another host's upload, its pid means nothing here")
    make_app()
    assert sorted(p.name for p in files_dir.iterdir()) == sorted(
        [mine.name, other_host.name, publishing.name]
    )


def test_unknown_route_and_wrong_method_use_the_envelope(client):
    assert_envelope(client.get("/v2/nothing"), 404, "/v2/nothing", code="unknown_url")
    response = client.put("/v1/files", headers=AUTH_A)
    assert_envelope(response, 405, "PUT", code="method_not_allowed")


def test_output_of_a_line_is_json(client):
    # the stored bytes are exactly what was uploaded
    content = echo_lines(2)
    file_id = upload(client, content).get_json()["id"]
    lines = client.get(f"/v1/files/{file_id}/content", headers=AUTH_A).data.splitlines()
    assert [json.loads(x)["custom_id"] for x in lines] == ["r0", "r1"]


def test_a_relative_data_dir_serves_content(tmp_path, monkeypatch):
    """The quick start's default ``./data``: content must come from the working directory,
    not from wherever the package is installed."""
    monkeypatch.chdir(tmp_path)
    app = create_app(
        load_settings({}, data_dir=Path("data"), api_keys={"key-a": "proj-a"}), start_executor=False
    )
    client = app.test_client()
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    content = client.get(f"/v1/files/{file_id}/content", headers=AUTH_A)
    assert content.status_code == 200 and content.data == echo_lines(2)
    assert (tmp_path / "data" / "proj-a" / "files" / f"{file_id}.data").exists()
    assert app.extensions["zumik"].settings.data_dir == tmp_path / "data"


def test_a_killed_writers_temp_is_swept_while_it_is_an_unreaped_zombie(tmp_path):
    """SIGKILL of a whole server leaves its workers as zombies until init reaps them (on some
    hosts never); their temp files are abandoned all the same."""
    with unreaped_zombie() as pid:
        temp = tmp_path / f".tmp-{fsutil.host_id()}@{pid}-upload-x"
        temp.write_bytes(b"half an upload")
        assert fsutil.sweep_temps(tmp_path) == 1 and not temp.exists()
