"""``GET /v1/batches/{id}/results`` on real gunicorn with the fake provider: a reader paging
with ``after`` while a 600-line batch runs sees every result exactly once, reads pages while
it is ``in_progress``, gets the lines exactly as the files hold them, ``outcome=failed`` only
failures; a SIGKILL of the workers mid-batch makes it skip or repeat nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests
from conftest import AUTH_A, AUTH_B, jsonl, request_line

TERMINAL = ("completed", "failed", "cancelled", "expired")


def api(server, method: str, path: str, auth=AUTH_A, **kwargs):
    return requests.request(method, server.url + path, headers=auth, timeout=30, **kwargs)


def lines_with_failures(total: int, every: int = 7) -> bytes:
    return jsonl(
        [
            request_line(f"r{i}", f"message {i}" + (" #fail:400:9" if i % every == 3 else ""), "m")
            for i in range(total)
        ]
    )


def start(server, content: bytes) -> str:
    file_id = api(server, "POST", "/v1/files", files={"file": ("in.jsonl", content)}).json()["id"]
    return api(
        server,
        "POST",
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()["id"]


def status(server, batch_id: str) -> str:
    return api(server, "GET", f"/v1/batches/{batch_id}").json()["status"]


class Reader:
    """Pages ``/results`` with ``after`` until, after the batch was seen terminal, a page
    says ``has_more`` false; counts the pages read while the batch was ``in_progress``."""

    def __init__(self, server, batch_id: str, limit: int = 37, outcome: str = "all") -> None:
        self.server, self.batch_id, self.limit, self.outcome = server, batch_id, limit, outcome
        self.seen: list[dict] = []
        self.pages_in_progress = 0
        self.errors: list[str] = []

    def run(self, timeout: float = 180.0) -> None:
        after = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                state = status(self.server, self.batch_id)
                params = {"limit": self.limit, "outcome": self.outcome}
                if after:
                    params["after"] = after
                answer = api(
                    self.server, "GET", f"/v1/batches/{self.batch_id}/results", params=params
                )
            except requests.RequestException:
                time.sleep(0.05)  # a worker killed under the request: ask again
                continue
            if answer.status_code != 200:
                self.errors.append(answer.text)
                return
            page = answer.json()
            assert len(page["data"]) <= self.limit
            self.seen.extend(page["data"])
            if state == "in_progress":
                self.pages_in_progress += 1
            after = page["last_id"]
            if not page["has_more"]:
                if state in TERMINAL:
                    return
                time.sleep(0.05)
        self.errors.append("reader timed out")


def file_lines(server, batch: dict, field: str) -> list[dict]:
    if not batch[field]:
        return []
    content = api(server, "GET", f"/v1/files/{batch[field]}/content").content
    return [json.loads(x) for x in content.splitlines()]


def assert_exactly_the_files(server, batch_id: str, reader: Reader, total: int) -> dict:
    assert not reader.errors, reader.errors
    batch = api(server, "GET", f"/v1/batches/{batch_id}").json()
    ids = [x["custom_id"] for x in reader.seen]
    assert len(ids) == len(set(ids)) == total, (len(ids), len(set(ids)))
    expected = file_lines(server, batch, "output_file_id") + file_lines(
        server, batch, "error_file_id"
    )
    key = lambda x: x["custom_id"]  # noqa: E731
    assert sorted(reader.seen, key=key) == sorted(expected, key=key)
    return batch


def test_paging_a_running_batch_sees_every_result_once(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.03})
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "4"})
    total = 600
    batch_id = start(server, lines_with_failures(total))
    reader = Reader(server, batch_id)
    failures = Reader(server, batch_id, limit=5, outcome="failed")
    threads = [threading.Thread(target=r.run) for r in (reader, failures)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch = assert_exactly_the_files(server, batch_id, reader, total)
    assert reader.pages_in_progress >= 3, reader.pages_in_progress
    # outcome=failed: only failures, every one of them, once
    assert not failures.errors, failures.errors
    assert failures.pages_in_progress >= 1
    assert all(x["response"]["status_code"] == 400 for x in failures.seen)
    assert sorted(x["custom_id"] for x in failures.seen) == sorted(
        x["custom_id"] for x in file_lines(server, batch, "error_file_id")
    )
    assert len(failures.seen) == batch["request_counts"]["failed"] == len(range(3, total, 7))
    succeeded = api(
        server, "GET", f"/v1/batches/{batch_id}/results", params={"outcome": "succeeded"}
    ).json()
    assert succeeded["data"] and all(x["error"] is None for x in succeeded["data"])
    assert all(x["response"]["status_code"] == 200 for x in succeeded["data"])


def test_results_refusals(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    batch_id = start(server, lines_with_failures(3))
    path = f"/v1/batches/{batch_id}/results"
    assert api(server, "GET", path, auth=AUTH_B).status_code == 404
    for params in ({"after": "nope"}, {"limit": 0}, {"limit": 1001}, {"outcome": "x"}, {"z": 1}):
        answer = api(server, "GET", path, params=params)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
    # a cursor pointing mid-line in a file is never answered with a torn line
    import base64

    forged = "rc_" + base64.urlsafe_b64encode(b"1.5.0.0.0").decode().rstrip("=")
    deadline = time.time() + 60
    while status(server, batch_id) not in TERMINAL:
        assert time.time() < deadline
        time.sleep(0.05)
    mid = api(server, "GET", path, params={"after": forged, "outcome": "succeeded"})
    assert mid.status_code == 200 and len(mid.json()["data"]) == 2  # whole lines, the 2nd on
    first = api(server, "GET", path, params={"limit": 1}).json()
    assert len(first["data"]) == 1 and first["has_more"] is True
    assert first["first_id"] == first["last_id"]
    rest = api(server, "GET", path, params={"after": first["last_id"]}).json()
    assert len(rest["data"]) == 2 and rest["has_more"] is False


@pytest.mark.slow
def test_sigkill_mid_batch_the_paging_reader_skips_and_repeats_nothing(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "8"}
    server = gunicorn(env, workers=2)
    total = 1200
    batch_id = start(server, lines_with_failures(total, every=11))
    reader = Reader(server, batch_id, limit=50)
    thread = threading.Thread(target=reader.run, kwargs={"timeout": 240})
    thread.start()
    run_dir = server.data_dir / "proj-a" / "batches" / f"{batch_id}.run"  # leases, segments
    for kill in range(2):  # SIGKILL every worker mid-run, twice: new epochs, torn tails
        deadline = time.time() + 60
        while len(list(run_dir.glob("*.jsonl"))) < kill + 1 or (
            len(reader.seen) < (kill + 1) * 100
        ):
            assert time.time() < deadline, "the batch made no progress"
            time.sleep(0.05)
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
    thread.join()
    assert len(list(run_dir.glob("lease.*"))) >= 2  # it did change hands
    batch = assert_exactly_the_files(server, batch_id, reader, total)
    assert batch["request_counts"]["completed"] + batch["request_counts"]["failed"] == total
    assert reader.pages_in_progress >= 3
