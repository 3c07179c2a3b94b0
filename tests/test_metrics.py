"""``/metrics`` on real gunicorn with 2 workers: counts from every worker are summed."""

from __future__ import annotations

import re
import time

import requests
from conftest import AUTH_A, echo_lines

from zumik.metrics import MAX_SERIES, Metrics


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_sum_across_workers(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    file_id = requests.post(server.url + "/v1/files", headers=AUTH_A, timeout=10, files={
        "file": ("a.jsonl", echo_lines(50, model="m"))}).json()["id"]
    batch_ids = [requests.post(server.url + "/v1/batches", headers=AUTH_A, timeout=10, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions"}).json()["id"]
        for _ in range(4)]
    deadline = time.time() + 60
    while time.time() < deadline:
        statuses = {requests.get(f"{server.url}/v1/batches/{b}", headers=AUTH_A,
                                 timeout=10).json()["status"] for b in batch_ids}
        if statuses == {"completed"}:
            break
        time.sleep(0.2)
    time.sleep(2.5)  # every executor flushes its counters at least every 2 s
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "zumik_lines_total", provider="default", model="m",
                  outcome="completed") == 200
    assert metric(text, "zumik_upstream_latency_seconds_count", provider="default") == 200
    assert metric(text, "zumik_batches", status="completed") == 4
    assert metric(text, "zumik_stored_files", project="proj-a") == 5
    assert metric(text, "zumik_stored_bytes", project="proj-a") > 0
    assert "# TYPE zumik_upstream_latency_seconds histogram" in text
    snapshots = list((server.data_dir / ".metrics").glob("*.json"))
    assert len(snapshots) >= 2  # both workers wrote one


def test_user_supplied_label_values_cannot_grow_metrics_without_bound():
    metrics = Metrics()
    for i in range(MAX_SERIES + 500):
        metrics.inc("zumik_lines_total", (("provider", "default"), ("model", f"m{i}"),
                                          ("outcome", "completed")))
    counters = metrics.snapshot()["counters"]
    assert len(counters) == MAX_SERIES + 1
    other = [v for k, v in counters.items() if '"_other"' in k]
    assert other == [500.0]
    assert sum(counters.values()) == MAX_SERIES + 500  # nothing lost, only folded
