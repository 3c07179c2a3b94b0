"""The Batches API: create validation, the batch object, list paging, cancel, admission."""

from __future__ import annotations

import io
import threading

import pytest
from conftest import AUTH_A, AUTH_B, create_batch, echo_lines, settle, upload, wait_batch
from test_files import assert_envelope

BATCH_FIELDS = {
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "usage",
    "cost",
    "max_cost",  # Zumik's extensions (issue 25)
    "max_total_tokens",
    "priority",
    "budget_exceeded_at",
    "retry_of",  # Zumik extension, null unless the batch retries another
}


@pytest.fixture
def file_id(client):
    return upload(client, echo_lines(3)).get_json()["id"]


def test_model_is_known_at_create_when_every_line_names_one(client, file_id):
    created = create_batch(client, file_id).get_json()
    assert created["status"] == "validating" and created["model"] == "zumik-echo"
    mixed = echo_lines(2, model="m1") + echo_lines(2, model="m2", prefix="s")
    other = upload(client, mixed).get_json()["id"]
    assert create_batch(client, other).get_json()["model"] is None
    # a file assembled by the Uploads API knows its model too
    data = echo_lines(2, model="m1")
    started = client.post(
        "/v1/uploads",
        headers=AUTH_A,
        json={
            "bytes": len(data),
            "filename": "a.jsonl",
            "mime_type": "text/jsonl",
            "purpose": "batch",
        },
    ).get_json()
    part = client.post(
        f"/v1/uploads/{started['id']}/parts", headers=AUTH_A, data={"data": (io.BytesIO(data), "p")}
    ).get_json()
    done = client.post(
        f"/v1/uploads/{started['id']}/complete", headers=AUTH_A, json={"part_ids": [part["id"]]}
    ).get_json()
    assert create_batch(client, done["file"]["id"]).get_json()["model"] == "m1"


def test_create_answers_validating_with_total(client, file_id):
    response = create_batch(client, file_id, metadata={"job": "nightly"})
    assert response.status_code == 200
    batch = response.get_json()
    assert set(batch) == BATCH_FIELDS
    assert batch["status"] == "validating" and batch["object"] == "batch"
    assert batch["id"].startswith("batch_")
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["expires_at"] == batch["created_at"] + 86400
    assert batch["metadata"] == {"job": "nightly"}
    assert batch["output_file_id"] is None and batch["in_progress_at"] is None
    assert set(batch["usage"]) == {
        "input_tokens",
        "input_tokens_details",
        "output_tokens",
        "output_tokens_details",
        "total_tokens",
    }
    assert client.get(f"/v1/batches/{batch['id']}", headers=AUTH_A).get_json() == batch


def test_completion_window_defaults_to_24h(client, file_id):
    response = client.post(
        "/v1/batches",
        headers=AUTH_A,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    assert response.get_json()["completion_window"] == "24h"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"endpoint": "/v1/chat/completions"}, "input_file_id", "Missing required"),
        ({"input_file_id": 5, "endpoint": "/v1/chat/completions"}, "input_file_id", "string"),
        (
            {"input_file_id": "file-000000000000000000000000", "endpoint": "/v1/chat/completions"},
            "input_file_id",
            "No such File",
        ),
        (
            {"input_file_id": "../../x", "endpoint": "/v1/chat/completions"},
            "input_file_id",
            "No such File",
        ),
        (
            {"input_file_id": "FILE", "endpoint": "/v1/images/generations"},
            "endpoint",
            "Supported values",
        ),
        ({"input_file_id": "FILE"}, "endpoint", "Missing required"),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "completion_window": "169h",
            },
            "completion_window",
            "24h",
        ),
        (
            {"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "metadata": []},
            "metadata",
            "object",
        ),
        (
            {"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "metadata": {"a": 1}},
            "metadata.a",
            "expected a string",
        ),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "metadata": {f"k{i}": "v" for i in range(17)},
            },
            "metadata",
            "at most 16",
        ),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "metadata": {"k" * 65: "v"},
            },
            "metadata",
            "64",
        ),
        (
            {
                "input_file_id": "FILE",
                "endpoint": "/v1/chat/completions",
                "metadata": {"k": "v" * 513},
            },
            "metadata.k",
            "512",
        ),
        (
            {"input_file_id": "FILE", "endpoint": "/v1/chat/completions", "urgency": 1},
            "urgency",
            "Unknown parameter",
        ),
    ],
)
def test_create_refusals(client, file_id, body, param, words):
    body = {k: (file_id if v == "FILE" else v) for k, v in body.items()}
    assert_envelope(client.post("/v1/batches", headers=AUTH_A, json=body), 400, words, param=param)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1]", b'"x"'])
