"""Quotas and admission under concurrency on real gunicorn: many workers, one filesystem, and
no race can pass a limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import AUTH_A, echo_lines

pytestmark = pytest.mark.slow  # concurrent clients against real gunicorn


def test_concurrent_uploads_and_creates_never_pass_the_limits(gunicorn):
    server = gunicorn(
        {
            "ZUMIK_MAX_FILES": "11",
            "ZUMIK_MAX_ACTIVE_BATCHES": "3",
            "ZUMIK_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "ZUMIK_SHUTDOWN_GRACE": "1",
        },
        workers=3,
    )

    def upload(i: int) -> requests.Response:
        return requests.post(
            server.url + "/v1/files",
            headers=AUTH_A,
            timeout=30,
            files={"file": (f"f{i}.jsonl", echo_lines(200, model="m"))},
        )

    with ThreadPoolExecutor(16) as pool:
        uploads = list(pool.map(upload, range(16)))
    ok = [r for r in uploads if r.status_code == 200]
    refused = [r for r in uploads if r.status_code != 200]
    assert len(ok) == 11 and len(refused) == 5
    assert all(
        r.status_code == 400 and r.json()["error"]["code"] == "quota_exceeded" for r in refused
    )
    listed = requests.get(server.url + "/v1/files", headers=AUTH_A, timeout=30).json()["data"]
    assert sorted(f["id"] for f in listed) == sorted(r.json()["id"] for r in ok)
    files_dir = server.data_dir / "proj-a" / "files"
    assert len(list(files_dir.glob("*.data"))) == 11  # and nothing half-written left over
    assert not [p for p in files_dir.iterdir() if p.name.startswith(".tmp-")]

    file_id = ok[0].json()["id"]
    for response in ok[1:]:  # room for the results of the batches below (2 files each)
        requests.delete(
            f"{server.url}/v1/files/{response.json()['id']}", headers=AUTH_A, timeout=30
        ).raise_for_status()

    def create(_: int) -> requests.Response:  # the provider is unreachable: batches stay active
        return requests.post(
            server.url + "/v1/batches",
            headers=AUTH_A,
            timeout=30,
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
        )

    with ThreadPoolExecutor(12) as pool:
        creates = list(pool.map(create, range(12)))
    assert sorted(r.status_code for r in creates) == [200] * 3 + [429] * 9
    assert all(
        r.json()["error"]["code"] == "quota_exceeded" for r in creates if r.status_code == 429
    )
