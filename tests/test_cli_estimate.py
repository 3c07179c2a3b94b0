"""``zumik batch estimate FILE`` and ``zumik batch run --max-tokens/--priority/--window``
against real gunicorn (issue 25)."""

from __future__ import annotations

import json

import requests
from conftest import AUTH_A, echo_lines
from test_cli_batch import zumik


def test_estimate_then_run_with_a_budget_priority_and_window(gunicorn, tmp_path):
    server = gunicorn()
    source = tmp_path / "prompts.jsonl"
    source.write_bytes(echo_lines(12))
    shown = zumik(server, "estimate", str(source))
    assert shown.returncode == 0, shown.stderr
    assert "lines:         12" in shown.stdout and "heuristic" in shown.stdout
    assert "no prices" in shown.stdout
    as_json = json.loads(zumik(server, "estimate", str(source), "--json").stdout)
    assert as_json["object"] == "batch.estimate" and as_json["lines"] == 12
    files = requests.get(server.url + "/v1/files", headers=AUTH_A, timeout=10).json()["data"]
    assert files == []  # the upload made for the estimate is deleted again
    kept = zumik(server, "estimate", str(source), "--keep")
    file_id = kept.stderr.split()[-1]
    assert json.loads(zumik(server, "estimate", file_id, "--json").stdout)["lines"] == 12

    out = tmp_path / "answers.jsonl"
    run = zumik(
        server,
        "run",
        str(source),
        "--out",
        str(out),
        "--max-tokens",
        "100000",
        "--priority",
        "high",
        "--window",
        "2h",
    )
    assert run.returncode == 0, run.stderr
    batch_id = run.stderr.split()[1]
    batch = json.loads(zumik(server, "status", batch_id).stdout)
    assert batch["priority"] == "high" and batch["max_total_tokens"] == 100000
    assert batch["completion_window"] == "2h"
    assert batch["expires_at"] == batch["created_at"] + 7200
    refused = zumik(server, "run", str(source), "--window", "0h")
    assert refused.returncode != 0 and "completion_window" in refused.stderr
