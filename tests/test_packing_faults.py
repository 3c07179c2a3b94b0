"""Packed embeddings under SIGKILL on real gunicorn: every line exactly once, and what is sent
again is at most the packs that were in flight at each kill."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import requests
from conftest import AUTH_A, jsonl
from fake_provider import item_vector
from test_faults import completed_count, wait_done

from zumik.execution.packcheck import PROBE_TEXTS

CONCURRENCY = 4
PACK = 16


def api(server, method: str, path: str, **kwargs):
    return requests.request(method, server.url + path, headers=AUTH_A, timeout=30, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_packed_batch_is_exactly_once(gunicorn, provider):
    # a model server's cost per request, one request at a time: the batch takes seconds
    requests.post(
        provider.url.replace("/v1", "/_control"),
        json={"embed_request_cost": 0.03, "embed_item_cost": 0.001},
        timeout=10,
    )
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_CONCURRENCY": str(CONCURRENCY),
        "ZUMIK_EMBEDDING_PACK": str(PACK),
    }
    server = gunicorn(env, workers=2)
    total = 1600
    texts = [f"document {i} of the corpus" for i in range(total)]
    lines = [
        {
            "custom_id": f"d{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "m", "input": text},
        }
        for i, text in enumerate(texts)
    ]
    file_id = api(server, "POST", "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}).json()[
        "id"
    ]
    batch_id = api(
        server,
        "POST",
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"},
    ).json()["id"]
    kills, done = 0, 0
    for _ in range(2):  # SIGKILL every worker mid-run, twice
        deadline = time.time() + 60
        while (now := completed_count(server, batch_id)) <= done:
            assert time.time() < deadline, "no progress"
            time.sleep(0.05)
        done = now
        assert done < total, "the batch should still be running when its workers die"
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        kills += 1
    batch = wait_done(server, batch_id)
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    content = api(server, "GET", f"/v1/files/{batch['output_file_id']}/content").content
    out = [json.loads(x) for x in content.splitlines()]
    ids = [x["custom_id"] for x in out]
    assert len(ids) == total and len(set(ids)) == total  # none lost, none twice
    for x in out:  # each line has its own vector, re-indexed from 0, after every recovery
        body = x["response"]["body"]
        assert body["data"] == [
            {
                "object": "embedding",
                "index": 0,
                "embedding": item_vector(texts[int(x["custom_id"][1:])]),
            }
        ]
    sent = requests.get(provider.url.replace("/v1", "/_stats"), timeout=10).json()["by_item"]
    resent = sum(count - 1 for text, count in sent.items() if text not in PROBE_TEXTS)
    print(f"\npacked fault report: kills={kills} resent_inputs={resent}")
    # at most the packs in flight at each kill: 2 workers x CONCURRENCY packs of PACK inputs
    assert resent <= kills * 2 * CONCURRENCY * PACK
