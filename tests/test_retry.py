"""``POST /v1/batches/{id}/retry`` on real gunicorn with the fake provider: failed lines,
a cancelled batch's unfinished lines, byte-identical inputs, the refusals, another project's
404, Idempotency-Key, ``retry_of`` in every batch shape, and the merged download of a chain."""

from __future__ import annotations

import json
import time

import requests
from conftest import AUTH_A, AUTH_B, echo_lines, request_line

TERMINAL = ("completed", "failed", "cancelled", "expired")


def api(server, method: str, path: str, auth=AUTH_A, **kwargs):
    return requests.request(method, server.url + path, headers=auth, timeout=30, **kwargs)


def start(server, content: bytes, name: str = "in.jsonl") -> dict:
    file_id = api(server, "POST", "/v1/files", files={"file": (name, content)}).json()["id"]
    batch = api(
        server,
        "POST",
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()
    assert batch["retry_of"] is None
    return batch


def wait(server, batch_id: str, statuses=TERMINAL, timeout: float = 90.0) -> dict:
    deadline = time.time() + timeout
    while True:
        batch = api(server, "GET", f"/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        assert time.time() < deadline, f"batch still {batch['status']}"
        time.sleep(0.1)


def content(server, file_id: str) -> bytes:
    return api(server, "GET", f"/v1/files/{file_id}/content").content


def mixed_input() -> tuple[bytes, list[bytes]]:
    """Lines 2, 5 and 7 fail once with a 400 (so a retry succeeds); odd spacing, key order and
    escapes, so a byte-identical copy is not a re-encoding. Returns the file and its failing
    lines."""
    lines = []
    failing = []
    for i in range(8):
        text = f"message {i}" + (" #fail:400:1" if i in (2, 5, 7) else "")
        line = request_line(f"r{i}", text, "m")
        raw = json.dumps(line, ensure_ascii=i % 2 == 0, indent=None if i % 3 else 1)
        raw = raw.replace("\n", " ") + ("  " if i == 5 else "")
        raw_bytes = raw.encode()
        if i == 7:
            raw_bytes = raw_bytes.replace(b'"message 7', b'"m\\u00e9ssage 7')
        lines.append(raw_bytes)
        if i in (2, 5, 7):
            failing.append(raw_bytes)
    return b"\n".join(lines) + b"\n", failing


def test_retry_failed_lines_byte_identical_then_merged(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    data, failing = mixed_input()
    original = wait(server, start(server, data, "job.jsonl")["id"])
    assert original["request_counts"] == {"total": 8, "completed": 5, "failed": 3}

    retry = api(server, "POST", f"/v1/batches/{original['id']}/retry", json={"lines": "failed"})
    assert retry.status_code == 200, retry.text
    batch = retry.json()
    assert batch["status"] == "validating" and batch["retry_of"] == original["id"]
    assert batch["endpoint"] == original["endpoint"]
    assert batch["completion_window"] == original["completion_window"]
    assert batch["priority"] == "normal" and batch["max_cost"] is None  # as a create stores it
    assert batch["request_counts"]["total"] == 3
    meta = api(server, "GET", f"/v1/files/{batch['input_file_id']}").json()
    assert meta["purpose"] == "batch" and meta["filename"] == "job-retry.jsonl"
    assert content(server, batch["input_file_id"]) == b"".join(x + b"\n" for x in failing)

    # retry_of: set on the retry in GET and list, null on the original
    assert api(server, "GET", f"/v1/batches/{batch['id']}").json()["retry_of"] == original["id"]
    listed = {b["id"]: b for b in api(server, "GET", "/v1/batches").json()["data"]}
    assert listed[batch["id"]]["retry_of"] == original["id"]
    assert listed[original["id"]]["retry_of"] is None

    done = wait(server, batch["id"])
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    # nothing left to retry on either batch of the chain
    for batch_id in (batch["id"],):
        refused = api(server, "POST", f"/v1/batches/{batch_id}/retry")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "nothing_to_retry"

    # merged: every custom_id once, the retry's success beating the original's failure
    for start_id in (original["id"], batch["id"]):
        out = api(server, "GET", f"/v1/batches/{start_id}/merged?file=output")
        err = api(server, "GET", f"/v1/batches/{start_id}/merged?file=error")
        assert out.status_code == 200 and err.status_code == 200
        merged = [json.loads(x) for x in out.content.splitlines()]
        assert sorted(x["custom_id"] for x in merged) == [f"r{i}" for i in range(8)]
        assert err.content == b""
        retried = {x["custom_id"]: x for x in merged if x["custom_id"] in ("r2", "r5", "r7")}
        retry_out = [json.loads(x) for x in content(server, done["output_file_id"]).splitlines()]
        assert sorted(retried.values(), key=lambda x: x["id"]) == sorted(
            retry_out, key=lambda x: x["id"]
        )


def test_retry_of_a_cancelled_batch_runs_its_unfinished_lines(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.2})
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "2"})
    total = 60
    data = echo_lines(total, model="m")
    batch = start(server, data)
    deadline = time.time() + 60
    while (
        api(server, "GET", f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] < 2
    ):
        assert time.time() < deadline
        time.sleep(0.05)
    api(server, "POST", f"/v1/batches/{batch['id']}/cancel")
    cancelled = wait(server, batch["id"])
    assert cancelled["status"] == "cancelled"
    done_ids = {
        json.loads(x)["custom_id"]
        for x in content(server, cancelled["output_file_id"]).splitlines()
    }
    assert 0 < len(done_ids) < total
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.0})

    # "failed" finds none (every result succeeded); "unfinished" the rest, in input order
    refused = api(server, "POST", f"/v1/batches/{batch['id']}/retry", json={"lines": "failed"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "nothing_to_retry"
    retry = api(server, "POST", f"/v1/batches/{batch['id']}/retry", json={"lines": "unfinished"})
    assert retry.status_code == 200, retry.text
    expected = b"".join(
        line + b"\n" for line in data.splitlines() if json.loads(line)["custom_id"] not in done_ids
    )
    assert content(server, retry.json()["input_file_id"]) == expected
    finished = wait(server, retry.json()["id"])
    assert finished["request_counts"]["completed"] == total - len(done_ids)
    merged = api(server, "GET", f"/v1/batches/{batch['id']}/merged?file=output").content
    assert sorted(json.loads(x)["custom_id"] for x in merged.splitlines()) == sorted(
        f"r{i}" for i in range(total)
    )


def test_retry_refusals_isolation_and_idempotency(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.3})
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "1"})
    running = start(server, echo_lines(30, model="m"))
    refused = api(server, "POST", f"/v1/batches/{running['id']}/retry")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "batch_not_finished"
    other = api(server, "POST", f"/v1/batches/{running['id']}/retry", auth=AUTH_B)
    assert other.status_code == 404 and other.json()["error"]["type"] == "invalid_request_error"
    unknown = api(server, "POST", "/v1/batches/batch_000000000000000000000000/retry")
    assert unknown.status_code == 404
    bad = api(server, "POST", f"/v1/batches/{running['id']}/retry", json={"lines": "some"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "lines"
    extra = api(server, "POST", f"/v1/batches/{running['id']}/retry", json={"model": "x"})
    assert extra.status_code == 400 and extra.json()["error"]["code"] == "unknown_parameter"
    api(server, "POST", f"/v1/batches/{running['id']}/cancel")
    cancelled = wait(server, running["id"])
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.0})

    files_before = len(api(server, "GET", "/v1/files").json()["data"])
    key = {"Idempotency-Key": "retry-once", **AUTH_A}
    first = api(server, "POST", f"/v1/batches/{cancelled['id']}/retry", auth=key)
    second = api(server, "POST", f"/v1/batches/{cancelled['id']}/retry", auth=key)
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(api(server, "GET", "/v1/files").json()["data"]) == files_before + 1
    reused = api(
        server,
        "POST",
        f"/v1/batches/{cancelled['id']}/retry",
        auth=key,
        json={"metadata": {"other": "request"}},
    )
    assert reused.status_code == 400
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    wait(server, first.json()["id"])


