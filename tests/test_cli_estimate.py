"""``zumik batch estimate FILE`` and ``zumik batch run --max-tokens/--priority/--window``
against real gunicorn (issue 25)."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import AUTH_A, KEY_A, echo_lines
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


def test_the_readme_sdk_calls(gunicorn, tmp_path):
    """``client.post(f"/files/{id}/estimate", ...)`` and ``extra_body`` as the README shows."""
    import openai

    server = gunicorn()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY_A, max_retries=0)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(echo_lines(5))
    batch_input = client.files.create(file=path, purpose="batch")
    estimate = client.post(
        f"/files/{batch_input.id}/estimate",
        body={"endpoint": "/v1/chat/completions"},
        cast_to=object,
    )
    assert estimate["object"] == "batch.estimate" and estimate["lines"] == 5
    batch = client.batches.create(
        input_file_id=batch_input.id,
        endpoint="/v1/chat/completions",
        completion_window="4h",
        extra_body={"max_total_tokens": 2_000_000, "priority": "high"},
    )
    assert batch.model_extra["priority"] == "high"
    assert batch.model_extra["max_total_tokens"] == 2_000_000
    assert batch.expires_at == batch.created_at + 4 * 3600
    with pytest.raises(openai.BadRequestError, match="max_cost"):
        client.batches.create(
            input_file_id=batch_input.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"max_cost": 5.0},  # the echo model has no price
        )
