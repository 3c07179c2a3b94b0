"""The curl examples of ``docs/curl.md`` (the seeds' own, as written) and of the README run
against real gunicorn with only the host, key and ids substituted, as a user would paste them."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import AUTH_A, KEY_A, ROOT, echo_lines

pytestmark = pytest.mark.slow  # the documented curl examples against real gunicorn

BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def bash_blocks(markdown: Path) -> list[str]:
    return BLOCK.findall(markdown.read_text(encoding="utf-8"))


def documents(text: str) -> tuple[list[Any], str]:
    """The JSON values printed one after another, and whatever follows the last one."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return docs, ""
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return docs, text[pos:]
        docs.append(value)


def prepare(url: str) -> dict[str, str]:
    """A batch input, a finished batch over it and its output: the ids the docs leave blank."""
    file_id = requests.post(
        url + "/v1/files",
        headers=AUTH_A,
        files={"file": ("requests.jsonl", echo_lines(2))},
        data={"purpose": "batch"},
    ).json()["id"]
    batch = requests.post(
        url + "/v1/batches",
        headers=AUTH_A,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()
    deadline = time.time() + 30
    while batch["status"] != "completed":
        assert time.time() < deadline, batch
        time.sleep(0.1)
        batch = requests.get(f"{url}/v1/batches/{batch['id']}", headers=AUTH_A).json()
    return {"file": file_id, "batch": batch["id"], "output": batch["output_file_id"]}


def run_block(block: str, url: str, ids: dict[str, str], cwd: Path) -> tuple[list[Any], str]:
    for placeholder, value in (
        ("http://127.0.0.1:8080", url),
        ("zk_live_...", KEY_A),
        ("zk_...", KEY_A),
        ("file-9f2a...", ids["file"]),
        ("batch_01jy7n3q8v6m4k2x...", ids["batch"]),
        ("<output_file_id>", ids["output"]),
        ("file-...", ids["file"]),
        ("batch_...", ids["batch"]),
    ):
        block = block.replace(placeholder, value)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, (block, done.stderr)
    docs, rest = documents(done.stdout)
    errors = [d for d in docs if isinstance(d, dict) and "error" in d and d["error"]]
    assert errors == [], block
    return docs, rest


@pytest.fixture
def server(gunicorn):
    return gunicorn()  # built-in defaults: no provider, zumik-echo answers


def test_docs_curl_examples_run_as_written(server, tmp_path):
    blocks = bash_blocks(ROOT / "docs" / "curl.md")
    ids = prepare(server.url)
    outputs = {block: run_block(block, server.url, ids, tmp_path) for block in blocks}

    def output_of(marker: str) -> tuple[list[Any], str]:
        (found,) = [out for block, out in outputs.items() if marker in block]
        return found

    (uploaded,), _ = output_of("  -F purpose=batch \\\n")
    assert uploaded["object"] == "file" and uploaded["filename"] == "requests.jsonl"
    content, _ = output_of('/content \\\n  -H "Authorization')
    assert [line["custom_id"] for line in content] == ["r0", "r1"]
    (created,), _ = output_of('-d \'{"input_file_id"')
    assert created["status"] == "validating" and created["completion_window"] == "24h"
    assert created["metadata"] == {} and created["request_counts"]["total"] == 2
    (one, listing), ranged = output_of("Range: bytes=0-99")
    assert one["id"] == ids["file"] and listing["object"] == "list"
    assert ranged == echo_lines(2)[:100].decode()
    (batch, batches, cancelled), _ = output_of("/batches/batch_01jy7n3q8v6m4k2x.../cancel")
    assert batch["id"] == cancelled["id"] == ids["batch"] and cancelled["status"] == "completed"
    assert batches["data"][0]["object"] == "batch"
    (completed, gave_up), _ = output_of("/v1/uploads")
    assert completed["status"] == "completed" and completed["file"]["bytes"] == completed["bytes"]
    assert completed["file"]["filename"] == "requests.jsonl"
    assert gave_up["object"] == "upload" and gave_up["status"] == "cancelled"
    (first, again), _ = output_of("Idempotency-Key")
    assert first["id"] == again["id"]
    models, openapi, health = output_of("/v1/models")[0]
    assert "zumik-echo" in [m["id"] for m in models["data"]]
    assert openapi["openapi"].startswith("3.1") and health["status"] == "ok"
    assert "# TYPE zumik_" in output_of("/metrics")[1]
    embedded, _ = output_of("embeddings.jsonl")
    assert [line["custom_id"] for line in embedded] == ["doc-1", "doc-2"]
    vectors = [item["embedding"] for line in embedded for item in line["response"]["body"]["data"]]
    assert len(vectors) == 3 and all(len(v) == 32 for v in vectors)
    (deleted,), _ = output_of("-X DELETE")
    assert deleted == {"id": ids["file"], "object": "file", "deleted": True}


def test_readme_curl_flow_runs_as_written(server, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The whole flow with curl", 1)[1].split("\n## ", 1)[0]
    (block,) = BLOCK.findall(section)
    ids = prepare(server.url)
    # The flow creates a batch over the file it deletes at the end; a user polls it until it
    # ends (or cancels it and waits for "cancelled") first, as the comments say: so does this
    # test, or the delete meets 409 file_in_use whenever the machine is slow.
    create, end = block.split("# cancel a running batch", 1)
    docs, rest = run_block(create, server.url, ids, tmp_path)
    assert rest == ""
    (created,) = [d for d in docs if d.get("object") == "batch" and d["id"] != ids["batch"]]
    deadline = time.time() + 60
    while created["status"] not in ("completed", "failed", "cancelled", "expired"):
        assert time.time() < deadline, created
        time.sleep(0.1)
        created = requests.get(f"{server.url}/v1/batches/{created['id']}", headers=AUTH_A).json()
    key_line = block.splitlines()[0]  # KEY=zk_...
    assert key_line.startswith("KEY=")
    more, rest = run_block(f"{key_line}\n# cancel a running batch{end}", server.url, ids, tmp_path)
    assert rest == ""
    docs += more
    kinds = [d.get("object") for d in docs if isinstance(d, dict)]
    assert kinds.count("file") >= 4 and kinds.count("batch") >= 3 and "list" in kinds
    assert docs[-1]["status"] == "ok"  # healthz, after the delete
