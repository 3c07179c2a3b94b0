"""Tenant isolation in one place: with project B's key, every route on project A's ids fails as
if they did not exist, and nothing of A changes."""

from __future__ import annotations

from conftest import AUTH_A, AUTH_B, create_batch, echo_lines, upload
from test_bad_input import snapshot


def test_project_b_cannot_reach_project_a(client, settings):
    file_id = upload(client, echo_lines(3)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    before = snapshot(settings.data_dir / "proj-a")
    attempts = {
        "retrieve file": client.get(f"/v1/files/{file_id}", headers=AUTH_B),
        "file content": client.get(f"/v1/files/{file_id}/content", headers=AUTH_B),
        "delete file": client.delete(f"/v1/files/{file_id}", headers=AUTH_B),
        "retrieve batch": client.get(f"/v1/batches/{batch_id}", headers=AUTH_B),
        "cancel batch": client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_B),
        "use as input": create_batch(client, file_id, auth=AUTH_B),
    }
    statuses = {name: response.status_code for name, response in attempts.items()}
    # Zumik's Batches page: an input_file_id unknown in this project is a 400
    assert statuses == {
        "retrieve file": 404,
        "file content": 404,
        "delete file": 404,
        "retrieve batch": 404,
        "cancel batch": 404,
        "use as input": 400,
    }
    assert all(
        set(r.get_json()["error"]) == {"message", "type", "param", "code"}
        for r in attempts.values()
    )
    assert client.get("/v1/files", headers=AUTH_B).get_json()["data"] == []
    assert client.get("/v1/batches", headers=AUTH_B).get_json()["data"] == []
    assert snapshot(settings.data_dir / "proj-a") == before
    assert (
        client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["status"] == "validating"
    )
