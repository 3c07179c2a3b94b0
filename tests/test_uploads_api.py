"""The Uploads API on the app (Flask test client): parts in any order assemble into a normal
File, checked like a direct upload; size and checksum mismatches, cancel, expiry, quota,
isolation and a repeated complete."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from conftest import AUTH_A, AUTH_B, echo_lines, upload

from zumik.storage.janitor import Janitor
from zumik.storage.store import ProjectStore
from zumik.storage.upload_sessions import UploadSessions
from zumik.storage.versioned import VersionedDoc

CONTENT = echo_lines(60)


def create(client, nbytes: int = len(CONTENT), auth=AUTH_A, **extra):
    return client.post(
        "/v1/uploads",
        headers=auth,
        json={
            "bytes": nbytes,
            "filename": "big.jsonl",
            "mime_type": "application/jsonl",
            "purpose": "batch",
            **extra,
        },
    )


def add_part(client, upload_id: str, data: bytes, auth=AUTH_A):
    return client.post(
        f"/v1/uploads/{upload_id}/parts",
        headers=auth,
        data={"data": (io.BytesIO(data), "upload")},
        content_type="multipart/form-data",
    )


def complete(client, upload_id: str, part_ids: list[str], auth=AUTH_A, **extra):
    return client.post(
        f"/v1/uploads/{upload_id}/complete", headers=auth, json={"part_ids": part_ids, **extra}
    )


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def send_parts(client, upload_id: str, chunks: list[bytes]) -> list[str]:
    """Send the parts last first; return their ids in file order."""
    ids = [add_part(client, upload_id, chunk).get_json()["id"] for chunk in reversed(chunks)]
    return ids[::-1]


def uploads_dir(settings, project: str = "proj-a") -> Path:
    return settings.data_dir / project / "uploads"


def stored(settings, project: str = "proj-a") -> list[str]:
    return sorted(
        p.name
        for p in (settings.data_dir / project).rglob("*")
        if p.is_file() and not p.name.endswith(".lock")
    )


def test_parts_in_any_order_assemble_into_a_file(client, settings):
    created = create(client)
    assert created.status_code == 200, created.text
    up = created.get_json()
    assert up["object"] == "upload" and up["status"] == "pending" and up["file"] is None
    assert up["id"].startswith("upload_") and up["bytes"] == len(CONTENT)
    assert up["expires_at"] == up["created_at"] + 3600
    part = add_part(client, up["id"], CONTENT[:10]).get_json()
    assert set(part) == {"id", "object", "created_at", "upload_id"}
    assert part["object"] == "upload.part" and part["upload_id"] == up["id"]
    part_ids = [part["id"], *send_parts(client, up["id"], pieces(CONTENT[10:], 1500))]
    done = complete(client, up["id"], part_ids, md5=hashlib.md5(CONTENT).hexdigest())
    assert done.status_code == 200, done.text
    finished = done.get_json()
    assert finished["status"] == "completed" and finished["id"] == up["id"]
    file = finished["file"]
    assert file["object"] == "file" and file["bytes"] == len(CONTENT)
    assert file["filename"] == "big.jsonl" and file["purpose"] == "batch"
    assert file["status"] == "processed"
    assert client.get(f"/v1/files/{file['id']}", headers=AUTH_A).get_json() == file
    assert client.get(f"/v1/files/{file['id']}/content", headers=AUTH_A).data == CONTENT
    left = sorted(p.name for p in uploads_dir(settings).iterdir())  # the record's versions
    assert (
        left[0] == up["id"] + ".json"
        and all(  # (zumik.versioned), no part
            n.startswith(up["id"] + ".v") and n.endswith(".json") for n in left[1:]
        )
    )
    again = complete(client, up["id"], part_ids)  # a retried complete: the same upload
    assert again.status_code == 200 and again.get_json() == finished
    assert len(client.get("/v1/files", headers=AUTH_A).get_json()["data"]) == 1


def test_size_mismatch_is_a_clear_400_and_the_upload_stays_usable(client):
    up = create(client).get_json()
    chunks = pieces(CONTENT, 2000)
    part_ids = send_parts(client, up["id"], chunks[:-1])
    short = complete(client, up["id"], part_ids)
    assert short.status_code == 400
    error = short.get_json()["error"]
    assert error["code"] == "bytes_mismatch" and error["param"] == "part_ids"
    assert f"add up to {len(CONTENT) - len(chunks[-1])} bytes" in error["message"]
    assert f"bytes={len(CONTENT)}" in error["message"]
    last = add_part(client, up["id"], chunks[-1]).get_json()["id"]
    unknown = complete(client, up["id"], [*part_ids, "part_" + "0" * 24])
    assert (
        unknown.status_code == 400 and "No part part_000" in unknown.get_json()["error"]["message"]
    )
    done = complete(client, up["id"], [*part_ids, last])
    assert done.status_code == 200 and done.get_json()["status"] == "completed"


def test_bad_jsonl_gets_the_direct_upload_error_and_no_file(client, settings):
    bad = CONTENT + b'{"custom_id": "r0", "method": "POST"}\n'  # a duplicate custom_id, too
    direct = upload(client, bad)
    assert direct.status_code == 400
    up = create(client, len(bad)).get_json()
    part_ids = send_parts(client, up["id"], pieces(bad, 3000))
    assembled = complete(client, up["id"], part_ids)
    assert assembled.status_code == 400
    assert assembled.get_json() == direct.get_json()
    assert client.get("/v1/files", headers=AUTH_A).get_json()["data"] == []
    assert not [n for n in stored(settings) if n.startswith(".tmp-")]
    assert len(list(uploads_dir(settings).glob(up["id"] + ".part_*"))) == len(part_ids)


def test_md5_mismatch_is_refused(client):
    up = create(client).get_json()
    part_ids = send_parts(client, up["id"], [CONTENT])
    wrong = complete(client, up["id"], part_ids, md5="0" * 32)
    assert wrong.status_code == 400 and wrong.get_json()["error"]["param"] == "md5"
    assert complete(client, up["id"], part_ids).status_code == 200


def test_cancel_frees_the_parts_and_refuses_more(client, settings):
    up = create(client).get_json()
    part_ids = send_parts(client, up["id"], pieces(CONTENT, 4000))
    assert len(list(uploads_dir(settings).glob("*.part_*"))) == len(part_ids)
    cancelled = client.post(f"/v1/uploads/{up['id']}/cancel", headers=AUTH_A)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert list(uploads_dir(settings).glob("*.part_*")) == []
    late = add_part(client, up["id"], b"x")
    assert late.status_code == 400 and late.get_json()["error"]["code"] == "upload_cancelled"
    assert complete(client, up["id"], part_ids).status_code == 400
    again = client.post(f"/v1/uploads/{up['id']}/cancel", headers=AUTH_A)
    assert again.status_code == 200 and again.get_json()["status"] == "cancelled"


def test_an_expired_upload_refuses_parts_and_the_janitor_frees_them(make_app, settings):
    now = [1_800_000_000.0]
    client = make_app(clock=lambda: now[0]).test_client()
    up = create(client).get_json()
    assert up["expires_at"] == 1_800_003_600
    part_ids = send_parts(client, up["id"], pieces(CONTENT, 4000))
    janitor = Janitor(settings, clock=lambda: now[0])
    janitor.sweep()
    assert len(list(uploads_dir(settings).glob("*.part_*"))) == len(part_ids)  # still pending
    now[0] += 3600
    late = add_part(client, up["id"], b"x")
    assert late.status_code == 400 and late.get_json()["error"]["code"] == "upload_expired"
    assert complete(client, up["id"], part_ids).get_json()["error"]["code"] == "upload_expired"
    janitor.sweep()
    assert list(uploads_dir(settings).glob("*.part_*")) == []
    record = VersionedDoc(uploads_dir(settings) / f"{up['id']}.json").read()
    assert record["status"] == "expired"
    now[0] += 3600
    janitor.sweep()
    assert list(uploads_dir(settings).iterdir()) == []
    assert client.post(f"/v1/uploads/{up['id']}/cancel", headers=AUTH_A).status_code == 404


def test_pending_parts_count_against_the_quota(make_app, settings):
    client = make_app(max_bytes=3 * len(CONTENT) // 2, max_files=3).test_client()
    too_big = create(client, 2 * len(CONTENT))
    assert too_big.status_code == 400 and too_big.get_json()["error"]["code"] == "quota_exceeded"
    up = create(client).get_json()
    send_parts(client, up["id"], [CONTENT])
    refused = upload(client, CONTENT)  # the parts hold the room this file would need
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "quota_exceeded"
    usage = ProjectStore(settings.data_dir, "proj-a").usage()
    assert (usage.files, usage.bytes) == (1, len(CONTENT))
    client.post(f"/v1/uploads/{up['id']}/cancel", headers=AUTH_A)
    direct = upload(client, CONTENT)
    assert direct.status_code == 200
    second = create(client, len(CONTENT) // 4).get_json()
    part = add_part(client, second["id"], CONTENT[: len(CONTENT) // 2 + 10])
    assert part.status_code == 400 and part.get_json()["error"]["code"] == "quota_exceeded"
    assert not [n for n in stored(settings) if n.startswith(".tmp-")]
    # completing swaps the parts for the file: an upload that fits completes at the limit
    client.delete(f"/v1/files/{direct.get_json()['id']}", headers=AUTH_A)
    third = create(client).get_json()
    done = complete(client, third["id"], send_parts(client, third["id"], pieces(CONTENT, 5000)))
    assert done.status_code == 200, done.text


def test_other_projects_uploads_are_404_and_untouched(client, settings):
    up = create(client).get_json()
    part_ids = send_parts(client, up["id"], [CONTENT])
    before = {p: p.read_bytes() for p in uploads_dir(settings).iterdir()}
    for response in (
        add_part(client, up["id"], b"x", auth=AUTH_B),
        complete(client, up["id"], part_ids, auth=AUTH_B),
        client.post(f"/v1/uploads/{up['id']}/cancel", headers=AUTH_B),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"]["message"] == f"No such Upload object: {up['id']}"
    assert {p: p.read_bytes() for p in uploads_dir(settings).iterdir()} == before
    assert not uploads_dir(settings, "proj-b").exists()


def test_part_and_part_count_limits(make_app, settings):
    client = make_app(max_part_bytes=1000, max_upload_parts=2).test_client()
    up = create(client).get_json()
    big = add_part(client, up["id"], CONTENT[:1001])
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "part_too_large"
    assert add_part(client, up["id"], CONTENT[:1000]).status_code == 200
    assert add_part(client, up["id"], CONTENT[1000:2000]).status_code == 200
    third = add_part(client, up["id"], CONTENT[2000:3000])
    assert third.status_code == 400 and third.get_json()["error"]["code"] == "too_many_parts"
    assert not [n for n in stored(settings) if n.startswith(".tmp-")]


def test_a_complete_repeated_after_a_crash_makes_no_second_file(client, settings):
    """A crash after the file was published but before the record said so: the next complete
    finds the reserved file id published and finishes with it."""
    up = create(client).get_json()
    part_ids = send_parts(client, up["id"], [CONTENT])
    app_settings = client.application.extensions["zumik"].settings
    sessions = UploadSessions(ProjectStore(settings.data_dir, "proj-a"), app_settings)
    record_path = sessions.record_path(up["id"])
    done = complete(client, up["id"], part_ids).get_json()
    record = VersionedDoc(record_path).read()
    # the newest version as it was before the crash (records are versioned: zumik.versioned)
    VersionedDoc(record_path).update(lambda r: r.update(status="pending", file=None))
    (uploads_dir(settings) / f"{up['id']}.{part_ids[0]}").write_bytes(CONTENT)
    again = complete(client, up["id"], part_ids)
    assert again.status_code == 200
    assert again.get_json()["file"]["id"] == done["file"]["id"] == record["file_id"]
    assert len(client.get("/v1/files", headers=AUTH_A).get_json()["data"]) == 1
    assert list(uploads_dir(settings).glob("*.part_*")) == []


@pytest.mark.parametrize(
    "body, param",
    [
        ({"bytes": "12"}, "bytes"),
        ({"bytes": 0}, "bytes"),
        ({"bytes": True}, "bytes"),
        ({"filename": None}, "filename"),
        ({"filename": "a\x00b"}, "filename"),
        ({"mime_type": ""}, "mime_type"),
        ({"purpose": "assistants"}, "purpose"),
        ({"expires_after": {"anchor": "created_at", "seconds": 5}}, "expires_after.seconds"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_create_refuses_bad_fields(client, body, param):
    response = create(client, **{"bytes": len(CONTENT), **body})
    assert response.status_code == 400, response.text
    assert response.get_json()["error"]["param"] == param


def test_expires_after_applies_to_the_file(client):
    up = create(client, expires_after={"anchor": "created_at", "seconds": 7200}).get_json()
    file = complete(client, up["id"], send_parts(client, up["id"], [CONTENT])).get_json()["file"]
    assert file["expires_at"] == file["created_at"] + 7200
