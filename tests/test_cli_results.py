"""``zumik batch results --follow``, ``retry --wait`` and ``download --merged`` against real
gunicorn with the fake provider."""

from __future__ import annotations

import json
import subprocess
import sys

import requests
from conftest import AUTH_A, KEY_A, jsonl, request_line


def zumik(server, *args, timeout=120, popen=False):
    env = {"OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": KEY_A, "PATH": "/usr/bin"}
    cmd = [sys.executable, "-m", "zumik.cli", "batch", "--interval", "0.2", *args]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_follow_results_then_retry_wait_and_merged_download(gunicorn, provider, tmp_path):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "2"})
    total = 80
    lines = [
        request_line(f"r{i}", f"message {i}" + (" #fail:400:1" if i % 10 == 4 else ""), "m")
        for i in range(total)
    ]
    file_id = requests.post(
        server.url + "/v1/files", headers=AUTH_A, files={"file": ("job.jsonl", jsonl(lines))}
    ).json()["id"]
    batch_id = requests.post(
        server.url + "/v1/batches",
        headers=AUTH_A,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()["id"]
    follower = zumik(server, "results", batch_id, "--follow", popen=True)
    stdout, stderr = follower.communicate(timeout=120)
    assert follower.returncode == 0, stderr
    printed = [json.loads(x) for x in stdout.splitlines()]
    assert sorted(x["custom_id"] for x in printed) == sorted(f"r{i}" for i in range(total))
    batch = requests.get(server.url + f"/v1/batches/{batch_id}", headers=AUTH_A).json()
    assert batch["status"] == "completed" and batch["request_counts"]["failed"] == 8

    failed = zumik(server, "results", batch_id, "--outcome", "failed")
    assert len(failed.stdout.splitlines()) == 8

    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.0})
    out = tmp_path / "retry.jsonl"
    retried = zumik(server, "retry", batch_id, "--lines", "failed", "--wait", "--out", str(out))
    assert retried.returncode == 0, retried.stderr
    assert "retries 8 lines" in retried.stderr
    assert len(out.read_text().splitlines()) == 8

    merged = tmp_path / "all.jsonl"
    done = zumik(server, "download", batch_id, "--merged", "--out", str(merged))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in merged.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in rows) == sorted(f"r{i}" for i in range(total))
    assert all(x["response"]["status_code"] == 200 for x in rows)
    assert (tmp_path / "all.errors.jsonl").read_text() == ""
    plain = zumik(server, "download", batch_id, "--out", str(tmp_path / "plain.jsonl"))
    assert plain.returncode == 0 and len((tmp_path / "plain.jsonl").read_text().splitlines()) == 72
