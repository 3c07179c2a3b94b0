"""``POST /v1/files/{id}/estimate`` on real gunicorn with the fake provider (issue 25): line and
max-output sums, the heuristic without a tokenizer, vLLM's ``/tokenize`` counts equal to the
``prompt_tokens`` the provider then reports, cost at configured prices, the time from measured
throughput, and the errors of a batch create."""

from __future__ import annotations

import json
import math
import time

import requests
from conftest import AUTH_A, AUTH_B, jsonl, request_line

CHAT = "/v1/chat/completions"


def post(server, path: str, auth=AUTH_A, **kwargs) -> requests.Response:
    return requests.post(server.url + path, headers=auth, timeout=60, **kwargs)


def upload(server, content: bytes, auth=AUTH_A, purpose: str = "batch") -> str:
    response = post(
        server, "/v1/files", auth, files={"file": ("in.jsonl", content)}, data={"purpose": purpose}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


def estimate(server, file_id: str, auth=AUTH_A, **body) -> requests.Response:
    return post(server, f"/v1/files/{file_id}/estimate", auth, json={"endpoint": CHAT, **body})


def lines_with_limits(n: int, model: str = "m") -> list[dict]:
    """Lines alternating max_tokens 16 / max_completion_tokens 8 / max_output_tokens 4."""
    keys = ("max_tokens", "max_completion_tokens", "max_output_tokens")
    return [
        request_line(f"r{i}", f"message number {i}", model, **{keys[i % 3]: 16 >> (i % 3)})
        for i in range(n)
    ]


def heuristic(line: dict) -> int:
    return max(1, math.ceil(len(json.dumps(line["body"]["messages"])) / 4))


def wait_batch(server, batch_id: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        record = requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A, timeout=30)
        batch = record.json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.time() < deadline, batch
        time.sleep(0.1)


def run_batch(server, file_id: str, **extra) -> dict:
    response = post(
        server, "/v1/batches", json={"input_file_id": file_id, "endpoint": CHAT, **extra}
    )
    assert response.status_code == 200, response.text
    return wait_batch(server, response.json()["id"])


def test_estimate_sums_lines_and_outputs_by_heuristic_then_eta_once_measured(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    lines = lines_with_limits(30)
    file_id = upload(server, jsonl(lines))
    answer = estimate(server, file_id)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    assert got["object"] == "batch.estimate"
    assert got["lines"] == 30
    assert got["max_output_tokens"] == 10 * (16 + 8 + 4)
    assert got["input_tokens_method"] == "heuristic"  # the fake offers no /tokenize here
    assert got["input_tokens"] == sum(heuristic(line) for line in lines)
    assert got["models"]["m"]["lines"] == 30 and got["models"]["m"]["provider"] == "default"
    assert got["models"]["m"]["input_tokens"] == got["input_tokens"]
    assert got["cost"] is None  # no prices configured
    assert got["eta_seconds"] is None  # nothing measured yet

    # one line without a maximum: the sum is unknown
    open_ended = upload(server, jsonl([*lines[:3], request_line("x", "no limit", "m")]))
    assert estimate(server, open_ended).json()["max_output_tokens"] is None

    assert run_batch(server, file_id)["status"] == "completed"
    deadline = time.time() + 30  # executors publish what they measured every 2 s
    while (eta := estimate(server, file_id).json()["eta_seconds"]) is None:
        assert time.time() < deadline, "no throughput published after a batch ran"
        time.sleep(0.2)
    assert isinstance(eta["low"], int) and isinstance(eta["high"], int)
    assert 0 <= eta["low"] <= eta["high"]


def test_estimate_is_refused_like_a_batch_create(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    file_id = upload(server, jsonl(lines_with_limits(3)))

    def refused(response: requests.Response, status: int, param: str | None) -> None:
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param, response.text

    refused(estimate(server, file_id, AUTH_B), 404, "id")  # another project's file
    refused(estimate(server, "file-" + "0" * 24), 404, "id")
    refused(estimate(server, file_id, endpoint="/v1/embeddings"), 400, "url")  # lines' url
    refused(estimate(server, file_id, endpoint="/v1/images"), 400, "endpoint")
    refused(post(server, f"/v1/files/{file_id}/estimate", json={}), 400, "endpoint")
    refused(estimate(server, file_id, bogus=1), 400, "bogus")
    refused(estimate(server, file_id, completion_window="0h"), 400, "completion_window")
    refused(estimate(server, file_id, priority="urgent"), 400, "priority")
    refused(estimate(server, file_id, max_total_tokens=-5), 400, "max_total_tokens")
    refused(estimate(server, file_id, max_cost=1.0), 400, "max_cost")  # no prices
    refused(estimate(server, file_id, metadata="x"), 400, "metadata")
    no_default = gunicorn({}, data_dir=server.data_dir.parent / "other")
    unrouted = upload(no_default, jsonl([request_line("a", "hi", "nope")]))
    refused(estimate(no_default, unrouted), 400, "body.model")
    bad = post(
        server,
        f"/v1/files/{file_id}/estimate",
        {**AUTH_A, "Content-Type": "application/json"},
        data=b"{not json",
    )
    assert bad.status_code == 400


def test_tokenizer_counts_equal_the_prompt_tokens_the_provider_reports(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"tokenize": True}, timeout=10)
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    lines = [
        request_line(f"t{i}", "word " * (i % 17) + f"line {i}", "m", max_tokens=32)
        for i in range(40)
    ]
    file_id = upload(server, jsonl(lines))
    got = estimate(server, file_id).json()
    assert got["input_tokens_method"] == "tokenizer", got
    assert got["tokenized_lines"] == 40
    stats = requests.get(provider.url.replace("/v1", "/_stats"), timeout=10).json()
    assert stats["by_path"]["/tokenize"] >= 40
    skipped = estimate(server, file_id, tokenizer=False).json()
    assert skipped["input_tokens_method"] == "heuristic"
    batch = run_batch(server, file_id)
    assert batch["status"] == "completed"
    assert batch["request_counts"]["completed"] == 40
    assert batch["usage"]["input_tokens"] == got["input_tokens"]


def test_a_failing_tokenizer_never_fails_the_estimate(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"tokenize": True}, timeout=10)
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    file_id = upload(server, jsonl(lines_with_limits(10)))
    assert estimate(server, file_id).json()["input_tokens_method"] == "tokenizer"
    provider.outage(600)  # the provider (and its tokenizer) is gone: connection refused
    deadline = time.time() + 10
    while True:
        try:
            requests.get(provider.url.replace("/v1", "/_stats"), timeout=1)
        except requests.ConnectionError:
            break
        except requests.Timeout:  # shutting down: not refused yet
            pass
        assert time.time() < deadline
        time.sleep(0.05)
    got = estimate(server, file_id)
    assert got.status_code == 200, got.text
    assert got.json()["input_tokens_method"] == "heuristic"
    assert got.json()["lines"] == 10


def test_cost_from_configured_prices(gunicorn, provider, tmp_path):
    config = tmp_path / "zumik.toml"
    config.write_text(
        f'[providers.priced]\nbase_url = "{provider.url}"\ninput_price = 2.0\n'
        "output_price = 10.0\ndefault = true\n"
    )
    server = gunicorn({"ZUMIK_CONFIG": str(config)})
    lines = lines_with_limits(9)
    got = estimate(server, upload(server, jsonl(lines))).json()
    tokens_in = sum(heuristic(line) for line in lines)
    assert got["models"]["m"]["provider"] == "priced"
    assert got["cost"]["currency"] == "USD"
    assert got["cost"]["low"] == round(tokens_in * 2.0 / 1e6, 6)
    assert got["cost"]["high"] == round(tokens_in * 2.0 / 1e6 + 3 * 28 * 10.0 / 1e6, 6)


def test_the_tokenizer_time_budget_falls_back_to_the_heuristic_and_says_so(gunicorn, provider):
    requests.post(
        provider.url.replace("/v1", "/_control"),
        json={"tokenize": True, "tokenize_latency": 0.2},
        timeout=10,
    )
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_ESTIMATE_SECONDS": "1.5"})
    lines = lines_with_limits(300)
    file_id = upload(server, jsonl(lines))
    started = time.time()
    got = estimate(server, file_id).json()
    assert time.time() - started < 15  # the budget, not 300 x 0.2 s / 8
    assert got["tokenizer_time_budget_reached"] is True
    assert got["input_tokens_method"] == "heuristic"
    assert 0 < got["tokenized_lines"] < 300
    assert got["lines"] == 300 and got["max_output_tokens"] == 100 * 28
