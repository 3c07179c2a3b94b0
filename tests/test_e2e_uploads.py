"""The Uploads API end to end on real gunicorn (2 workers) with the official ``openai`` SDK,
its responses validated strictly against the SDK's own types: ``upload_file_chunked`` as
shipped, and parts sent in parallel and out of order from a thread pool; each file then runs
as a batch and the results come back."""

from __future__ import annotations

import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from conftest import KEY_A, KEY_B, TERMINAL, echo_lines, wait_until

from zumik.storage.versioned import VersionedDoc

pytestmark = pytest.mark.slow  # the Uploads API on real gunicorn, an 8 MB upload


def sdk(server, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=key, max_retries=0, _strict_response_validation=True
    )


def run_batch(client: openai.OpenAI, file_id: str, lines: int) -> None:
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_until(
        lambda: (lambda b: b if b.status in TERMINAL else None)(client.batches.retrieve(batch.id)),
        60,
        f"batch {batch.id} to end",
        interval=0.1,
    )
    assert batch.status == "completed", batch
    results = [
        json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()
    ]
    assert sorted(r["custom_id"] for r in results) == sorted(f"r{i}" for i in range(lines))
    assert all(r["error"] is None for r in results)


@pytest.fixture
def server(gunicorn):
    return gunicorn()  # zumik-echo answers; parts hit both workers


def test_upload_file_chunked_then_batch(server, tmp_path):
    client = sdk(server)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(echo_lines(400))
    done = client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/jsonl",
        purpose="batch",
        part_size=9_000,
        md5=hashlib.md5(path.read_bytes()).hexdigest(),
    )
    assert done.status == "completed" and done.filename == "requests.jsonl"
    assert done.file is not None and done.file.bytes == path.stat().st_size
    assert client.files.content(done.file.id).content == path.read_bytes()
    run_batch(client, done.file.id, 400)
    in_memory = client.uploads.upload_file_chunked(
        file=echo_lines(3),
        filename="m.jsonl",
        bytes=len(echo_lines(3)),
        mime_type="application/jsonl",
        purpose="batch",
    )
    assert in_memory.file is not None and in_memory.file.filename == "m.jsonl"


def test_parallel_out_of_order_parts_then_batch(server):
    client = sdk(server)
    content = echo_lines(600)
    upload = client.uploads.create(
        bytes=len(content),
        filename="parallel.jsonl",
        mime_type="application/jsonl",
        purpose="batch",
    )
    assert upload.status == "pending" and upload.expires_at == upload.created_at + 3600
    chunks = [content[i : i + 4_000] for i in range(0, len(content), 4_000)]
    order = list(range(len(chunks)))
    random.Random(16).shuffle(order)
    with ThreadPoolExecutor(8) as pool:
        parts = dict(
            zip(
                order,
                pool.map(
                    lambda i: client.uploads.parts.create(upload_id=upload.id, data=chunks[i]),
                    order,
                ),
                strict=True,
            )
        )
    assert all(p.object == "upload.part" and p.upload_id == upload.id for p in parts.values())
    with pytest.raises(openai.NotFoundError):
        sdk(server, KEY_B).uploads.complete(upload.id, part_ids=[parts[0].id])
    done = client.uploads.complete(upload.id, part_ids=[parts[i].id for i in range(len(chunks))])
    assert done.status == "completed" and done.file is not None
    assert client.files.content(done.file.id).content == content
    run_batch(client, done.file.id, 600)
    with pytest.raises(openai.BadRequestError) as late:
        client.uploads.parts.create(upload_id=upload.id, data=b"more")
    assert late.value.code == "upload_completed"
    other = client.uploads.create(
        bytes=10, filename="x.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    assert client.uploads.cancel(other.id).status == "cancelled"


def test_server_killed_while_assembling_then_complete_again(gunicorn, tmp_path):
    """SIGKILL of the whole server while ``complete`` streams the parts into the new file: no
    half-written File ever shows, and after a restart the same complete finishes the upload
    with the file id it reserved."""
    data = tmp_path / "data"
    server = gunicorn(data_dir=data)
    client = sdk(server)
    content = echo_lines(20_000, prefix="k" * 300)  # ~8 MB: assembly takes a moment
    upload = client.uploads.create(
        bytes=len(content), filename="k.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    half = len(content) // 2
    part_ids = [
        client.uploads.parts.create(upload_id=upload.id, data=piece).id
        for piece in (content[:half], content[half:])
    ]
    files = data / "proj-a" / "files"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.uploads.complete, upload.id, part_ids=part_ids)
        wait_until(
            lambda: any(p.name.startswith(".tmp-") for p in files.iterdir()) or pending.done(),
            30,
            "the assembly's temp file",
            interval=0.002,
        )
        assert not pending.done(), "assembly never seen"
        server.kill_all()
        with pytest.raises(openai.APIConnectionError):
            pending.result()
    assert not list(files.glob("*.json"))  # no File was published
    restarted = sdk(gunicorn(data_dir=data))
    assert not any(p.name.startswith(".tmp-") for p in files.iterdir())  # swept at start-up
    done = restarted.uploads.complete(upload.id, part_ids=part_ids)
    reserved = VersionedDoc(data / "proj-a" / "uploads" / f"{upload.id}.json").read()
    assert done.status == "completed" and done.file is not None
    assert done.file.id == reserved["file_id"]
    assert restarted.files.content(done.file.id).content == content
    assert [f.id for f in restarted.files.list()] == [done.file.id]
    assert not list((data / "proj-a" / "uploads").glob("*.part_*"))
