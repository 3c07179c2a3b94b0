"""Errors gunicorn answers itself, before Flask sees the request (a URL over the request-line
limit, too many or too large headers, a malformed request line or Content-Length), come in
OpenAI's JSON envelope from Zumik's worker class, on a real gunicorn over raw sockets. And a
JSON-body upload streamed without a Content-Length is cut off at its cap with the same 413 as
one whose Content-Length says so."""

from __future__ import annotations

import json
import socket

import pytest
import requests
from conftest import AUTH_A, KEY_A, Server

pytestmark = pytest.mark.slow  # gunicorn's own error pages, on real gunicorn

HOST = b"Host: 127.0.0.1\r\n"


def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` and read the whole answer (gunicorn closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), headers, body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gunicorn-errors") / "data"
    server = Server(data_dir, {"ZUMIK_MAX_JSON_UPLOAD_BYTES": "4096"}, workers=1).start()
    yield server
    server.stop()


CASES = {
    "URL over the request-line limit": (
        b"GET /v1/files?" + b"a" * 6000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "uri_too_long",
    ),
    "101 headers": (
        b"GET /v1/files HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-H%d: v\r\n" % i for i in range(101))
        + b"\r\n",
        431,
        "headers_too_large",
    ),
    "a 9 KB header": (
        b"GET /v1/files HTTP/1.1\r\n" + HOST + b"X-Big: " + b"v" * 9000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "malformed request line": (b"GARBAGE\r\n\r\n", 400, "invalid_http_request"),
    "bad HTTP version": (b"GET / HTTP/9.x\r\n" + HOST + b"\r\n", 400, "invalid_http_request"),
    "Content-Length superscript two": (
        b"POST /v1/batches HTTP/1.1\r\n" + HOST + "Content-Length: ²\r\n".encode() + b"\r\n{}",
        400,
        "invalid_http_request",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_gunicorns_own_errors_answer_in_the_envelope(server, name):
    raw, status, code = CASES[name]
    got, headers, body = exchange(server.port, raw)
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["x-request-id"].startswith("req_")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"]
    # the worker still serves
    assert requests.get(server.url + "/v1/files", headers=AUTH_A, timeout=10).status_code == 200


def test_streamed_json_upload_over_the_cap_is_413_saying_multipart(server):
    content = "x" * 5000

    def chunks():  # no Content-Length: Transfer-Encoding: chunked
        yield json.dumps({"content": content})[:2500].encode()
        yield json.dumps({"content": content})[2500:].encode()

    response = requests.post(
        server.url + "/v1/files",
        data=chunks(),
        timeout=10,
        headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "multipart/form-data" in error["message"]
    assert requests.get(server.url + "/v1/files", headers=AUTH_A, timeout=10).json()["data"] == []


def test_streamed_json_body_over_the_cap_is_413_not_silently_truncated(server):
    """Werkzeug stops reading a chunked body at ``max_content_length`` without a word; the
    valid JSON at its head must not be taken for the whole body."""

    def chunks():
        yield b'{"input_file_id": "file-000000000000000000000000", "endpoint": "/v1/x"}'
        for _ in range(40):
            yield b" " * 32768  # 1.25 MiB of trailing whitespace: over ZUMIK_MAX_JSON_BYTES

    response = requests.post(
        server.url + "/v1/batches",
        data=chunks(),
        timeout=10,
        headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "request_too_large"
