"""Request body caps come from one function (``zumik.api.receiving.body_cap``), so every way
in to the same view has the same limits: the dashboard's upload refuses what ``/v1/files``
refuses, with the same 413."""

from __future__ import annotations

import io
import json

from conftest import AUTH_A, echo_lines
from test_dashboard import csrf, sign_in

from zumik.api.receiving import body_cap


def test_the_dashboard_upload_has_the_caps_of_v1_files(make_app) -> None:
    client = make_app(max_json_upload_bytes=4096).test_client()
    sign_in(client)
    dashboard = {"X-CSRF-Token": csrf(client)}
    over = {"content": echo_lines(60).decode(), "purpose": "batch"}  # > 4 KiB of JSON
    assert len(json.dumps(over)) > 4096
    refused = {
        "api": client.post("/v1/files", headers=AUTH_A, json=over),
        "dashboard": client.post("/dashboard/api/files", headers=dashboard, json=over),
    }
    for way, answer in refused.items():
        assert answer.status_code == 413, (way, answer.get_json())
        assert answer.get_json()["error"]["code"] == "request_too_large", way
    under = {"content": echo_lines(2).decode(), "purpose": "batch"}
    assert client.post("/dashboard/api/files", headers=dashboard, json=under).status_code == 200


def test_a_multipart_upload_over_the_stream_cap_is_413_on_both_ways_in(make_app) -> None:
    client = make_app(max_upload_bytes=1024).test_client()
    sign_in(client)
    dashboard = {"X-CSRF-Token": csrf(client)}
    content = echo_lines(12_000)  # > 2 x 1 KiB + 1 MiB: refused before it is read
    for path, headers in (("/v1/files", AUTH_A), ("/dashboard/api/files", dashboard)):
        answer = client.post(
            path,
            headers=headers,
            data={"purpose": "batch", "file": (io.BytesIO(content), "big.jsonl")},
            content_type="multipart/form-data",
        )
        assert answer.status_code == 413, (path, answer.get_json())


def test_one_table_of_caps(settings) -> None:
    upload = ("files.create_file", "dashboard.upload")
    for endpoint in upload:
        assert body_cap(settings, endpoint, "application/json") == settings.max_json_upload_bytes
        assert body_cap(settings, endpoint, "multipart/form-data") == (
            settings.max_upload_bytes * 2 + (1 << 20)
        )
    assert body_cap(settings, "uploads_api.add_part", "multipart/form-data") == (
        settings.max_part_bytes + (1 << 20)
    )
    assert body_cap(settings, "batches.create_batch", "application/json") == settings.max_json_bytes
    assert body_cap(settings, "dashboard.signin", "application/x-www-form-urlencoded") == (
        settings.max_json_bytes
    )
