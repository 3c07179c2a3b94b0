"""``/metrics`` on real gunicorn with 2 workers: counts from every worker are summed."""

from __future__ import annotations

import os
import re
import sys

import pytest
import requests
from conftest import AUTH_A, create_batch, echo_lines, upload, wait_batch, wait_until

from zumik.ops.metrics import MAX_SERIES, Metrics


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
    file_id = requests.post(
        server.url + "/v1/files",
        headers=AUTH_A,
        timeout=10,
        files={"file": ("a.jsonl", echo_lines(50, model="m"))},
    ).json()["id"]
    batch_ids = [
        requests.post(
            server.url + "/v1/batches",
            headers=AUTH_A,
            timeout=10,
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
        ).json()["id"]
        for _ in range(4)
    ]
    for batch_id in batch_ids:
        assert server.wait_batch(batch_id)["status"] == "completed"

    def flushed() -> str | None:  # every executor flushes its counters at least every 2 s
        text = requests.get(server.url + "/metrics", timeout=10).text
        lines = metric(
            text, "zumik_lines_total", provider="default", model="m", outcome="completed"
        )
        finished = metric(text, "zumik_batches_finished_total", status="completed")
        # a batch is counted finished a moment after its last line: wait for both numbers
        return text if lines >= 200 and finished >= 4 else None

    text = wait_until(flushed, 30, "the workers' counters to be flushed")
    assert (
        metric(text, "zumik_lines_total", provider="default", model="m", outcome="completed") == 200
    )
    assert metric(text, "zumik_upstream_latency_seconds_count", provider="default") == 200
    assert metric(text, "zumik_batches_finished_total", status="completed") == 4
    stored = sorted(p.name for p in (server.data_dir / "proj-a" / "files").iterdir())
    assert metric(text, "zumik_stored_files", project="proj-a") == 5, (stored, text)
    assert metric(text, "zumik_stored_bytes", project="proj-a") > 0
    assert "# TYPE zumik_upstream_latency_seconds histogram" in text
    snapshots = list((server.data_dir / ".metrics").glob("*.json"))
    assert len(snapshots) >= 2  # both workers wrote one


def test_user_supplied_label_values_cannot_grow_metrics_without_bound():
    metrics = Metrics()
    for i in range(MAX_SERIES + 500):
        metrics.inc(
            "zumik_lines_total",
            (("provider", "default"), ("model", f"m{i}"), ("outcome", "completed")),
        )
    counters = metrics.snapshot()["counters"]
    assert len(counters) == MAX_SERIES + 1
    other = [v for k, v in counters.items() if '"_other"' in k]
    assert other == [500.0]
    assert sum(counters.values()) == MAX_SERIES + 500  # nothing lost, only folded


_OPENED: list[str] | None = None


def _record_opens(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


@pytest.mark.slow
def test_a_scrape_reads_active_batches_only_not_every_record(make_app):
    """20 finished batches and 1 active: a scrape opens the active record and nothing else of
    the project's (finished batches are counted by the executor as they end)."""
    global _OPENED
    app = make_app(start=True)
    client = app.test_client()
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    for _ in range(20):
        wait_batch(client, create_batch(client, file_id).get_json()["id"])
    zumik = app.extensions["zumik"]
    zumik.executor.stop()
    active = create_batch(client, file_id).get_json()["id"]  # stays validating: no executor
    sys.addaudithook(_record_opens)
    _OPENED = []
    try:
        text = client.get("/metrics").text
    finally:
        opened, _OPENED = _OPENED, None
    project = str(zumik.settings.data_dir / "proj-a")
    assert [p for p in opened if p.startswith(project)] == [  # the newest version: 1, and
        f"{project}/batches/{active}.json",
        f"{project}/batches/{active}.v2.json",
    ]  # no 2
    assert metric(text, "zumik_batches", status="validating") == 1
    assert metric(text, "zumik_batches", status="completed") == 0  # a gauge of active ones
    assert metric(text, "zumik_batches_finished_total", status="completed") == 20
    assert metric(text, "zumik_stored_files", project="proj-a") == 21  # input + 20 outputs
    assert metric(text, "zumik_stored_bytes", project="proj-a") > 0


def test_metrics_needs_the_token_when_one_is_set(gunicorn):
    server = gunicorn({"ZUMIK_METRICS_TOKEN": "scrape-secret"})
    refused = requests.get(server.url + "/metrics", timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    wrong = requests.get(
        server.url + "/metrics", timeout=10, headers={"Authorization": "Bearer key-a"}
    )  # a tenant key is not it
    assert wrong.status_code == 401
    allowed = requests.get(
        server.url + "/metrics", timeout=10, headers={"Authorization": "Bearer scrape-secret"}
    )
    assert allowed.status_code == 200 and "# TYPE zumik_batches gauge" in allowed.text


def test_without_a_token_metrics_answers_this_host_only(make_app):
    client = make_app().test_client()
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    for address in ("203.0.113.9", "10.0.0.7", "2001:db8::1"):
        remote = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert remote.status_code == 403
        assert "ZUMIK_METRICS_TOKEN" in remote.json["error"]["message"]
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200


def test_one_host_identity_a_rebooted_hosts_gauges_are_not_live(tmp_path):
    """Snapshots name their host as temps, leases and outbox claims do (host name + boot id):
    after a reboot a dead worker's snapshot names an earlier boot, so its gauges do not count
    even where its pid now belongs to a live process; counters (totals) still do."""
    from zumik.ops import metrics
    from zumik.storage import fsutil

    name = fsutil.host_id().rsplit(".", 1)[0]
    live = Metrics()
    live.set_gauge("zumik_inflight_requests", (("provider", "p"),), 2.0)
    live.inc("zumik_lines_total", (("outcome", "completed"),))
    gauge, counter = next(iter(live.gauges)), next(iter(live.counters))
    live.flush(tmp_path)  # this process, now
    assert live.snapshot()["host"] == fsutil.host_id()

    def snapshot(host: str, pid: int) -> None:
        fsutil.write_json(
            tmp_path / ".metrics" / f"{host}-{pid}.json",
            {
                "pid": pid,
                "host": host,
                "counters": {counter: 1.0},
                "histograms": {},
                "gauges": {gauge: 5.0},
                "providers": {},
            },
        )

    snapshot(f"{name}.00000000", os.getpid())  # this machine before a reboot; pid reused now
    snapshot("elsewhere.0000beef", 1)  # another host: assumed live
    seen = metrics.collect(tmp_path)
    assert seen["gauges"] == {gauge: 7.0}  # 2 + 5, not 12
    assert seen["counters"][counter] == 3.0
