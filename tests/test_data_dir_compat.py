"""An existing data dir keeps working: today's on-disk format, written here by hand (not by
Zumik's code, so a change to the format cannot change the fixture with it), read and run by
the current code through the API.

The format as of the layout change (issue 21): ``keys.json`` + ``keys.v2.json`` (versioned,
sha256 digests of the keys), ``webhooks.json`` + ``.v2``, and under ``proj-a/``: a file's
``.json`` metadata and ``.data`` content, a batch record ``v1`` (validating) + ``v2``
(in_progress) with an ``active/`` marker, a journal segment of claim epoch 1 and its lease (the
claimer died mid-run), a finished batch with its outbox entry not yet delivered, and a
pending upload's record.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from conftest import request_line, wait_batch, wait_until
from test_dashboard import token_of
from webhook_receiver import Receiver

from zumik import create_app
from zumik.settings import load_settings

KEY = "zk_legacy-key-made-before-the-layout-change"
PROJECT = "proj-a"
FILE_ID = "file-01a234ff8fe872f12c5d7c36"
RUNNING = "batch_01a234ff9020f18fc20e85ea"
DONE = "batch_01a234ff9020f18fc20e85eb"
UPLOAD_ID = "upload_01a234ff9043f896517da732"
ENDPOINT_ID = "we_868a0c67ceb74401c481455d"
SECRET = "whsec_xbUL3hLcRl5+/wwaE/Q9DhmJiCwzK8C/QAZm12jEhBU="
WEBHOOK_ID = "wh_" + "0123456789abcdef" * 2
NOW = 1796185493
UPLOADED = json.dumps(request_line("u0"), separators=(",", ":")).encode() + b"\n"


def compact(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def batch_record(batch_id: str, status: str, **changes: object) -> dict:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "model": None,
        "errors": None,
        "input_file_id": FILE_ID,
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": NOW,
        "in_progress_at": None,
        "expires_at": NOW + 86_400 * 400,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 3, "completed": 0, "failed": 0},
        "metadata": {"made": "by hand"},
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        },
        "cost": None,
        **changes,
    }


def write_todays_data_dir(data: Path, receiver_url: str) -> bytes:
    """Today's format, by hand. Returns the input file's content."""
    project = data / PROJECT
    for folder in ("files", "batches", "active", "uploads", "outbox"):
        (project / folder).mkdir(parents=True)
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    (data / "keys.json").write_bytes(b"{}")
    (data / "keys.v2.json").write_bytes(
        compact({digest: {"project": PROJECT, "created_at": NOW, "hint": "zk_lega..."}})
    )
    (data / "webhooks.json").write_bytes(b"{}")
    (data / "webhooks.v2.json").write_bytes(
        compact(
            {
                ENDPOINT_ID: {
                    "project": PROJECT,
                    "url": receiver_url,
                    "events": ["batch.completed", "batch.failed", "batch.expired"],
                    "created_at": NOW,
                    "secrets": [{"secret": SECRET, "created_at": NOW, "expires_at": None}],
                }
            }
        )
    )
    content = b"".join(compact(request_line(f"r{i}", f"message {i}")) + b"\n" for i in range(3))
    (project / "files" / f"{FILE_ID}.data").write_bytes(content)
    (project / "files" / f"{FILE_ID}.json").write_bytes(
        compact(
            {
                "id": FILE_ID,
                "object": "file",
                "bytes": len(content),
                "created_at": NOW,
                "filename": "in.jsonl",
                "purpose": "batch",
                "status": "processed",
                "status_details": None,
                "expires_at": None,
                "requests": 3,
            }
        )
    )
    # The running batch: v1 as created, v2 once its claimer started it; that claimer (epoch 1)
    # journalled line 1 and died.
    batches = project / "batches"
    (batches / f"{RUNNING}.json").write_bytes(compact(batch_record(RUNNING, "validating")))
    (batches / f"{RUNNING}.v2.json").write_bytes(
        compact(batch_record(RUNNING, "in_progress", in_progress_at=NOW + 1, model="zumik-echo"))
    )
    (project / "active" / RUNNING).write_bytes(b"")
    done_line = {
        "id": "batch_req_0123456789abcdef01234567",
        "custom_id": "r0",
        "response": {
            "status_code": 200,
            "request_id": "req_0123456789abcdef",
            "body": {"object": "chat.completion", "model": "zumik-echo", "choices": []},
        },
        "error": None,
    }
    (batches / f"{RUNNING}.1.jsonl").write_bytes(b"1\t" + compact(done_line) + b"\n")
    lease = {
        "epoch": 1,
        "holder": "gone-host.00000000@1",
        "token": "0123456789abcdef",
        "beat": 3,
        "heartbeat": NOW + 3,
        "released": False,
    }
    (batches / f"{RUNNING}.lease.1").write_bytes(compact(lease).ljust(256, b" "))
    # The finished batch and its webhook, not yet delivered.
    (batches / f"{DONE}.json").write_bytes(
        compact(
            batch_record(
                DONE,
                "completed",
                in_progress_at=NOW + 1,
                finalizing_at=NOW + 2,
                completed_at=NOW + 3,
                request_counts={"total": 3, "completed": 3, "failed": 0},
            )
        )
    )
    body = compact(
        {
            "id": "evt_" + "fedcba9876543210" * 2,
            "object": "event",
            "type": "batch.completed",
            "created_at": NOW + 3,
            "data": {"id": DONE},
        }
    ).decode()
    (project / "outbox" / f"{WEBHOOK_ID}.json").write_bytes(
        compact(
            {
                "webhook_id": WEBHOOK_ID,
                "endpoint_id": ENDPOINT_ID,
                "batch_id": DONE,
                "type": "batch.completed",
                "body": body,
                "enqueued_at": NOW + 3,
                "attempts": 0,
                "next_at": NOW + 3,
            }
        )
    )
    (project / "uploads" / f"{UPLOAD_ID}.json").write_bytes(
        compact(
            {
                "id": UPLOAD_ID,
                "object": "upload",
                "bytes": len(UPLOADED),
                "created_at": NOW,
                "expires_at": NOW + 86_400 * 400,
                "filename": "u.jsonl",
                "purpose": "batch",
                "status": "pending",
                "file": None,
                "mime_type": "application/jsonl",
                "file_expires_after": None,
                "file_id": None,
            }
        )
    )
    return content


def test_a_data_dir_in_todays_format_is_read_and_run_by_the_new_code(tmp_path: Path) -> None:
    receiver = Receiver([SECRET]).start()
    try:
        data = tmp_path / "data"
        content = write_todays_data_dir(data, receiver.url)
        settings = load_settings({}, data_dir=data, poll_interval=0.05, webhook_poll_interval=0.1)
        app = create_app(settings, start_executor=True)
        try:
            client = app.test_client()
            auth = {"Authorization": f"Bearer {KEY}"}  # the key from keys.json
            meta = client.get(f"/v1/files/{FILE_ID}", headers=auth)
            assert meta.status_code == 200 and meta.get_json()["bytes"] == len(content)
            assert client.get(f"/v1/files/{FILE_ID}/content", headers=auth).data == content
            listed = client.get("/v1/batches", headers=auth).get_json()["data"]
            assert {b["id"] for b in listed} == {RUNNING, DONE}
            done = client.get(f"/v1/batches/{DONE}", headers=auth).get_json()
            assert done["status"] == "completed" and done["metadata"] == {"made": "by hand"}
            # the dashboard shows a record written before budgets and priority existed
            token = token_of(client.get("/dashboard/signin"))
            client.post("/dashboard/signin", data={"csrf_token": token, "key": KEY})
            page = client.get(f"/dashboard/batches/{DONE}")
            assert page.status_code == 200 and b"by hand" in page.data, page.status_code
            # the batch its dead claimer left mid-run is taken over and finishes, line 1 kept
            # from the journal (not sent again), lines 2 and 3 run now
            record = wait_batch(client, RUNNING, auth=auth)
            assert record["status"] == "completed", record
            assert record["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
            output = client.get(f"/v1/files/{record['output_file_id']}/content", headers=auth)
            lines = {json.loads(x)["custom_id"]: json.loads(x) for x in output.data.splitlines()}
            assert sorted(lines) == ["r0", "r1", "r2"]
            assert lines["r0"]["id"] == "batch_req_0123456789abcdef01234567"
            # the pending upload takes its part and completes into a file
            part = client.post(
                f"/v1/uploads/{UPLOAD_ID}/parts",
                headers=auth,
                data={"data": (io.BytesIO(UPLOADED), "part")},
                content_type="multipart/form-data",
            )
            assert part.status_code == 200, part.get_json()
            completed = client.post(
                f"/v1/uploads/{UPLOAD_ID}/complete",
                headers=auth,
                json={"part_ids": [part.get_json()["id"]]},
            )
            assert completed.status_code == 200, completed.get_json()
            made = completed.get_json()["file"]
            assert completed.get_json()["status"] == "completed" and made["filename"] == "u.jsonl"
            assert client.get(f"/v1/files/{made['id']}/content", headers=auth).data == UPLOADED
            # the outbox entry is delivered as written: its id, its signed body
            delivery = wait_until(
                lambda: next(
                    (d for d in receiver.deliveries if d.headers.get("webhook-id") == WEBHOOK_ID),
                    None,
                ),
                30,
                "the outbox entry's delivery",
            )
            assert delivery.verified_with == [SECRET]
            assert json.loads(delivery.body)["data"] == {"id": DONE}
        finally:
            app.extensions["zumik"].executor.stop()
    finally:
        receiver.stop()
