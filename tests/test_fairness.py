"""Fair scheduling on real gunicorn: one project's 10 big batches do not starve another
project's small one (issue 12: within 5 s while 10 batches of 3,000 lines run at 50 ms)."""

from __future__ import annotations

import json
import time

import pytest
import requests
from conftest import AUTH_A, AUTH_B, echo_lines, wait_until

pytestmark = pytest.mark.slow  # ten 3,000-line batches on real gunicorn


def post(server, path: str, auth, **kwargs):
    response = requests.post(server.url + path, headers=auth, timeout=60, **kwargs)
    response.raise_for_status()
    return response.json()


def start(server, content: bytes, auth) -> str:
    file_id = post(server, "/v1/files", auth, files={"file": ("in.jsonl", content)})["id"]
    return post(
        server,
        "/v1/batches",
        auth,
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )["id"]


def status(server, batch_id: str, auth) -> dict:
    return requests.get(f"{server.url}/v1/batches/{batch_id}", headers=auth, timeout=30).json()


def test_a_small_batch_is_not_stuck_behind_ten_big_ones(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url}, workers=2)
    big = [start(server, echo_lines(3000, model="m", prefix=f"a{i}-"), AUTH_A) for i in range(10)]
    wait_until(
        lambda: sum(status(server, b, AUTH_A)["request_counts"]["completed"] for b in big) >= 500,
        30,
        "project A's batches to be running",
        interval=0.2,
    )
    started = time.time()
    small = start(server, echo_lines(10, model="m", prefix="b-"), AUTH_B)
    server.wait_batch(small, ("completed",), timeout=30, auth=AUTH_B)  # else B's batch is stuck
    took = time.time() - started
    # not finished: in_progress, or still validating where a loaded machine has not claimed it
    running = [
        b for b in big if status(server, b, AUTH_A)["status"] in ("validating", "in_progress")
    ]
    print(
        "\nfairness:",
        json.dumps(
            {
                "big_batches": 10,
                "big_lines": 3000,
                "latency_s": 0.05,
                "small_batch_s": round(took, 2),
                "big_still_running": len(running),
            }
        ),
    )
    for batch_id in big:
        post(server, f"/v1/batches/{batch_id}/cancel", AUTH_A)
    assert len(running) == 10, "none of A's batches may finish before B's"
    assert took < 5.0