def test_retry_counts_against_the_active_batch_cap(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.0})
    server = gunicorn(
        {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_MAX_ACTIVE_BATCHES": "1"}, workers=1
    )
    data, _ = mixed_input()
    original = wait(server, start(server, data)["id"])
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.5})
    blocker = start(server, echo_lines(20, model="m"))
    files_before = len(api(server, "GET", "/v1/files").json()["data"])
    refused = api(server, "POST", f"/v1/batches/{original['id']}/retry")
    assert refused.status_code == 429, refused.text
    assert len(api(server, "GET", "/v1/files").json()["data"]) == files_before  # file undone
    api(server, "POST", f"/v1/batches/{blocker['id']}/cancel")
    wait(server, blocker["id"])


def test_retry_of_an_expired_batch_runs_its_batch_expired_lines(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.5})
    server = gunicorn(
        {
            "ZUMIK_UPSTREAM_URL": provider.url,
            "ZUMIK_CONCURRENCY": "1",
            "ZUMIK_COMPLETION_WINDOW": "3",
        }
    )
    data = echo_lines(40, model="m")
    expired = wait(server, start(server, data)["id"])
    assert expired["status"] == "expired"
    errors = [json.loads(x) for x in content(server, expired["error_file_id"]).splitlines()]
    late = {x["custom_id"] for x in errors if x["error"]["code"] == "batch_expired"}
    assert late and expired["request_counts"]["completed"] + len(late) == 40
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.0})
    # batch_expired lines are unfinished, not failed
    refused = api(server, "POST", f"/v1/batches/{expired['id']}/retry", json={"lines": "failed"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "nothing_to_retry"
    retry = api(server, "POST", f"/v1/batches/{expired['id']}/retry")  # not_succeeded
    assert retry.status_code == 200, retry.text
    expected = b"".join(
        line + b"\n" for line in data.splitlines() if json.loads(line)["custom_id"] in late
    )
    assert content(server, retry.json()["input_file_id"]) == expected


def test_retry_and_results_through_the_sdk(gunicorn, provider):
    """The README's calls: ``client.post(..., cast_to=Batch)`` and ``client.get(...,
    cast_to=object)``; the SDK's Batch model keeps ``retry_of``."""
    import openai
    from openai.types import Batch

    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=AUTH_A["Authorization"][7:])
    data, failing = mixed_input()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait(server, batch.id)
    page = client.get(
        f"/batches/{batch.id}/results",
        cast_to=object,
        options={"params": {"outcome": "failed", "limit": 2}},
    )
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = client.get(
        f"/batches/{batch.id}/results",
        cast_to=object,
        options={"params": {"outcome": "failed", "after": page["last_id"]}},
    )
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    retry = client.post(f"/batches/{batch.id}/retry", cast_to=Batch, body={"lines": "failed"})
    assert isinstance(retry, Batch) and retry.status == "validating"
    assert retry.retry_of == batch.id  # type: ignore[attr-defined]
    assert client.batches.retrieve(batch.id).retry_of is None  # type: ignore[attr-defined]
    assert client.files.content(retry.input_file_id).content == b"".join(x + b"\n" for x in failing)


def test_retry_counts_against_the_file_quota(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_MAX_FILES": "4"})
    data, _ = mixed_input()
    original = wait(server, start(server, data)["id"])  # input, output and error: 3 files
    refused = api(server, "POST", f"/v1/batches/{original['id']}/retry")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "quota_exceeded"
    assert len(api(server, "GET", "/v1/files").json()["data"]) == 3  # nothing left behind
