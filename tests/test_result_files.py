"""Result files as OpenAI writes them, on every path: the output file holds successes, the error
file failures; request_counts, usage and the two files agree (all-failed, none-failed, cancel,
expiry and crash recovery are in test_executor.py too); the combined mode; output_expires_after;
cancel is final."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import requests
from conftest import (
    AUTH_A,
    create_batch,
    echo_lines,
    jsonl,
    output_lines,
    request_line,
    settle,
    upload,
    wait_batch,
    wait_until,
)

from zumik.core.records import Status, move
from zumik.execution.batchrun import BatchRun, RunOutcome
from zumik.execution.scheduler import FairScheduler
from zumik.execution.upstream import Upstream
from zumik.settings import ConfigError, load_settings
from zumik.storage import journal
from zumik.storage.claims import Claimer


def run(client, content: bytes, **extra) -> dict:
    file_id = upload(client, content).get_json()["id"]
    created = create_batch(client, file_id, **extra)
    assert created.status_code == 200, created.get_json()
    if not client.application.extensions["zumik"].executor.running:
        settle(client)  # no executor thread: run the batch here, to its end
    return wait_batch(client, created.get_json()["id"])


def files(client, batch: dict) -> tuple[list[dict], list[dict]]:
    out = output_lines(client, batch["output_file_id"]) if batch["output_file_id"] else []
    err = output_lines(client, batch["error_file_id"]) if batch["error_file_id"] else []
    return out, err


def assert_agree(batch: dict, out: list[dict], err: list[dict]) -> None:
    """request_counts and usage say what the two files hold, each custom_id at most once."""
    counts = batch["request_counts"]
    assert counts["completed"] == len(out) and counts["failed"] == len(err)
    ids = [x["custom_id"] for x in out + err]
    assert len(ids) == len(set(ids)) and len(ids) <= counts["total"]
    assert all(x["error"] is None and x["response"]["status_code"] == 200 for x in out)
    assert all(x["error"] is not None or x["response"]["status_code"] >= 400 for x in err)
    total = sum(x["response"]["body"]["usage"]["total_tokens"] for x in out)
    assert batch["usage"]["total_tokens"] == total


def test_all_failed_batch_completes_with_only_an_error_file(make_app, provider):
    client = make_app(start=True, upstream_url=provider.url).test_client()
    batch = run(client, jsonl([request_line(f"r{i}", f"#fail:400:9 n{i}", "m1") for i in range(3)]))
    assert batch["status"] == "completed" and batch["output_file_id"] is None
    out, err = files(client, batch)
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert_agree(batch, out, err)
    assert all(x["response"]["status_code"] == 400 and x["error"] is None for x in err)
    assert err[0]["response"]["body"] == {
        "error": {"message": "injected 400", "type": "test", "param": None, "code": None}
    }
    assert err[0]["response"]["request_id"].startswith("req-")


def test_none_failed_batch_has_no_error_file(make_app):
    client = make_app().test_client()
    batch = run(client, echo_lines(4))
    assert batch["error_file_id"] is None
    out, err = files(client, batch)
    assert_agree(batch, out, err)
    assert len(out) == 4


def test_a_failure_without_a_readable_answer_has_an_error_and_no_response(make_app, provider):
    client = make_app(
        start=True, upstream_url=provider.url, max_attempts=2, retry_backoff=0.01
    ).test_client()
    batch = run(client, jsonl([request_line("a", "#fail:badjson:9", "m1")]))
    out, err = files(client, batch)
    assert out == [] and batch["output_file_id"] is None
    assert err[0]["response"] is None
    assert err[0]["error"]["code"] == "invalid_upstream_response"
    assert_agree(batch, out, err)


def test_combined_mode_keeps_one_output_file_with_every_line(make_app, provider):
    client = make_app(start=True, upstream_url=provider.url, result_files="combined").test_client()
    batch = run(
        client, jsonl([request_line("ok", "fine", "m1"), request_line("bad", "#fail:400:9", "m1")])
    )
    out, err = files(client, batch)
    assert sorted(x["custom_id"] for x in out) == ["bad", "ok"]
    assert [x["custom_id"] for x in err] == ["bad"]
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    bad = next(x for x in out if x["custom_id"] == "bad")
    assert bad["response"]["status_code"] == 400 and bad["error"] is None


def test_result_files_setting_is_checked():
    assert load_settings({"ZUMIK_RESULT_FILES": "combined"}).result_files == "combined"
    with pytest.raises(ConfigError, match="split"):
        load_settings({"ZUMIK_RESULT_FILES": "both"})


def test_cancel_keeps_counts_and_files_in_agreement(make_app, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.2})
    client = make_app(start=True, upstream_url=provider.url, concurrency=4).test_client()
    lines = [
        request_line(f"r{i}", f"#fail:400:9 n{i}" if i % 3 == 0 else f"n{i}", "m1")
        for i in range(60)
    ]
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    wait_until(  # some lines finished (and some failed) before the cancel
        lambda: (lambda c: c["completed"] >= 2 and c["failed"] >= 1)(
            client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["request_counts"]
        ),
        30,
        "some lines done",
    )
    cancel = client.post(
        f"/v1/batches/{batch_id}/cancel", headers=AUTH_A, content_type="application/json"
    )
    assert cancel.get_json()["status"] == "cancelling"
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "cancelled"
    out, err = files(client, batch)
    assert out and err and len(out) + len(err) < 60
    assert_agree(batch, out, err)


def test_output_expires_after_applies_to_output_and_error_files(make_app, provider):
    client = make_app(start=True, upstream_url=provider.url).test_client()
    batch = run(
        client,
        jsonl([request_line("ok", "fine", "m1"), request_line("bad", "#fail:400:9", "m1")]),
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    for file_id in (batch["output_file_id"], batch["error_file_id"]):
        meta = client.get(f"/v1/files/{file_id}", headers=AUTH_A).get_json()
        assert meta["expires_at"] == meta["created_at"] + 7200


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"anchor": "created_at", "seconds": 3599}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": 2592001}, "output_expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "3600"}, "output_expires_after.seconds"),
        ({"anchor": "last_active_at", "seconds": 3600}, "output_expires_after.anchor"),
        ({"anchor": "created_at", "seconds": 3600, "x": 1}, "output_expires_after.x"),
        ("1h", "output_expires_after"),
    ],
)
def test_output_expires_after_is_checked(client, value, param):
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    response = create_batch(client, file_id, output_expires_after=value)
    assert response.status_code == 400 and response.get_json()["error"]["param"] == param


def test_a_cancel_answered_cancelling_is_final(make_app):
    """The race: the run sent every line and journaled it before its watcher looked at the
    cancel marker, then the user's cancel answered ``cancelling``; the run still finalizes
    with its own verdict, ``done``. The batch must end ``cancelled`` with what finished, not
    ``completed``. Driven step by step so it happens every time."""
    app = make_app()  # the executor is not started: the test plays its part
    client = app.test_client()
    zumik = app.extensions["zumik"]
    file_id = upload(client, echo_lines(3)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    store = zumik.store("proj-a")
    batch = store.batch(batch_id)
    batch.update(lambda r: move(r, Status.IN_PROGRESS, int(time.time())))
    claim = Claimer("flock", 30.0).try_claim(batch)
    assert claim is not None
    done = b"".join(
        journal.entry_bytes(
            i + 1,
            json.dumps(
                {
                    "id": f"batch_req_{i}",
                    "custom_id": f"r{i}",
                    "error": None,
                    "response": {
                        "status_code": 200,
                        "request_id": None,
                        "body": {"usage": {"total_tokens": 2}},
                    },
                }
            ).encode()
            + b"\n",
        )
        for i in range(3)
    )
    batch.segment_path(claim.epoch).write_bytes(done)
    cancel = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A)
    assert cancel.get_json()["status"] == "cancelling"

    async def finalize_as_done() -> None:
        async with aiohttp.ClientSession() as session:
            run = BatchRun(
                settings=zumik.settings,
                router=zumik.router,
                upstream=Upstream(session),
                clock=time.time,
                store=store,
                claim=claim,
                scheduler=FairScheduler(1),
            )
            final = RunOutcome.DONE.final_status
            assert final is Status.COMPLETED
            await asyncio.to_thread(run._finalize, final)

    asyncio.run(finalize_as_done())
    claim.release()
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["status"] == "cancelled" and record["completed_at"] is None
    assert record["finalizing_at"] is None and isinstance(record["cancelled_at"], int)
    assert record["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert len(output_lines(client, record["output_file_id"])) == 3
