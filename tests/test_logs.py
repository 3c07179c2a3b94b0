"""Structured logs: JSON lines with request and batch ids; keys never appear."""

from __future__ import annotations

import json
import logging

from conftest import AUTH_A, KEY_A, create_batch, echo_lines, upload, wait_batch, wait_until

from zumik.ops.logs import JsonFormatter


def test_request_and_batch_logs_are_json_with_ids(make_app):
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("zumik").addHandler(handler)
    try:
        client = make_app(start=True).test_client()
        file_id = upload(client, echo_lines(2)).get_json()["id"]
        batch_id = create_batch(client, file_id).get_json()["id"]
        wait_batch(client, batch_id)
        wait_until(  # the executor logs "completed" just after saving it
            lambda: any(getattr(r, "status", None) == "completed" for r in records),
            10,
            "the 'completed' log record",
            interval=0.01,
        )
        client.get("/v1/files", headers={"Authorization": "Bearer wrong-secret-key"})
    finally:
        logging.getLogger("zumik").removeHandler(handler)
    lines = [json.loads(JsonFormatter().format(r)) for r in records]
    requests_logged = [x for x in lines if x["logger"] == "zumik.access"]
    assert any(
        x["path"] == "/v1/files"
        and x["status"] == 200
        and x["project"] == "proj-a"
        and x["request_id"].startswith("req_")
        for x in requests_logged
    )
    batch_events = [x for x in lines if x.get("batch_id") == batch_id]
    assert [x["status"] for x in batch_events if "status" in x][:1] == ["validating"]
    assert batch_events[-1]["status"] == "completed"
    text = "\n".join(json.dumps(x) for x in lines)
    assert KEY_A not in text and "wrong-secret-key" not in text
    assert AUTH_A["Authorization"] not in text
