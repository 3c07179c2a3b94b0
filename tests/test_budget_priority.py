"""Budgets, priority and completion windows on batches.create (issue 25), on real gunicorn with
the fake provider: a token budget stops a 300-line batch near 100 lines' usage (the rest get
``budget_exceeded``), a cost budget the same at configured prices, a high-priority batch
finishes while a low one of the same project has most of its lines to go, and windows are
accepted and refused."""

from __future__ import annotations

import json
import time

import requests
from conftest import AUTH_A, create_batch, echo_lines, jsonl, request_line, upload
from fake_provider import chat_prompt_tokens

CHAT = "/v1/chat/completions"
CONCURRENCY = 4


def post(server, path: str, **kwargs) -> requests.Response:
    return requests.post(server.url + path, headers=AUTH_A, timeout=60, **kwargs)


def start(server, content: bytes, **extra) -> dict:
    file_id = post(server, "/v1/files", files={"file": ("in.jsonl", content)}).json()["id"]
    response = post(
        server, "/v1/batches", json={"input_file_id": file_id, "endpoint": CHAT, **extra}
    )
    assert response.status_code == 200, response.text
    return response.json()


def get(server, batch_id: str) -> dict:
    return requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A, timeout=30).json()


def wait_done(server, batch_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while (batch := get(server, batch_id))["status"] not in ("completed", "failed", "expired"):
        assert time.time() < deadline, batch
        time.sleep(0.1)
    return batch


def content_lines(server, file_id: str) -> list[dict]:
    data = requests.get(f"{server.url}/v1/files/{file_id}/content", headers=AUTH_A, timeout=30)
    return [json.loads(line) for line in data.content.splitlines()]


def same_size_lines(n: int) -> tuple[list[dict], int]:
    """``n`` lines whose answers all use the same tokens, and that count."""
    lines = [request_line(f"r{i:04d}", f"message {i:04d}", "m") for i in range(n)]
    messages = lines[0]["body"]["messages"]
    return lines, chat_prompt_tokens(messages) + len(messages[-1]["content"]) // 4


def check_stopped_near(server, batch: dict, per_line: float, budget_lines: int) -> None:
    """Finished ``completed`` after a little over ``budget_lines`` lines, at most the lines in
    flight over; every other line has a ``budget_exceeded`` error line."""
    done = wait_done(server, batch["id"])
    counts = done["request_counts"]
    assert done["status"] == "completed", done
    assert done["budget_exceeded_at"] is not None
    assert budget_lines < counts["completed"] <= budget_lines + 1 + CONCURRENCY, counts
    assert counts["completed"] + counts["failed"] == counts["total"]
    assert done["usage"]["total_tokens"] <= (budget_lines + 1 + CONCURRENCY) * per_line
    errors = content_lines(server, done["error_file_id"])
    assert len(errors) == counts["failed"]
    assert {line["error"]["code"] for line in errors} == {"budget_exceeded"}
    outputs = content_lines(server, done["output_file_id"])
    ids = {line["custom_id"] for line in errors} | {line["custom_id"] for line in outputs}
    assert len(ids) == counts["total"]  # every line exactly once


def test_a_token_budget_stops_a_300_line_batch_near_100_lines(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.02}, timeout=10)
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": str(CONCURRENCY)})
    lines, per_line = same_size_lines(300)
    batch = start(server, jsonl(lines), max_total_tokens=100 * per_line)
    assert batch["max_total_tokens"] == 100 * per_line and batch["max_cost"] is None
    check_stopped_near(server, batch, per_line, 100)


def test_a_cost_budget_stops_at_configured_prices(gunicorn, provider, tmp_path):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.02}, timeout=10)
    config = tmp_path / "zumik.toml"
    config.write_text(
        f'[providers.priced]\nbase_url = "{provider.url}"\ninput_price = 1.0\n'
        f"output_price = 1.0\nmax_concurrency = {CONCURRENCY}\ndefault = true\n"
    )
    server = gunicorn({"ZUMIK_CONFIG": str(config), "ZUMIK_CONCURRENCY": str(CONCURRENCY)})
    lines, per_line = same_size_lines(120)
    batch = start(server, jsonl(lines), max_cost=40 * per_line / 1e6)
    assert batch["max_cost"] == 40 * per_line / 1e6
    check_stopped_near(server, batch, per_line, 40)
    assert get(server, batch["id"])["cost"]["total"] <= (41 + CONCURRENCY) * per_line / 1e6


def test_a_budget_never_reached_leaves_the_batch_as_usual(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    lines, per_line = same_size_lines(20)
    done = wait_done(server, start(server, jsonl(lines), max_total_tokens=21 * per_line)["id"])
    assert done["status"] == "completed" and done["budget_exceeded_at"] is None
    assert done["request_counts"]["completed"] == 20 and done["error_file_id"] is None


def test_a_high_priority_batch_finishes_while_a_low_one_has_most_to_go(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05}, timeout=10)
    server = gunicorn(
        {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": str(CONCURRENCY)}, workers=1
    )
    low = start(server, echo_lines(1500, model="m", prefix="low-"), priority="low")
    assert low["priority"] == "low"
    deadline = time.time() + 60
    while get(server, low["id"])["request_counts"]["completed"] < 20:
        assert time.time() < deadline, "the low batch should be running"
        time.sleep(0.05)
    high = start(server, echo_lines(20, model="m", prefix="high-"), priority="high")
    assert high["priority"] == "high"
    done = wait_done(server, high["id"], timeout=60)
    left = get(server, low["id"])
    post(server, f"/v1/batches/{low['id']}/cancel")
    print("\npriority:", json.dumps({"high_done": 20, "low_done": left["request_counts"]}))
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 20
    assert left["status"] == "in_progress"
    assert left["request_counts"]["completed"] < 750, left["request_counts"]


def test_windows_accepted_and_refused(make_app):
    client = make_app(max_window=72 * 3600).test_client()
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    for window, seconds in (("24h", 86_400), ("1h", 3600), ("48h", 172_800), ("72h", 259_200)):
        batch = create_batch(client, file_id, completion_window=window).get_json()
        assert batch["completion_window"] == window
        assert batch["expires_at"] == batch["created_at"] + seconds
    for window in ("0h", "73h", "168h", "1.5h", "007h", "24", "1d", "h", "24H", " 24h", 24, None):
        response = create_batch(client, file_id, completion_window=window)
        assert response.status_code == 400, (window, response.get_json())
        assert response.get_json()["error"]["param"] == "completion_window"


def test_extension_fields_are_bounded(client):
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    bad = (
        ("max_total_tokens", 0),
        ("max_total_tokens", -1),
        ("max_total_tokens", 1.5),
        ("max_total_tokens", 10**30),
        ("max_total_tokens", "100"),
        ("max_total_tokens", True),
        ("max_cost", -1.0),
        ("max_cost", 1e300),
        ("max_cost", 5.0),  # the echo model has no price
        ("priority", "urgent"),
        ("priority", 1),
    )
    for name, value in bad:
        response = create_batch(client, file_id, **{name: value})
        assert response.status_code == 400, (name, value, response.get_json())
        assert response.get_json()["error"]["param"] == name
    ok = create_batch(client, file_id, max_total_tokens=1000, priority="low").get_json()
    assert ok["max_total_tokens"] == 1000 and ok["priority"] == "low"
    shown = client.get(f"/v1/batches/{ok['id']}", headers=AUTH_A).get_json()
    assert shown["max_total_tokens"] == 1000 and shown["budget_exceeded_at"] is None
    plain = create_batch(client, file_id).get_json()
    assert plain["priority"] == "normal" and plain["max_cost"] is None
