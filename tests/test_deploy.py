"""The documented nginx site (docs/deploy/nginx-zumik.conf), for real: nginx with TLS on a free
port in front of gunicorn; an upload larger than nginx's default body limit, a batch and a
download go through it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from conftest import AUTH_A, KEY_A, ROOT, TERMINAL, echo_lines, wait_until
from fake_provider import free_port

pytestmark = pytest.mark.slow  # nginx in front of real gunicorn, a 12,000-line batch

SITE = ROOT / "docs" / "deploy" / "nginx-zumik.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        pytest.skip("nginx is not installed (.ci/run installs it); this test needs it")
    return found


@contextlib.contextmanager
def run_nginx(server, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """nginx with the documented site, TLS on a free port, in front of ``server``; yields the
    site's URL and the certificate to trust."""
    binary = nginx_binary()
    port = free_port()
    work = tmp_path / "nginx"
    work.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(work / "key.pem"),
            "-out",
            str(work / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    site = SITE.read_text()
    for old, new in (
        ("127.0.0.1:8080", f"127.0.0.1:{server.port}"),
        ("listen 443 ssl", f"listen 127.0.0.1:{port} ssl"),
        ("/etc/ssl/zumik/fullchain.pem", str(work / "cert.pem")),
        ("/etc/ssl/zumik/privkey.pem", str(work / "key.pem")),
    ):
        assert old in site, f"the documented site no longer has {old!r}"
        site = site.replace(old, new)
    (work / "site.conf").write_text(site)
    (work / "nginx.conf").write_text(f"""
daemon off;
user root;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/site.conf;
}}
""")
    proc = subprocess.Popen(
        [binary, "-c", str(work / "nginx.conf"), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"https://localhost:{port}"
    cert = str(work / "cert.pem")
    probe = requests.Session()
    probe.trust_env = False
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            probe.get(url + "/healthz", verify=cert, timeout=1)
            break
        except requests.RequestException:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()) from None
            time.sleep(0.1)
    try:
        yield url, cert
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def nginx(gunicorn, provider, tmp_path):
    with run_nginx(gunicorn({"ZUMIK_UPSTREAM_URL": provider.url}), tmp_path) as site:
        yield site


def test_upload_batch_download_through_nginx(nginx):
    nginx, cert = nginx
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override the certificate below
    session.verify = cert  # the test's own self-signed certificate
    session.headers.update(AUTH_A)
    content = echo_lines(12_000)  # ~1.4 MB: more than nginx's default 1 MB body limit
    assert len(content) > 1024 * 1024
    uploaded = session.post(nginx + "/v1/files", files={"file": ("big.jsonl", content)}, timeout=60)
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    batch = session.post(
        nginx + "/v1/batches",
        timeout=30,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()
    batch = wait_until(
        lambda: (lambda b: b if b["status"] in TERMINAL else None)(
            session.get(f"{nginx}/v1/batches/{batch['id']}", timeout=30).json()
        ),
        120,
        "the batch to end",
        interval=0.2,
    )
    assert batch["status"] == "completed"
    assert batch["request_counts"]["completed"] == 12_000
    download = session.get(f"{nginx}/v1/files/{batch['output_file_id']}/content", timeout=60)
    ids = {json.loads(line)["custom_id"] for line in download.content.splitlines()}
    assert len(ids) == 12_000
    assert session.get(nginx + "/v1/files/" + file_id + "/content", timeout=60).content == content
    assert session.get(nginx + "/metrics", timeout=10).status_code == 200  # from this host


def test_cli_batch_through_nginx_to_a_provider(nginx, provider, tmp_path):
    """The README's newcomer path: `zumik batch run` over TLS through the documented site, to a
    provider and back, with the progress line."""
    url, cert = nginx
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(echo_lines(300, model="provider-model"))
    out = tmp_path / "answers.jsonl"
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_BASE_URL": url + "/v1",
        "OPENAI_API_KEY": KEY_A,
        "REQUESTS_CA_BUNDLE": cert,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "zumik.cli",
            "batch",
            "--interval",
            "0.2",
            "run",
            str(source),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "300/300" in done.stderr and "completed" in done.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answers) == 300 and all(a["error"] is None for a in answers)
    assert {a["response"]["body"]["model"] for a in answers} == {"provider-model"}
    stats = requests.get(provider.url.replace("/v1", "/_stats"), timeout=10).json()
    assert stats["requests"] == 300


def test_sdk_upload_in_parts_through_nginx(nginx, tmp_path):
    """Uploads API parts bigger than nginx's default 1 MB body limit, through the documented
    site with the official SDK's ``upload_file_chunked``."""
    url, cert = nginx
    path = tmp_path / "big.jsonl"
    path.write_bytes(echo_lines(25_000))  # ~3 MB in two parts of 2 MB and one of ~1 MB
    client = openai.OpenAI(
        base_url=url + "/v1",
        api_key=KEY_A,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=cert, trust_env=False),
    )
    done = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=2 * 1024 * 1024
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == path.stat().st_size > 2 * 1024 * 1024
    assert client.files.content(done.file.id).content == path.read_bytes()
