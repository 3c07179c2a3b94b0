"""A project's size does not leak into its requests (issue 28): a data dir from before the
ledger upgrades itself on first start, everything a project leaves on disk is bounded (issue
22 item 8), and the dashboard's quota bar shows the quota's own figures."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil

from conftest import AUTH_A, create_batch, drive, echo_lines, upload
from test_dashboard import sign_in

from zumik.storage.janitor import Janitor
from zumik.storage.store import ProjectStore

UPLOAD = {"filename": "u.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}


def listed(client, route: str, **params: str) -> list[str]:
    found, after = [], None
    while True:
        query = {**params, "limit": "2", **({"after": after} if after else {})}
        page = client.get(route, headers=AUTH_A, query_string=query).get_json()
        found += [item["id"] for item in page["data"]]
        if not page["has_more"]:
            return found
        after = page["last_id"]


def test_a_data_dir_from_before_the_ledger_upgrades_itself_on_first_start(make_app, settings):
    app = make_app()
    client = app.test_client()
    files = [upload(client, echo_lines(i + 1)).get_json()["id"] for i in range(5)]
    batches = [create_batch(client, files[i]).get_json()["id"] for i in range(3)]
    asyncio.run(drive(app.extensions["zumik"].executor))  # outputs published
    keyed = client.post(
        "/v1/files",
        headers={**AUTH_A, "Idempotency-Key": "k1"},
        data={"file": (io.BytesIO(echo_lines(2)), "k.jsonl"), "purpose": "batch"},
        content_type="multipart/form-data",
    ).get_json()["id"]
    session = client.post("/v1/uploads", headers=AUTH_A, json={"bytes": 10, **UPLOAD})
    before_files = listed(client, "/v1/files")
    before_asc = listed(client, "/v1/files", order="asc")
    before_batches = listed(client, "/v1/batches")
    store = ProjectStore(settings.data_dir, "proj-a")
    before = store.usage()
    assert len(before_files) == 5 + 3 + 1 and keyed in before_files
    assert before.files == 9 + 1 and before.records == 3 + 1 + 1  # +1 pending upload
    # today's layout: no ledger, no index, idempotency entries without their expiry
    root = settings.data_dir / "proj-a"
    (root / "ledger.json").unlink()
    shutil.rmtree(root / "index")
    for path in (root / "idempotency").glob("*.json"):
        entry = json.loads(path.read_bytes())
        entry.pop("expires_at")
        path.write_text(json.dumps(entry))
    assert not listed(client, "/v1/files")  # the old code's dir, seen by the new listing
    legacy = root / "batches" / f"{batches[0]}.lease.1"  # run state named the old way
    legacy.write_text("{}")
    (root / "batches" / f"{batches[0]}.1.jsonl").write_text("")
    upgraded = make_app().test_client()  # start-up recovery builds them
    assert (root / "ledger.json").exists() and (root / "index" / "batches").is_dir()
    assert not legacy.exists()
    assert sorted(p.name for p in (root / "batches" / f"{batches[0]}.run").iterdir()) == [
        "1.jsonl",
        "lease.1",
    ]
    assert listed(upgraded, "/v1/files") == before_files
    assert listed(upgraded, "/v1/files", order="asc") == before_asc
    assert listed(upgraded, "/v1/files", purpose="batch_output") == [
        f for f in before_files if f not in files and f != keyed
    ]
    assert listed(upgraded, "/v1/batches") == before_batches == batches[::-1]
    assert ProjectStore(settings.data_dir, "proj-a").usage() == before
    assert session.status_code == 200
    replay = upgraded.post(
        "/v1/files",
        headers={**AUTH_A, "Idempotency-Key": "k1"},
        data={"file": (io.BytesIO(echo_lines(2)), "k.jsonl"), "purpose": "batch"},
        content_type="multipart/form-data",
    )
    assert replay.get_json()["id"] == keyed and replay.headers["Idempotent-Replayed"] == "true"


def test_everything_a_project_leaves_on_disk_is_bounded(make_app, settings):
    """Issue 22 item 8 in small: upload sessions created and cancelled, keyed uploads deleted,
    batches created and run: the records they leave are capped (ZUMIK_MAX_RECORDS) with a clear
    400, and are counted again once they expire."""
    app = make_app(max_files=20, max_bytes=8192, max_records=30)
    client = app.test_client()
    for _ in range(12):
        made = client.post("/v1/uploads", headers=AUTH_A, json={"bytes": 10, **UPLOAD})
        assert made.status_code == 200
        client.post(f"/v1/uploads/{made.get_json()['id']}/cancel", headers=AUTH_A)
    for i in range(12):
        stored = client.post(
            "/v1/files",
            headers={**AUTH_A, "Idempotency-Key": f"key-{i}"},
            data={"file": (io.BytesIO(echo_lines(1)), "k.jsonl"), "purpose": "batch"},
            content_type="multipart/form-data",
        )
        assert stored.status_code == 200
        client.delete(f"/v1/files/{stored.get_json()['id']}", headers=AUTH_A)
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    answers = []
    for _ in range(8):
        answers.append(create_batch(client, file_id))
        asyncio.run(drive(app.extensions["zumik"].executor))
    assert [a.status_code for a in answers[:6]] == [200] * 6
    refused = answers[6]
    assert refused.status_code == 400
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded" and "keeps 30 of 30 records" in error["message"]
    assert "ZUMIK_MAX_RECORDS" in error["message"]
    session = client.post("/v1/uploads", headers=AUTH_A, json={"bytes": 10, **UPLOAD})
    assert session.status_code == 400 and "records" in session.get_json()["error"]["message"]
    keyed = client.post(
        "/v1/files",
        headers={**AUTH_A, "Idempotency-Key": "one-more"},
        data={"file": (io.BytesIO(echo_lines(1)), "k.jsonl"), "purpose": "batch"},
        content_type="multipart/form-data",
    )
    assert keyed.status_code == 400 and "records" in keyed.get_json()["error"]["message"]
    root = settings.data_dir / "proj-a"
    on_disk = [p for p in root.rglob("*") if p.is_file() and "index" not in p.parts]
    assert len(on_disk) < 30 * 6  # a record is a handful of files (versions, leases)
    # past their TTLs the janitor frees the records and the project works again
    later = [app.extensions["zumik"].clock() + settings.batch_ttl + 3 * 86_400]
    Janitor(settings.replace(max_records=30), clock=lambda: later[0]).sweep()
    store = ProjectStore(settings.data_dir, "proj-a", lambda: later[0])
    assert store.usage().records == 0


def test_the_dashboard_quota_bar_shows_what_usage_says(make_app, settings):
    app = make_app(max_files=10)
    client = app.test_client()
    file_id = upload(client, echo_lines(3)).get_json()["id"]
    assert create_batch(client, file_id).status_code == 200  # active: holds 2 result slots
    session = client.post("/v1/uploads", headers=AUTH_A, json={"bytes": 200, **UPLOAD})
    part = client.post(
        f"/v1/uploads/{session.get_json()['id']}/parts",
        headers=AUTH_A,
        data={"data": (io.BytesIO(b"x" * 120), "p")},
        content_type="multipart/form-data",
    )
    assert part.status_code == 200
    used = ProjectStore(settings.data_dir, "proj-a").usage()
    assert (used.files, used.reserved_files) == (2, 2)  # the file and the pending upload
    sign_in(client)
    page = client.get("/dashboard/files").text
    assert 'aria-valuetext="4 of 10 files"' in page
    assert "2 held for the results of running batches" in page
    size = re.search(r"Bytes <strong>([^<]+)</strong>", page).group(1)
    assert size.replace(" ", "") == f"{used.bytes}B" or str(used.bytes) in size.replace(",", "")


def test_every_way_a_file_is_made_stores_the_same_metadata(make_app, settings):
    app = make_app()
    client = app.test_client()
    direct = upload(client, echo_lines(2)).get_json()["id"]
    session = client.post(
        "/v1/uploads", headers=AUTH_A, json={"bytes": len(echo_lines(2)), **UPLOAD}
    ).get_json()["id"]
    part = client.post(
        f"/v1/uploads/{session}/parts",
        headers=AUTH_A,
        data={"data": (io.BytesIO(echo_lines(2)), "p")},
        content_type="multipart/form-data",
    ).get_json()["id"]
    assembled = client.post(
        f"/v1/uploads/{session}/complete", headers=AUTH_A, json={"part_ids": [part]}
    ).get_json()["file"]["id"]
    batch_id = create_batch(client, upload(client, echo_lines(1)).get_json()["id"]).get_json()["id"]
    asyncio.run(drive(app.extensions["zumik"].executor))
    output = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["output_file_id"]
    files_dir = settings.data_dir / "proj-a" / "files"
    metas = [json.loads((files_dir / f"{i}.json").read_bytes()) for i in (direct, assembled)]
    made = json.loads((files_dir / f"{output}.json").read_bytes())
    # inputs carry the one model their lines name (internal), outputs the batch that made them
    assert set(metas[0]) - {"model"} == set(metas[1]) - {"model"} == set(made) - {"batch_id"}
    assert metas[0]["model"] == metas[1]["model"]
    assert made["batch_id"] == batch_id and made["purpose"] == "batch_output"
    assert metas[0]["requests"] == metas[1]["requests"] == 2


def test_the_uploads_api_refuses_with_the_stores_one_quota_check(make_app):
    client = make_app(max_files=1).test_client()
    assert upload(client, echo_lines(1)).status_code == 200
    refused = client.post("/v1/uploads", headers=AUTH_A, json={"bytes": 10, **UPLOAD})
    assert refused.status_code == 400
    message = refused.get_json()["error"]["message"]
    assert message.startswith("File quota exceeded: the project stores 1 of 1 files")


def test_a_janitor_pass_does_bounded_work(make_app, settings):
    """Incremental: 25 expired files, 10 removals per lock hold; each pass stops there."""
    now = [1_800_000_000.0]
    app = make_app(clock=lambda: now[0])
    client = app.test_client()
    timed = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    for _ in range(25):
        assert upload(client, echo_lines(1), **timed).status_code == 200
    now[0] += 3601
    janitor = Janitor(settings, clock=lambda: now[0], batch_size=10)
    assert janitor.sweep(passes=1)["files"] == 10
    assert janitor.sweep(passes=1)["files"] == 10
    assert janitor.sweep()["files"] == 5
    store = ProjectStore(settings.data_dir, "proj-a", lambda: now[0])
    assert store.usage().files == 0 and not list(store.files_dir.glob("*.json"))
