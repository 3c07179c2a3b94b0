"""The dashboard's plan page (issue 25): the estimate shown before a create from a file, the
create with a window, priority and budget through the API's rules, and budget, priority and
deadline on the batch's page."""

from __future__ import annotations

from conftest import AUTH_B, echo_lines, upload
from test_dashboard import csrf, sign_in


def test_plan_shows_the_estimate_then_creates_with_budget_priority_and_window(client) -> None:
    file_id = upload(client, echo_lines(7)).json["id"]
    sign_in(client)
    page = client.get(f"/dashboard/files/{file_id}/plan")
    assert page.status_code == 200
    assert 'data-field="lines">7<' in page.text and "heuristic" in page.text
    assert "no prices configured" in page.text and "not been measured" in page.text
    files = client.get("/dashboard/files")
    assert f"/dashboard/files/{file_id}/plan" in files.text
    token = csrf(client)
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "6h",
        "priority": "high",
        "max_total_tokens": 5000,
    }
    missing = client.post("/dashboard/api/batches", json=body)
    assert missing.status_code == 403  # no CSRF token
    created = client.post("/dashboard/api/batches", json=body, headers={"X-CSRF-Token": token})
    assert created.status_code == 200, created.json
    batch = created.json
    assert batch["priority"] == "high" and batch["expires_at"] == batch["created_at"] + 6 * 3600
    shown = client.get(f"/dashboard/batches/{batch['id']}")
    assert 'data-field="priority">high<' in shown.text
    assert "5,000 tokens" in shown.text and "Deadline" in shown.text
    refused = client.post(
        "/dashboard/api/batches",
        json={**body, "completion_window": "0h"},
        headers={"X-CSRF-Token": token},
    )
    assert refused.status_code == 400 and refused.json["error"]["param"] == "completion_window"


def test_plan_shows_why_a_file_cannot_run_and_hides_other_tenants_files(client) -> None:
    file_id = upload(client, echo_lines(3)).json["id"]
    other = upload(client, echo_lines(3), auth=AUTH_B).json["id"]
    sign_in(client)
    page = client.get(f"/dashboard/files/{file_id}/plan?endpoint=/v1/embeddings")
    assert page.status_code == 200 and "does not match the batch endpoint" in page.text
    assert "Create batch" not in page.text
    assert client.get(f"/dashboard/files/{other}/plan").status_code == 404
    assert client.get("/dashboard/files/nonsense/plan").status_code == 404