def test_create_body_must_be_a_json_object(client, data):
    response = client.post(
        "/v1/batches", headers=AUTH_A, data=data, content_type="application/json"
    )
    assert_envelope(response, 400)


def test_input_over_request_cap_is_refused(make_app):
    app = make_app()
    client = app.test_client()
    file_id = upload(client, echo_lines(5)).get_json()["id"]
    client = make_app(max_requests=4).test_client()
    assert_envelope(
        create_batch(client, file_id), 400, "over the limit of 4", param="input_file_id"
    )


def test_other_projects_file_cannot_be_used(client, file_id):
    assert_envelope(create_batch(client, file_id, auth=AUTH_B), 400, "No such File")


def test_active_batch_limit_holds_under_concurrency(make_app):
    client = make_app(max_active_batches=3).test_client()
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    statuses: list[int] = []

    def create() -> None:
        statuses.append(create_batch(client, file_id).status_code)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 3 + [429] * 5
    response = create_batch(client, file_id)
    error = assert_envelope(response, 429, "3 of 3", code="quota_exceeded")
    assert error["type"] == "rate_limit_error"


def test_list_newest_first_with_paging(client, file_id):
    ids = [create_batch(client, file_id).get_json()["id"] for _ in range(5)]
    page = client.get("/v1/batches?limit=2", headers=AUTH_A).get_json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    seen, after = [], None
    while True:
        page = client.get(
            "/v1/batches?limit=2" + (f"&after={after}" if after else ""), headers=AUTH_A
        ).get_json()
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    assert client.get("/v1/batches", headers=AUTH_B).get_json()["data"] == []
    for query in ("limit=0", "limit=101", "after=nope"):
        assert_envelope(client.get(f"/v1/batches?{query}", headers=AUTH_A), 400)


def test_cancel_before_running_and_repeat(client, file_id):
    batch_id = create_batch(client, file_id).get_json()["id"]
    response = client.post(
        f"/v1/batches/{batch_id}/cancel", headers=AUTH_A, content_type="application/json"
    )
    assert response.status_code == 200
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelling" and cancelled["cancelling_at"] is not None
    again = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A)
    assert again.status_code == 200 and again.get_json()["status"] == "cancelling"


def test_cancel_and_retrieve_foreign_or_unknown_ids_are_404(client, file_id):
    batch_id = create_batch(client, file_id).get_json()["id"]
    for path in (
        f"/v1/batches/{batch_id}",
        "/v1/batches/batch_000000000000000000000000",
        "/v1/batches/..%2F..%2Fx",
    ):
        assert client.get(path, headers=AUTH_B).status_code == 404
    assert_envelope(client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_B), 404)


def test_deleting_a_running_input_is_409(client, file_id):
    create_batch(client, file_id)
    error = assert_envelope(
        client.delete(f"/v1/files/{file_id}", headers=AUTH_A),
        409,
        "still validating",
        code="file_in_use",
    )
    assert error["param"] == "file_id" and "wait for it to finish, or cancel it" in error["message"]


def test_deleting_a_cancelling_input_says_to_wait(client, file_id):
    batch_id = create_batch(client, file_id).get_json()["id"]  # no executor here: it stays
    assert client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A).json["status"] == (
        "cancelling"
    )
    error = assert_envelope(
        client.delete(f"/v1/files/{file_id}", headers=AUTH_A), 409, code="file_in_use"
    )
    message = error["message"]
    assert "is cancelling: it stops within a few seconds" in message
    assert "delete the file then" in message and "cancel it" not in message


def test_terminal_batch_keeps_status_on_cancel(make_app):
    client = make_app().test_client()
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    settle(client)
    assert wait_batch(client, batch_id)["status"] == "completed"
    response = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A)
    assert response.status_code == 200 and response.get_json()["status"] == "completed"
    # the input may go now
    assert client.delete(f"/v1/files/{file_id}", headers=AUTH_A).status_code == 200
