"""Durability under faults on real gunicorn: SIGKILL of workers and of the whole server,
two server instances on one data dir with lease-only claiming, provider faults mid-batch."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import pytest
import requests
from conftest import echo_lines, jsonl, request_line, wait_until

pytestmark = pytest.mark.slow  # kills and restarts of real gunicorn mid-batch

CONCURRENCY = 8


def wait_done(server, batch_id: str, timeout: float = 120.0) -> dict:
    return server.wait_batch(batch_id, timeout=timeout)


def completed_count(server, batch_id: str) -> int:
    try:
        return server.batch(batch_id)["request_counts"]["completed"]
    except (requests.RequestException, AssertionError, KeyError):
        return -1


def check_exactly_once(server, batch: dict, total: int, provider) -> dict:
    content = server.api("GET", f"/v1/files/{batch['output_file_id']}/content").content
    ids = [json.loads(line)["custom_id"] for line in content.splitlines()]
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    resent = sum(count - 1 for count in stats["by_content"].values())
    report = {
        "lines": total,
        "output_lines": len(ids),
        "lost": total - len(set(ids)),
        "duplicated": len(ids) - len(set(ids)),
        "resent_upstream": resent,
        "upstream_requests": stats["requests"],
    }
    print("\nfault report:", json.dumps(report))
    assert report["lost"] == 0 and report["duplicated"] == 0
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    return report


def wait_for_progress(server, batch_id: str, above: int, timeout: float = 60.0) -> int:
    """The batch's completed count once it passes ``above`` (a respawned worker has resumed):
    kills land mid-run however slowly a loaded machine boots workers."""
    return wait_until(
        lambda: (lambda done: done if done > above else 0)(completed_count(server, batch_id)),
        timeout,
        f"progress past {above} lines",
    )


def test_sigkill_workers_and_whole_server_mid_batch(gunicorn, provider, tmp_path):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": str(CONCURRENCY)}
    server = gunicorn(env, workers=2)
    total = 2000
    batch_id = server.start_batch(echo_lines(total, model="m"))
    rng = random.Random(7)
    kills, done = 0, 0
    for _ in range(3):  # SIGKILL every worker at a random moment of a run, three times
        done = wait_for_progress(server, batch_id, done)
        time.sleep(rng.uniform(0.1, 0.6))
        for pid in server.worker_pids():
            os.kill(pid, signal.SIGKILL)
        kills += 1
    before = wait_for_progress(server, batch_id, done)
    server.kill_all()  # the whole server, master included
    kills += 1
    assert 0 < before < total, "the batch should be mid-run when the server dies"
    server = gunicorn(env, workers=2, data_dir=server.data_dir)
    batch = wait_done(server, batch_id)
    report = check_exactly_once(server, batch, total, provider)
    # at most what was in flight at each kill is sent again (2 workers x CONCURRENCY each)
    assert report["resent_upstream"] <= kills * 2 * CONCURRENCY


def test_sigterm_hand_over(gunicorn, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": str(CONCURRENCY)}
    server = gunicorn(env, workers=1)
    total = 600
    batch_id = server.start_batch(echo_lines(total, model="m"))
    wait_for_progress(server, batch_id, 0)  # mid-run
    server.stop(signal.SIGTERM)  # graceful: in-flight requests finish, the lease is released
    server = gunicorn(env, workers=1, data_dir=server.data_dir)
    batch = wait_done(server, batch_id)
    report = check_exactly_once(server, batch, total, provider)
    assert report["resent_upstream"] == 0  # a graceful stop re-sends nothing


def test_max_requests_restarts_mid_batch_hand_over(gunicorn, provider):
    """gunicorn recycles a worker after --max-requests requests: the batch moves on to the
    new worker with nothing lost, duplicated or sent twice."""
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_CONCURRENCY": str(CONCURRENCY),
        "GUNICORN_CMD_ARGS": "--max-requests 5",
    }
    server = gunicorn(env, workers=1)
    first_pid = server.worker_pids()
    total = 600
    batch_id = server.start_batch(echo_lines(total, model="m"))
    batch = wait_done(server, batch_id)  # its status polls are what recycle the worker
    assert server.worker_pids() != first_pid, "the worker should have been recycled"
    leases = (server.data_dir / "proj-a" / "batches").glob(f"{batch_id}.lease.*")
    epochs = max(int(p.name.rsplit(".", 1)[1]) for p in leases)
    assert epochs >= 2, "the batch should have changed hands mid-run"
    report = check_exactly_once(server, batch, total, provider)
    print("claims (epochs):", epochs)
    assert report["resent_upstream"] == 0  # each recycled worker finished its in-flight


def test_two_instances_lease_mode_take_over(gunicorn, provider, tmp_path):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_CONCURRENCY": str(CONCURRENCY),
        "ZUMIK_CLAIM_MODE": "lease",
        "ZUMIK_LEASE_SECONDS": "2",
    }
    data_dir = tmp_path / "shared"
    first = gunicorn(env, workers=1, data_dir=data_dir)
    second = gunicorn(env, workers=1, data_dir=data_dir)
    total = 500
    batch_ids = [first.start_batch(echo_lines(total, model="m", prefix=f"b{i}-")) for i in range(2)]
    folder = data_dir / "proj-a" / "batches"

    def leases_now() -> list[list]:
        found = [sorted(folder.glob(f"{batch_id}.lease.*")) for batch_id in batch_ids]
        # both claimed, and each has made progress (its lease file is written whole)
        return found if all(found) and all(completed_count(first, b) > 0 for b in batch_ids) else []

    holders = {
        json.loads(leases[-1].read_text())["holder"]
        for leases in wait_until(leases_now, 30, "both batches claimed and running")
    }
    assert len(holders) == 2, "each instance should run one batch"
    first.kill_all()
    batches = [wait_done(second, batch_id) for batch_id in batch_ids]
    for batch in batches:
        content = second.api("GET", f"/v1/files/{batch['output_file_id']}/content").content
        ids = [json.loads(line)["custom_id"] for line in content.splitlines()]
        assert len(ids) == len(set(ids)) == total
        assert batch["request_counts"]["completed"] == total
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    resent = stats["requests"] - 2 * total  # (both batches carry the same contents)
    print(
        "\nfault report:",
        json.dumps(
            {
                "fault": "lease takeover",
                "lines": 2 * total,
                "lost": 0,
                "duplicated": 0,
                "resent_upstream": resent,
            }
        ),
    )
    assert resent <= CONCURRENCY  # only the killed instance's in-flight requests


def test_provider_faults_mid_batch(gunicorn, provider):
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_RETRY_BACKOFF": "0.05",
        "ZUMIK_REQUEST_TIMEOUT": "1",
        "ZUMIK_MAX_ATTEMPTS": "4",
    }
    requests.post(provider.url.replace("/v1", "/_control"), json={"hang_seconds": 3})
    server = gunicorn(env, workers=2)
    # every transient fault is ridden out; a line the provider keeps refusing (500) while it
    # answers the others fails on its own after its attempts
    kinds = [
        "#fail:429:2 #ra:0.2",
        "#fail:500:1",
        "#fail:502:3",
        "#fail:reset:2",
        "#fail:hang:1",
        "#fail:badjson:1",
        "#fail:500:9",
        "#fail:503:2",
        "fine",
    ]
    lines = [request_line(f"x{i}", f"{kinds[i % len(kinds)]} n{i}", "m") for i in range(162)]
    batch_id = server.start_batch(jsonl(lines))
    batch = wait_done(server, batch_id, timeout=90)
    content = server.api("GET", f"/v1/files/{batch['output_file_id']}/content").content
    out = {json.loads(x)["custom_id"]: json.loads(x) for x in content.splitlines()}
    content = server.api("GET", f"/v1/files/{batch['error_file_id']}/content").content
    failed = {json.loads(x)["custom_id"]: json.loads(x) for x in content.splitlines()}
    assert len(out) == 144 and len(failed) == 18 and not set(out) & set(failed)
    for i, line in enumerate(lines):
        if "#fail:500:9" in kinds[i % len(kinds)]:
            entry = failed[line["custom_id"]]  # the last answer, as the provider gave it
            assert entry["error"] is None and entry["response"]["status_code"] == 500
        else:
            entry = out[line["custom_id"]]
            assert entry["error"] is None and entry["response"]["status_code"] == 200
    assert batch["request_counts"]["failed"] == 18
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    print(
        "\nfault report:",
        json.dumps(
            {
                "fault": "provider faults",
                "lines": 162,
                "output_lines": len(out),
                "failed_as_meant": len(failed),
                "upstream_requests": stats["requests"],
            }
        ),
    )


def test_provider_restart_mid_batch_fails_no_line(gunicorn, provider):
    """The provider is killed for 20 s, then answers 503 for 15 s while "loading the model":
    its lines wait and resume; 0 failed, every line exactly once."""
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_CONCURRENCY": str(CONCURRENCY),
        "ZUMIK_PROVIDER_PROBE_MAX": "2",
    }
    server = gunicorn(env, workers=2)
    total = 600
    batch_id = server.start_batch(echo_lines(total, model="m"))
    wait_for_progress(server, batch_id, 49)
    started = time.time()
    provider.outage(20.0, 15.0)
    batch = wait_done(server, batch_id, timeout=150)
    report = check_exactly_once(server, batch, total, provider)
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    print(
        "provider restart:",
        json.dumps(
            {
                "down_s": 20,
                "unavailable_s": 15,
                "batch_after_outage_s": round(time.time() - started),
                "probes_answered_503": stats["statuses"].get("503"),
                **report,
            }
        ),
    )
    assert stats["statuses"].get("503", 0) >= 1  # probed while loading
    metrics = requests.get(server.url + "/metrics").text
    assert "zumik_provider_downs_total" in metrics and "zumik_provider_up{" in metrics


def test_provider_down_past_a_short_window_expires_the_batch(gunicorn, provider):
    env = {
        "ZUMIK_UPSTREAM_URL": provider.url,
        "ZUMIK_COMPLETION_WINDOW": "6",
        "ZUMIK_PROVIDER_PROBE_MAX": "1",
    }
    server = gunicorn(env, workers=1)
    provider.outage(600.0)  # never comes back within the test
    batch_id = server.start_batch(echo_lines(20, model="m"))
    batch = wait_done(server, batch_id, timeout=60)
    assert batch["status"] == "expired"
    assert batch["request_counts"] == {"total": 20, "completed": 0, "failed": 20}
    assert batch["output_file_id"] is None  # nothing succeeded: only an error file
    content = server.api("GET", f"/v1/files/{batch['error_file_id']}/content").content
    codes = [json.loads(line)["error"]["code"] for line in content.splitlines()]
    assert codes == ["batch_expired"] * 20


def test_a_poison_line_fails_alone(gunicorn, provider):
    env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_RETRY_BACKOFF": "0.05"}
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.02})
    server = gunicorn(env, workers=2)
    lines = [request_line(f"r{i}", f"message {i}", "m") for i in range(100)]
    lines[42] = request_line("poison", "#fail:500:100000", "m")
    batch = wait_done(server, server.start_batch(jsonl(lines)), timeout=60)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 100, "completed": 99, "failed": 1}
    content = server.api("GET", f"/v1/files/{batch['error_file_id']}/content").content
    [line] = [json.loads(x) for x in content.splitlines()]
    assert line["custom_id"] == "poison" and line["error"] is None
    assert line["response"]["status_code"] == 500  # the provider's last answer, as it gave it
