"""Quotas bound storage, results included; what expires shows when, and is gone at that time.

Batches run through the real executor, driven step by step (``conftest.drive``)."""

from __future__ import annotations

import asyncio

import pytest
from conftest import AUTH_A, create_batch, drive, echo_lines, upload

from zumik.storage.janitor import Janitor

DAY = 86_400


def stored(app) -> tuple[int, int]:
    files_dir = app.extensions["zumik"].settings.data_dir / "proj-a" / "files"
    blobs = list(files_dir.glob("file-*.data"))
    return len(blobs), sum(p.stat().st_size for p in blobs)


def run_batches(app) -> None:
    asyncio.run(drive(app.extensions["zumik"].executor))


@pytest.mark.slow
def test_results_count_and_a_project_over_its_byte_quota_is_refused(make_app):
    """The issue's case: ZUMIK_MAX_FILES=10, ZUMIK_MAX_BYTES=20000, batches over one 16 KB
    input (12 of them once left 13 files and 244,970 bytes)."""
    app = make_app(max_files=10, max_bytes=20_000)
    client = app.test_client()
    content = echo_lines(100)
    assert 15_000 < len(content) < 17_000
    file_id = upload(client, content).get_json()["id"]
    answers = []
    for _ in range(12):
        answers.append(create_batch(client, file_id))
        run_batches(app)
    assert answers[0].status_code == 200  # 16 KB stored of 20 KB: room for a batch
    files, size = stored(app)
    first = client.get(f"/v1/batches/{answers[0].get_json()['id']}", headers=AUTH_A).get_json()
    output = client.get(f"/v1/files/{first['output_file_id']}", headers=AUTH_A).get_json()
    assert first["status"] == "completed" and output["bytes"] > 4_000  # the results, whole
    assert (files, size) == (2, len(content) + output["bytes"])  # over by one batch's results
    for refused in answers[1:]:
        assert refused.status_code == 400
        error = refused.get_json()["error"]
        assert error["code"] == "quota_exceeded"
        assert f"stores {size} of 20000 bytes" in error["message"]
    small = upload(client, echo_lines(1))
    assert (
        small.status_code == 400
        and f"stores {size} of 20000 bytes" in small.get_json()["error"]["message"]
    )
    # freeing space lets the project work again
    assert client.delete(f"/v1/files/{output['id']}", headers=AUTH_A).status_code == 200
    assert create_batch(client, file_id).status_code == 200


def test_running_batches_hold_file_slots_for_their_results(make_app):
    """Files never pass ZUMIK_MAX_FILES: each active batch holds two slots (output and error
    file) from its creation."""
    app = make_app(max_files=3)
    client = app.test_client()
    file_id = upload(client, echo_lines(3)).get_json()["id"]
    assert create_batch(client, file_id).status_code == 200  # 1 file + 2 held = 3
    refused = upload(client, echo_lines(1))
    assert refused.status_code == 400
    message = refused.get_json()["error"]["message"]
    assert "stores 1 of 3 files (+2 held for the results of running batches)" in message
    second = create_batch(client, file_id)
    assert second.status_code == 400 and "needs 2 more" in second.get_json()["error"]["message"]
    session = client.post(
        "/v1/uploads",
        headers=AUTH_A,
        json={
            "bytes": 10,
            "filename": "later.jsonl",
            "mime_type": "application/jsonl",
            "purpose": "batch",
        },
    )  # an Uploads API session counts as a file: no slot for it
    assert session.status_code == 400
    assert session.get_json()["error"]["code"] == "quota_exceeded"
    run_batches(app)  # the batch publishes its output (no failures: no error file)
    assert stored(app)[0] == 2
    assert upload(client, echo_lines(1)).status_code == 200  # its unused slot is free again
    assert stored(app)[0] == 3
    assert create_batch(client, file_id).status_code == 400


def test_an_input_shows_when_it_will_be_reclaimed_and_records_expire_at_once(make_app, settings):
    now = [1_800_000_000.0]
    app = make_app(clock=lambda: now[0])
    client = app.test_client()
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()["expires_at"] is None
    first = create_batch(client, file_id).get_json()["id"]
    run_batches(app)
    ended = client.get(f"/v1/batches/{first}", headers=AUTH_A).get_json()["completed_at"]
    meta = client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()
    assert meta["expires_at"] == ended + settings.batch_ttl  # with the batch record
    now[0] += 3 * DAY
    second = create_batch(client, file_id).get_json()["id"]  # in use again: no expiry
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()["expires_at"] is None
    run_batches(app)
    second_ended = client.get(f"/v1/batches/{second}", headers=AUTH_A).get_json()["completed_at"]
    assert (
        client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()["expires_at"]
        == second_ended + settings.batch_ttl
    )
    # the first record is gone the second its TTL passes, before any sweep
    now[0] = ended + settings.batch_ttl
    assert client.get(f"/v1/batches/{first}", headers=AUTH_A).status_code == 404
    listed = client.get("/v1/batches", headers=AUTH_A).get_json()["data"]
    assert [b["id"] for b in listed] == [second]
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 200
    # at the input's expires_at, it and the last record go together, as announced
    now[0] = second_ended + settings.batch_ttl
    assert client.get(f"/v1/batches/{second}", headers=AUTH_A).status_code == 404
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 404
    swept = Janitor(settings, clock=lambda: now[0]).sweep()
    assert swept["batches"] == 2
    assert not (settings.data_dir / "proj-a" / "files" / f"{file_id}.data").exists()
