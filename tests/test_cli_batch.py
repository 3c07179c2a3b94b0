"""``zumik batch`` against real gunicorn: run with progress, status, list, download, cancel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import AUTH_A, KEY_A, echo_lines, jsonl, request_line
from dropping_proxy import DroppingProxy

from zumik.cli.batch import errors_path, progress_line

pytestmark = pytest.mark.slow  # the CLI as a subprocess against real gunicorn


def zumik(server, *args, timeout=60):
    env = {"OPENAI_BASE_URL": server.url + "/v1", "OPENAI_API_KEY": KEY_A, "PATH": "/usr/bin"}
    return subprocess.run(
        [sys.executable, "-m", "zumik.cli", "batch", "--interval", "0.2", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_batch_run_status_list_download(gunicorn, tmp_path):
    server = gunicorn()
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(echo_lines(12, model="placeholder"))
    out = tmp_path / "answers.jsonl"
    result = zumik(server, "run", str(source), "--model", "zumik-echo", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stderr and "12/12" in result.stderr and "/s" in result.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(12))
    batch_id = result.stderr.split()[1]
    listed = zumik(server, "list")
    assert batch_id in listed.stdout and "completed" in listed.stdout
    shown = json.loads(zumik(server, "status", batch_id).stdout)
    assert shown["request_counts"]["completed"] == 12
    again = tmp_path / "again.jsonl"
    assert zumik(server, "download", batch_id, "--out", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    assert "completed" in zumik(server, "cancel", batch_id).stdout
    failed = zumik(server, "run", str(source), "--out", str(tmp_path / "x.jsonl"))
    assert failed.returncode == 3 and "model_not_found" in failed.stderr  # did not complete


def test_batch_run_exits_1_when_a_line_failed_and_names_the_error_file(
    gunicorn, provider, tmp_path
):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_MAX_ATTEMPTS": "1"})
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(
        jsonl([request_line("ok", "fine", "m1"), request_line("bad", "#fail:400:99", "m1")])
    )
    result = zumik(server, "run", str(source), "--out", str(tmp_path / "r2.out"))
    assert result.returncode == 1, result.stderr
    errors = tmp_path / "r2.errors.jsonl"
    assert f"failed lines: {errors}" in result.stdout
    assert [json.loads(x)["custom_id"] for x in errors.read_text().splitlines()] == ["bad"]
    assert [json.loads(x)["custom_id"] for x in (tmp_path / "r2.out").read_text().splitlines()] == [
        "ok"
    ]
    assert "1  the batch completed, but some lines failed" in zumik(server, "run", "--help").stdout


def test_batch_run_of_a_missing_file_is_one_line(gunicorn, tmp_path):
    result = zumik(gunicorn(), "run", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2
    assert result.stderr == f"zumik: {tmp_path / 'missing.jsonl'}: no such file\n"


def test_errors_path_rule():
    assert errors_path(Path("r2.out")) == Path("r2.errors.jsonl")
    assert errors_path(Path("d/prompts.results.jsonl")) == Path("d/prompts.errors.jsonl")
    assert errors_path(Path("answers.jsonl")) == Path("answers.errors.jsonl")
    assert errors_path(Path("results")) == Path("results.errors.jsonl")


def test_missing_key_is_a_clear_error(gunicorn):
    result = subprocess.run(
        [sys.executable, "-m", "zumik.cli", "batch", "list"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin"},
    )
    assert result.returncode != 0 and "OPENAI_API_KEY" in result.stderr


def test_progress_line_shows_counts_rate_and_eta():
    batch = {
        "status": "in_progress",
        "request_counts": {"total": 100, "completed": 40, "failed": 10},
    }
    line = progress_line(batch, started=0.0, now=10.0)
    assert "50/100" in line and "failed 10" in line and "5.0/s" in line and "ETA 10s" in line


def test_batch_run_survives_lost_answers_without_duplicates(gunicorn, tmp_path):
    """The CLI retries a create whose answer was lost, with one Idempotency-Key per call."""
    server = gunicorn()
    proxy = DroppingProxy(server.port)
    try:
        proxy.drop(2)  # the upload's answer, then the retried upload's
        source = tmp_path / "prompts.jsonl"
        source.write_bytes(echo_lines(5))
        result = zumik(Proxied(proxy.url), "run", str(source), "--out", str(tmp_path / "out.jsonl"))
        assert result.returncode == 0, result.stderr
        assert proxy.dropped == 2
        files = requests.get(server.url + "/v1/files?purpose=batch", headers=AUTH_A).json()
        assert len(files["data"]) == 1  # three attempts, one file
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
    finally:
        proxy.close()


class Proxied:
    def __init__(self, url: str) -> None:
        self.url = url
