"""``Idempotency-Key`` on ``POST /v1/files`` and ``POST /v1/batches``: a retried create makes one
object, across workers and through the official SDK's own retries."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from conftest import AUTH_A, AUTH_B, KEY_A, create_batch, echo_lines, upload
from dropping_proxy import DroppingProxy

from zumik.storage.janitor import Janitor


def keyed(key: str, auth: dict[str, str] = AUTH_A) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


def file_count(client, auth: dict[str, str] = AUTH_A) -> int:
    return len(client.get("/v1/files", headers=auth).get_json()["data"])


def test_a_repeated_keyed_upload_returns_the_first_file(client):
    first = upload(client, echo_lines(3), auth=keyed("k-1"))
    again = upload(client, echo_lines(3), auth=keyed("k-1"))
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert file_count(client) == 1
    other = upload(client, echo_lines(3), auth=keyed("k-2"))
    assert other.get_json()["id"] != first.get_json()["id"] and file_count(client) == 2


def test_a_key_reused_for_another_request_is_refused(client, tmp_path):
    upload(client, echo_lines(3), auth=keyed("k-1"))
    before = sorted(p.name for p in (tmp_path / "data" / "proj-a" / "files").iterdir())
    response = upload(client, echo_lines(4), auth=keyed("k-1"))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"
    assert sorted(p.name for p in (tmp_path / "data" / "proj-a" / "files").iterdir()) == before


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tinside"])
def test_malformed_keys_are_refused(client, key):
    response = client.post(
        "/v1/files",
        headers=keyed(key),
        data={"file": (io.BytesIO(echo_lines(1)), "a.jsonl")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "Idempotency-Key"
    assert file_count(client) == 0


def test_a_malformed_key_is_refused_before_the_upload_is_read(client, settings):
    """The key is checked once, first: a body that is bad in its own right (and larger than
    the JSON-body cap) is never read, the answer names the key."""
    for body in (
        {"data": {"file": (io.BytesIO(b"{not json\n" * 10), "a.jsonl")}},
        {"json": {"content": "x" * (settings.max_json_upload_bytes + 1)}},
    ):
        response = client.post("/v1/files", headers=keyed("tab\tinside"), **body)
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["param"] == "Idempotency-Key"
    files = settings.data_dir / "proj-a" / "files"
    assert not files.exists() or not any(files.iterdir())  # no temp file was started


def test_keys_belong_to_one_project(client):
    a = upload(client, echo_lines(2), auth=keyed("shared", AUTH_A)).get_json()
    b = upload(client, echo_lines(2), auth=keyed("shared", AUTH_B)).get_json()
    assert a["id"] != b["id"]
    assert file_count(client, AUTH_B) == 1


def test_concurrent_keyed_uploads_make_one_file(client):
    def send(_: int) -> str:
        return upload(client, echo_lines(50), auth=keyed("race")).get_json()["id"]

    with ThreadPoolExecutor(8) as pool:
        made = set(pool.map(send, range(8)))
    assert len(made) == 1 and file_count(client) == 1


def test_a_repeated_keyed_batch_create_runs_one_batch(client):
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    headers = {"Idempotency-Key": "b-1"}
    first = create_batch(client, file_id, auth={**AUTH_A, **headers})
    again = create_batch(client, file_id, auth={**AUTH_A, **headers})
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/batches", headers=AUTH_A).get_json()["data"]) == 1
    changed = create_batch(client, file_id, auth={**AUTH_A, **headers}, metadata={"x": "y"})
    assert changed.status_code == 400
    assert changed.get_json()["error"]["code"] == "idempotency_key_reused"


def test_keys_expire_after_their_ttl(make_app, tmp_path):
    now = [1_000_000.0]
    app = make_app(clock=lambda: now[0], idempotency_ttl=3600)
    client = app.test_client()
    first = upload(client, echo_lines(1), auth=keyed("k")).get_json()["id"]
    now[0] += 3601
    second = upload(client, echo_lines(1), auth=keyed("k")).get_json()["id"]
    assert second != first  # an expired key starts afresh
    keys = tmp_path / "data" / "proj-a" / "idempotency"
    assert len(list(keys.iterdir())) == 1
    now[0] += 3601
    assert Janitor(app.extensions["zumik"].settings, clock=lambda: now[0]).sweep()["keys"] == 1
    assert list(keys.iterdir()) == []


# -- the official SDK retrying through a connection that loses responses -------------------------
@pytest.fixture
def proxied(gunicorn, provider):
    server = gunicorn({"ZUMIK_UPSTREAM_URL": provider.url})
    proxy = DroppingProxy(server.port)
    yield proxy
    proxy.close()


def sdk(proxy: DroppingProxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY_A, max_retries=2)


def test_sdk_retried_upload_with_a_key_stores_one_file(proxied):
    client = sdk(proxied)
    proxied.drop(1)
    created = client.files.create(
        file=("in.jsonl", echo_lines(5)),
        purpose="batch",
        extra_headers={"Idempotency-Key": "upload-1"},
    )
    assert proxied.dropped == 1  # the first answer was lost; the SDK retried
    assert [f.id for f in client.files.list()] == [created.id]
    proxied.drop(1)  # a fresh client: its first request opens the connection that is dropped
    batch = sdk(proxied).batches.create(
        input_file_id=created.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        extra_headers={"Idempotency-Key": "batch-1"},
    )
    assert proxied.dropped == 2
    assert [b.id for b in client.batches.list()] == [batch.id]


def test_sdk_retried_upload_without_a_key_stores_twice(proxied):
    """Documented: without a key the server cannot tell a retry from a new upload."""
    client = sdk(proxied)
    proxied.drop(1)
    client.files.create(file=("in.jsonl", echo_lines(5)), purpose="batch")
    assert proxied.dropped == 1
    assert len(list(client.files.list())) == 2
