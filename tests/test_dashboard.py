"""The dashboard with Flask's test client: sign-in, session cookie, CSRF, throttling, escaping
of every tenant-controlled value, tenant isolation, paging, the operator role."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    AUTH_A,
    AUTH_B,
    KEY_A,
    KEY_B,
    create_batch,
    echo_lines,
    jsonl,
    request_line,
    upload,
    wait_batch,
)

from zumik.core import records
from zumik.dashboard.listing import StatusIndex, batch_page
from zumik.dashboard.session import SignInThrottle, load_secret
from zumik.storage.keys import create_key, revoke_key
from zumik.storage.store import ProjectStore

HOSTILE = "<img src=x onerror=alert(1)>"


def token_of(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def sign_in(client, key: str = KEY_A):
    token = token_of(client.get("/dashboard/signin"))
    return client.post("/dashboard/signin", data={"csrf_token": token, "key": key})


def csrf(client) -> str:
    return token_of(client.get("/dashboard/files"))


def test_every_page_needs_a_session(client) -> None:
    for path in (
        "/dashboard/",
        "/dashboard/files",
        "/dashboard/operator",
        "/dashboard/batches/batch_0123456789abcdef01234567",
    ):
        response = client.get(path)
        assert response.status_code == 302 and response.location.endswith("/dashboard/signin")
    polled = client.get("/dashboard/api/batches?ids=")
    assert polled.status_code == 401 and polled.json["error"]["code"] == "signed_out"
    assert client.get("/").location.endswith("/dashboard/")


def test_sign_in_sets_a_strict_httponly_cookie_without_the_key(client, caplog) -> None:
    caplog.set_level("INFO")
    response = sign_in(client)
    assert response.status_code == 302 and response.location.endswith("/dashboard/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert KEY_A not in cookie
    assert KEY_A not in caplog.text and "key=" not in caplog.text
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "proj-a" in page.text
    assert KEY_A not in page.text


def test_a_tampered_cookie_is_refused(client) -> None:
    sign_in(client)
    cookie = client.get_cookie("zumik_dashboard", path="/dashboard")
    client.set_cookie("zumik_dashboard", cookie.value[:-2] + "xx", path="/dashboard")
    assert client.get("/dashboard/").status_code == 302


def test_a_wrong_key_gets_a_clear_message(client) -> None:
    response = sign_in(client, "zk_wrong")
    assert response.status_code == 401
    assert "That key is not valid" in response.text
    assert "zk_wrong" not in response.text  # never echoed back
    empty = sign_in(client, "")
    assert empty.status_code == 401 and "Enter your API key" in empty.text


def test_repeated_wrong_keys_are_slowed_down(make_app) -> None:
    client = make_app(signin_free_attempts=2, signin_max_delay=30).test_client()
    assert sign_in(client, "zk_1").status_code == 401
    assert sign_in(client, "zk_2").status_code == 401
    refused = sign_in(client, KEY_A)  # even the right key waits now
    assert refused.status_code == 429 and "Wait 1 s" in refused.text
    assert refused.headers["Retry-After"] == "1"
    other = make_app(signin_free_attempts=2).test_client()
    other.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    assert sign_in(other, KEY_A).status_code == 302  # per client address


def test_the_throttle_backs_off_and_its_memory_is_bounded() -> None:
    now = [1000.0]
    throttle = SignInThrottle(free=1, max_delay=8, clock=lambda: now[0], capacity=100)
    throttle.failed("a")
    assert throttle.wait("a") == 1.0
    for _ in range(6):
        throttle.failed("a")
    assert throttle.wait("a") == 8.0  # capped
    now[0] += 8.0
    assert throttle.wait("a") == 0.0
    throttle.succeeded("a")
    assert throttle.wait("a") == 0.0
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100


def test_every_post_needs_the_csrf_token(client) -> None:
    file_id = upload(client, echo_lines(2)).json["id"]
    batch_id = create_batch(client, file_id).json["id"]
    assert client.post("/dashboard/signin", data={"key": KEY_A}).status_code == 403
    sign_in(client)
    for path in (
        f"/dashboard/batches/{batch_id}/cancel",
        f"/dashboard/files/{file_id}/delete",
        "/dashboard/signout",
    ):
        assert client.post(path, data={}).status_code == 403, path
        assert client.post(path, data={"csrf_token": "forged"}).status_code == 403, path
    refused = client.post(
        "/dashboard/api/files",
        data={"file": (io.BytesIO(echo_lines(1)), "x.jsonl")},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 403
    token = csrf(client)
    foreign = client.post(
        f"/dashboard/files/{file_id}/delete",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 200
    assert client.post("/dashboard/signout", data={"csrf_token": token}).status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_pages_have_a_strict_csp_and_no_inline_script_or_style(client) -> None:
    upload(client, echo_lines(2))
    sign_in(client)
    for path in ("/dashboard/", "/dashboard/files", "/dashboard/signin"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "style-src 'self'" in csp
        assert re.findall(r"<script(?![^>]*\bsrc=)", response.text) == []
        assert " style=" not in response.text and "<style" not in response.text
        assert re.search(r"<[^>]+\son[a-z]+=", response.text) is None  # no handlers
        assert response.headers["Cache-Control"] == "no-store"


def test_hostile_values_are_escaped_everywhere(make_app, provider) -> None:
    provider.provider.control["error_message"] = "<script>alert('provider')</script>"
    app = make_app(start=True, upstream_url=provider.url, max_attempts=1)
    client = app.test_client()
    lines = jsonl(
        [request_line(HOSTILE, "ok"), request_line("<b>bold</b>", "#fail:400:1", model="gpt-x")]
    )
    file_id = upload(client, lines, filename=f"{HOSTILE}.jsonl").json["id"]
    batch = create_batch(client, file_id, metadata={HOSTILE: "<script>alert(2)</script>"}).json
    record = wait_batch(client, batch["id"])
    assert record["request_counts"]["failed"] == 1
    app.extensions["zumik"].executor.stop()
    client = make_app(start=True).test_client()  # no provider: an unknown model fails validation
    bad = upload(client, jsonl([request_line("v1", model="<svg onload=alert(3)>")])).json
    failed = wait_batch(client, create_batch(client, bad["id"]).json["id"])
    assert failed["status"] == "failed"
    sign_in(client)
    pages = [
        client.get(p).text
        for p in (
            "/dashboard/",
            f"/dashboard/batches/{batch['id']}",
            "/dashboard/files",
            f"/dashboard/batches/{failed['id']}",
        )
    ]
    text = "\n".join(pages)
    for raw in (HOSTILE, "<script>alert", "<b>bold</b>", "<svg onload"):
        assert raw not in text, raw
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]  # metadata key
    assert "&lt;script&gt;alert(&#39;provider&#39;)&lt;/script&gt;" in pages[1]  # provider error
    assert "&lt;b&gt;bold&lt;/b&gt;" in pages[1]  # custom_id of the failed line
    assert "&lt;img src=x onerror=alert(1)&gt;.jsonl" in pages[2]  # filename
    assert "&lt;svg onload=alert(3)&gt;" in pages[3]  # validation error naming the model
    assert "line" in pages[3].lower() and "model_not_found" in pages[3]


def test_a_tenant_never_reaches_another_tenants_data(client) -> None:
    file_a = upload(client, echo_lines(2), auth=AUTH_A).json["id"]
    batch_a = create_batch(client, file_a, auth=AUTH_A).json["id"]
    sign_in(client, KEY_B)
    token = csrf(client)
    assert client.get(f"/dashboard/batches/{batch_a}").status_code == 404
    assert client.get(f"/dashboard/files/{file_a}/content").status_code == 404
    assert (
        client.post(f"/dashboard/batches/{batch_a}/cancel", data={"csrf_token": token}).status_code
        == 404
    )
    client.post(f"/dashboard/files/{file_a}/delete", data={"csrf_token": token})
    assert client.get(f"/v1/files/{file_a}", headers=AUTH_A).status_code == 200
    assert client.get(f"/dashboard/api/batches?ids={batch_a}").json["batches"] == {}
    assert batch_a not in client.get("/dashboard/").text
    assert file_a not in client.get("/dashboard/files").text
    assert client.get(f"/v1/batches/{batch_a}", headers=AUTH_A).json["status"] != "cancelling"
    assert client.get("/dashboard/operator").status_code == 403


def test_cancel_and_delete_through_the_dashboard(make_app, provider) -> None:
    provider.provider.control["latency"] = 0.2
    app = make_app(start=True, upstream_url=provider.url, concurrency=1)
    client = app.test_client()
    file_id = upload(client, echo_lines(50, model="gpt-x")).json["id"]
    batch_id = create_batch(client, file_id).json["id"]
    sign_in(client)
    token = csrf(client)
    busy = client.post(
        f"/dashboard/files/{file_id}/delete", data={"csrf_token": token}, follow_redirects=True
    )
    assert "still" in busy.text and file_id in busy.text  # the API's 409, shown as a message
    cancelled = client.post(
        f"/dashboard/batches/{batch_id}/cancel", data={"csrf_token": token}, follow_redirects=True
    )
    assert "Cancelling" in cancelled.text
    assert wait_batch(client, batch_id)["status"] == "cancelled"
    deleted = client.post(
        f"/dashboard/files/{file_id}/delete", data={"csrf_token": token}, follow_redirects=True
    )
    assert "Deleted in.jsonl" in deleted.text
    assert client.get(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 404


def test_upload_through_the_dashboard_names_the_bad_line(client) -> None:
    sign_in(client)
    headers = {"X-CSRF-Token": csrf(client)}
    bad = jsonl([request_line("a"), request_line("b")]) + b"{not json\n"
    refused = client.post(
        "/dashboard/api/files",
        headers=headers,
        data={"purpose": "batch", "file": (io.BytesIO(bad), "bad.jsonl")},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 400 and "line 3" in refused.json["error"]["message"].lower()
    stored = client.post(
        "/dashboard/api/files",
        headers=headers,
        data={"purpose": "batch", "file": (io.BytesIO(echo_lines(4)), "good.jsonl")},
        content_type="multipart/form-data",
    )
    assert stored.status_code == 200 and stored.json["filename"] == "good.jsonl"
    page = client.get("/dashboard/files").text
    assert "good.jsonl" in page and "4 requests" in page and "bad.jsonl" not in page
    assert 'aria-valuetext="1 of 200 files"' in page


@pytest.mark.slow
def test_paging_and_filters_read_only_what_the_page_shows(app, client) -> None:
    store = ProjectStore(app.extensions["zumik"].settings.data_dir, "proj-a").ensure()
    file_id = upload(client, echo_lines(1)).json["id"]
    for i in range(130):
        record = records.new_batch(
            f"batch_{i:024x}",
            now=int(time.time()) - 1000 + i,
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            window="24h",
            metadata={"n": str(i)},
            total=10,
        )
        store.create_batch(record, max_active=1000, max_files=10_000, max_bytes=1 << 40)
        status = records.Status.FAILED if i % 10 == 0 else records.Status.COMPLETED
        if i < 125:
            store.update_batch(
                record["id"], lambda r, s=status: records.move(r, s, int(time.time()))
            )
    index = StatusIndex()
    first = batch_page(store, index, "all", 1, 50)
    assert first.counts == {
        "all": 130,
        "active": 5,
        "completed": 112,
        "failed": 13,
        "cancelled": 0,
        "expired": 0,
    }
    assert first.pages == 3 and [r["id"] for r in first.records][:1] == [f"batch_{129:024x}"]
    reads = index.reads
    again = batch_page(store, index, "failed", 2, 10)
    assert [r["metadata"]["n"] for r in again.records] == ["20", "10", "0"]
    assert index.reads - reads == 5 + 3  # the active records and the page: nothing else
    sign_in(client)
    page = client.get("/dashboard/?status=failed&page=2").text  # one page of 50: clamped
    assert page.count("data-batch=") == 13 and "Older" not in page
    older = client.get("/dashboard/?page=3").text
    assert older.count("data-batch=") == 30 and "Page 3 of 3" in older
    assert client.get("/dashboard/?status=bogus&page=x").status_code == 200


def test_an_operator_key_sees_every_project(app, client) -> None:
    data_dir = app.extensions["zumik"].settings.data_dir
    upload(client, echo_lines(1), auth=AUTH_B)
    admin = create_key(data_dir, "ops", admin=True)
    sign_in(client, admin)
    page = client.get("/dashboard/operator")
    assert page.status_code == 200
    assert "proj-b" in page.text and "operator" in page.text
    assert ">Operator<" in client.get("/dashboard/").text
    revoke_key(data_dir, admin)
    assert client.get("/dashboard/operator").status_code == 302  # revoked: session ends


def test_keys_create_admin_from_the_command_line(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "zumik.cli", "--data-dir", str(tmp_path), "keys"]
    made = subprocess.run(
        [*run, "create", "--admin", "ops"], capture_output=True, text=True, check=True
    )
    assert made.stdout.startswith("zk_") and "operator key" in made.stderr
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, check=True).stdout
    assert "ops" in listed and "admin" in listed


def test_the_session_secret_is_made_once_and_shared(tmp_path: Path) -> None:
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_secret(tmp_path))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert load_secret(tmp_path) == results[0]
    assert [p.name for p in tmp_path.iterdir()] == [".dashboard-secret"]


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/batches/../../etc/passwd",
        "/dashboard/batches/batch_zz",
        "/dashboard/files/x/content",
    ],
)
def test_bad_ids_are_404_pages(client, path: str) -> None:
    sign_in(client)
    assert client.get(path).status_code == 404


def test_polls_log_at_debug_and_other_requests_at_info(client, caplog) -> None:
    import logging

    sign_in(client)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="zumik.access"):
        client.get("/dashboard/api/batches?ids=")
        client.get("/dashboard/", headers={"X-Zumik-Poll": "1"})  # a region refresh
        client.get("/dashboard/")
        client.get("/v1/files", headers=AUTH_A)
    levels = [(r.path, r.levelname) for r in caplog.records if r.name == "zumik.access"]
    assert levels == [
        ("/dashboard/api/batches", "DEBUG"),
        ("/dashboard/", "DEBUG"),
        ("/dashboard/", "INFO"),
        ("/v1/files", "INFO"),
    ]


def test_progress_shows_durations_counts_usage_and_a_failure_reason() -> None:
    from zumik.dashboard import present

    record = {
        "id": "batch_x",
        "status": "in_progress",
        "created_at": 1000,
        "in_progress_at": 1090,
        "request_counts": {"total": 100, "completed": 1234, "failed": 6},
        "usage": {"input_tokens": 12345, "output_tokens": 10, "total_tokens": 12355},
    }
    row = present.progress(record, now=1210)
    assert row["queued"] == "1 min" and row["run_time"] == "2 min" and row["per_line"] == "97 ms"
    assert row["completed_text"] == "1,234" and row["input_tokens"] == "12,345"
    failed = {
        **record,
        "status": "failed",
        "failed_at": 1100,
        "errors": {"data": [{"line": 3, "code": "model_not_found", "message": "no route"}] * 2},
    }
    assert present.progress(failed, now=5000)["reason"] == "line 3: no route (+1 more)"
    assert str(present.breakable("a_b-c.jsonl<")) == "a_<wbr>b-<wbr>c.<wbr>jsonl&lt;"


def test_operator_batch_page_is_for_operators_and_known_batches(make_app, tmp_path) -> None:
    app = make_app()
    client = app.test_client()
    file_id = upload(client, echo_lines(2), auth=AUTH_B).get_json()["id"]
    batch_id = create_batch(client, file_id, auth=AUTH_B).get_json()["id"]
    path = f"/dashboard/operator/projects/proj-b/batches/{batch_id}"
    sign_in(client)  # a tenant key
    assert client.get(path).status_code == 403
    admin = create_key(app.extensions["zumik"].settings.data_dir, "ops", admin=True)
    client.post("/dashboard/signout", data={"csrf_token": csrf(client)})
    sign_in(client, admin)
    page = client.get(path)
    assert page.status_code == 200 and "read-only" in page.text and "Cancel batch" not in page.text
    assert client.get(path.replace("proj-b", "proj-a")).status_code == 404
    assert client.get(path.replace("proj-b", "nope")).status_code == 404


def test_create_a_batch_from_a_file_and_list_the_files_batches(client) -> None:
    file_id = upload(client, echo_lines(3)).get_json()["id"]
    sign_in(client)
    files = client.get("/dashboard/files").text
    assert f"/dashboard/files/{file_id}/batches" in files and "Create batch" in files
    created = client.post(
        f"/dashboard/files/{file_id}/batch",
        data={"csrf_token": csrf(client), "endpoint": "/v1/chat/completions"},
    )
    assert created.status_code == 302 and "/dashboard/batches/batch_" in created.location
    batch_id = created.location.rsplit("/", 1)[1]
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["input_file_id"] == file_id and record["model"] == "zumik-echo"
    listed = client.get(f"/dashboard/files/{file_id}/batches")
    assert listed.status_code == 200 and batch_id in listed.text
    refused = client.post(
        f"/dashboard/files/{file_id}/batch",
        data={"csrf_token": csrf(client), "endpoint": "/v1/nope"},
        follow_redirects=True,
    )
    assert "Supported values are" in refused.text
    assert client.get("/dashboard/files/file-nope/batches").status_code == 404
