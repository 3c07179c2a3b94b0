"""Slow clients must not block other tenants: real gunicorn as ``zumik serve`` runs it (2 workers,
Zumik's worker class and defaults), and the documented nginx site in front of gunicorn. Each
attack lasts a few seconds on loopback while another project lists its files, which must
answer within 2 s every time."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from conftest import AUTH_A, AUTH_B, KEY_A, jsonl, request_line
from test_deploy import run_nginx

pytestmark = pytest.mark.slow  # slow and stalled clients against real servers, by design

ATTACKERS = 20
VICTIM_DEADLINE = 2.0


class Target:
    """Where the attack goes: host, port, and whether it speaks TLS (nginx) or not."""

    def __init__(self, url: str, cert: str | None = None) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.cert = cert
        self.host = "localhost" if cert else "127.0.0.1"

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf:  # a small window: the server's writes block as soon as its buffer fills
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", self.port))
        if self.cert:
            context = ssl.create_default_context(cafile=self.cert)
            sock = context.wrap_socket(sock, server_hostname="localhost")
        return sock

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        if self.cert:
            session.verify = self.cert
        return session


def victim_times(target: Target, during: Callable[[], None], rounds: int = 6) -> list[float]:
    """Start the attack, then time another project's ``GET /v1/files`` a few times."""
    times: list[float] = []
    with contextlib.ExitStack() as stack:
        stack.callback(during())  # the attack runs until its stop callback
        time.sleep(1.0)  # let every attacker get its connection in
        session = target.session()
        for _ in range(rounds):
            started = time.monotonic()
            try:
                response = session.get(
                    target.url + "/v1/files", headers=AUTH_B, timeout=VICTIM_DEADLINE + 1
                )
                assert response.status_code == 200, response.text
                times.append(time.monotonic() - started)
            except requests.Timeout:
                times.append(float("inf"))
            session.close()  # a new connection each time, as a new client would make
            time.sleep(0.3)
    return times


def header_drip(target: Target) -> Callable[[], Callable[[], None]]:
    """20 connections sending their request head at 1 byte per second."""

    def start() -> Callable[[], None]:
        socks = [target.connect() for _ in range(ATTACKERS)]
        stop = threading.Event()

        def drip() -> None:
            head = b"GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
            for byte in head:
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(bytes([byte]))
                if stop.wait(1.0):
                    return

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()

        def finish() -> None:
            stop.set()
            thread.join(5)
            for sock in socks:
                sock.close()

        return finish

    return start


def stalled_transfers(target: Target, file_id: str) -> Callable[[], Callable[[], None]]:
    """One upload that stops after a few bytes of its body, and 20 downloads of a large file
    by clients that never read."""

    def start() -> Callable[[], None]:
        socks = []
        upload = target.connect()
        upload.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY_A.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b"
            b"\r\nContent-Length: 1000000\r\n\r\n--b\r\nContent-Disposition: "
            b'form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        )
        socks.append(upload)
        for _ in range(ATTACKERS):
            sock = target.connect(rcvbuf=4096)
            sock.sendall(
                f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {KEY_A}\r\n\r\n".encode()
            )
            socks.append(sock)

        def finish() -> None:
            for sock in socks:
                sock.close()

        return finish

    return start


def big_file(target: Target) -> str:
    """A ~10 MB batch file of project A: larger than what socket buffers hold."""
    content = jsonl([request_line(f"r{i}", "x" * 1200) for i in range(8000)])
    response = target.session().post(
        target.url + "/v1/files", headers=AUTH_A, timeout=60, files={"file": ("big.jsonl", content)}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


@pytest.fixture
def serve(gunicorn) -> Target:
    return Target(gunicorn().url)  # zumik serve's defaults: 2 workers, ZumikWorker


@pytest.fixture
def site(gunicorn, tmp_path) -> Iterator[Target]:
    server = gunicorn({"ZUMIK_THREADS": "4"})  # few threads: nginx itself must shield them
    with run_nginx(server, tmp_path) as (url, cert):
        yield Target(url, cert)


def test_header_drip_does_not_block_zumik_serve(serve):
    times = victim_times(serve, header_drip(serve))
    assert max(times) < VICTIM_DEADLINE, times


def test_stalled_upload_and_downloads_do_not_block_zumik_serve(serve):
    file_id = big_file(serve)
    times = victim_times(serve, stalled_transfers(serve, file_id))
    assert max(times) < VICTIM_DEADLINE, times


def test_header_drip_does_not_block_the_nginx_site(site):
    times = victim_times(site, header_drip(site))
    assert max(times) < VICTIM_DEADLINE, times


def test_stalled_upload_and_downloads_do_not_block_the_nginx_site(site):
    file_id = big_file(site)
    times = victim_times(site, stalled_transfers(site, file_id))
    assert max(times) < VICTIM_DEADLINE, times


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def test_zumik_serve_cuts_slow_clients_off_at_its_limits(gunicorn):
    """Each limit, shortened to 1 s, closes its kind of slow connection within a few seconds:
    a head still dripping (on a new or a kept-alive connection), a stalled upload (no temp
    file left), a body sent below the minimum rate, and a download nobody reads."""
    server = gunicorn(
        {"ZUMIK_HEADER_TIMEOUT": "1", "ZUMIK_CLIENT_TIMEOUT": "1", "ZUMIK_CLIENT_MIN_RATE": "1000"}
    )
    target = Target(server.url)
    file_id = big_file(target)
    head = target.connect()
    head.sendall(b"GET /v1/files HTTP/1.1\r\nHost: x\r\n")
    kept = target.connect()  # a kept-alive connection whose next head never ends
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}\n"):
        answer += kept.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: keep-alive" in answer
    kept.sendall(b"GET /v1/files HTTP/1.1\r\n")
    upload_head = (
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY_A.encode()
        + b"\r\nContent-Type: multipart/form-data; boundary=b"
        b"\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; "
        b'name="file"; filename="a.jsonl"\r\n\r\n'
    )
    stalled = target.connect()
    stalled.sendall(upload_head)
    dripping = target.connect()
    dripping.sendall(upload_head)
    download = target.connect(rcvbuf=4096)
    download.sendall(
        f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY_A}\r\n\r\n".encode()
    )
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.3):
            with contextlib.suppress(OSError):
                dripping.send(b'{"custom_id": "r0"}'[:1])

    threading.Thread(target=drip, daemon=True).start()
    try:
        assert read_until_closed(head, 10) == (b"", pytest.approx(1.5, abs=1.5))
        assert read_until_closed(kept, 10) == (b"", pytest.approx(1.5, abs=1.5))
        answer, _ = read_until_closed(stalled, 10)
        assert answer.startswith(b"HTTP/1.1 400") or answer == b""
        answer, took = read_until_closed(dripping, 10)
        assert took < 6 and (answer.startswith(b"HTTP/1.1 400") or answer == b"")
        time.sleep(3)  # the download stalls past the client timeout: the server gives up
        received, took = read_until_closed(download, 10)
        assert took < 5 and received.startswith(b"HTTP/1.1 200")
        assert len(received) < 8_000_000  # cut off well before the ~10 MB body
    finally:
        stop.set()
    files_dir = server.data_dir / "proj-a" / "files"
    assert [p.name for p in files_dir.iterdir() if p.name.startswith(".tmp-")] == []
    ok = requests.get(server.url + "/v1/files", headers=AUTH_A, timeout=5)
    assert [f["id"] for f in ok.json()["data"]] == [file_id]
