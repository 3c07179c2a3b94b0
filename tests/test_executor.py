"""The executor against a real fake provider over HTTP: results, failures, cancel, expiry,
journal recovery."""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import requests
from conftest import (
    AUTH_A,
    AUTH_B,
    create_batch,
    drive,
    echo_lines,
    jsonl,
    output_lines,
    request_line,
    upload,
    wait_batch,
)

from zumik.execution.results import error_line
from zumik.storage import journal


def run_batch(client, content: bytes, **extra):
    file_id = upload(client, content).get_json()["id"]
    batch = create_batch(client, file_id, **extra).get_json()
    return file_id, batch["id"]


def test_full_run_writes_every_line_once(make_app, provider):
    app = make_app(start=True, upstream_url=provider.url, concurrency=8)
    client = app.test_client()
    _, batch_id = run_batch(client, echo_lines(60, model="m1"))
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 60, "completed": 60, "failed": 0}
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert isinstance(batch[stamp], int)
    assert batch["error_file_id"] is None
    lines = output_lines(client, batch["output_file_id"])
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(60))
    sample = next(x for x in lines if x["custom_id"] == "r7")
    assert sample["id"].startswith("batch_req_") and sample["error"] is None
    assert sample["response"]["status_code"] == 200
    assert sample["response"]["body"]["choices"][0]["message"]["content"] == "message 7"
    assert sample["response"]["request_id"].startswith("req-")
    usage = batch["usage"]
    assert usage["input_tokens"] > 0 and usage["total_tokens"] == sum(
        x["response"]["body"]["usage"]["total_tokens"] for x in lines
    )
    meta = client.get(f"/v1/files/{batch['output_file_id']}", headers=AUTH_A).get_json()
    assert meta["purpose"] == "batch_output"
    assert meta["expires_at"] == meta["created_at"] + 86400
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    assert stats["requests"] == 60 and stats["max_in_flight"] <= 8
    # the journal goes once the terminal record is durable, a moment after it (not before:
    # a kill in between would otherwise re-send every line): wait for it, with a deadline
    handle = app.extensions["zumik"].store("proj-a").batch(batch_id)
    deadline = time.monotonic() + 30
    while handle.segments():
        assert time.monotonic() < deadline, handle.segments()
        time.sleep(0.02)


def test_failures_go_to_the_error_file_with_their_cause(make_app, provider):
    # other lines keep the provider answering meanwhile: each failure here is the line's own
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05})
    client = make_app(
        start=True, upstream_url=provider.url, retry_backoff=0.01, max_attempts=3, concurrency=4
    ).test_client()
    content = jsonl(
        [
            request_line("ok", "fine", "m1"),
            request_line("bad", "#fail:400:99", "m1"),
            request_line("flaky", "#fail:500:2", "m1"),
            request_line("down", "#fail:503:99", "m1"),
            request_line("reset", "#fail:reset:1", "m1"),
            request_line("garbage", "#fail:badjson:99", "m1"),
        ]
        + [request_line(f"more{i}", f"more {i}", "m1") for i in range(60)]
    )
    _, batch_id = run_batch(client, content)
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 66, "completed": 63, "failed": 3}
    out = {x["custom_id"]: x for x in output_lines(client, batch["output_file_id"])}
    assert {"ok", "flaky", "reset"} <= set(out)  # successes only, as OpenAI writes them
    assert not {"bad", "down", "garbage"} & set(out) and len(out) == 63
    assert all(x["error"] is None and x["response"]["status_code"] == 200 for x in out.values())
    lines = {x["custom_id"]: x for x in output_lines(client, batch["error_file_id"])}
    assert set(lines) == {"bad", "down", "garbage"}
    # an HTTP error answer keeps its status code and the provider's JSON body, error null
    bad = lines["bad"]
    assert bad["error"] is None and bad["response"]["status_code"] == 400
    assert bad["response"]["body"]["error"]["message"] == "injected 400"
    assert lines["down"]["error"] is None and lines["down"]["response"]["status_code"] == 503
    # no readable answer: response null, error set
    assert lines["garbage"]["response"] is None
    assert lines["garbage"]["error"]["code"] == "invalid_upstream_response"
    assert {x["provider"] for x in lines.values()} == {"default"}  # on error lines too
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    assert stats["by_content"]["#fail:500:2"] == 3 and stats["by_content"]["#fail:400:99"] == 1


def test_timeouts_are_retried_then_reported(make_app, provider):
    """A line that times out while the provider answers the others fails on its own."""
    requests.post(
        provider.url.replace("/v1", "/_control"), json={"hang_seconds": 5, "latency": 0.05}
    )
    client = make_app(
        start=True,
        upstream_url=provider.url,
        retry_backoff=0.01,
        request_timeout=0.3,
        max_attempts=2,
        concurrency=2,
    ).test_client()
    lines = [request_line("slow", "#fail:hang:9", "m1")]
    lines += [request_line(f"ok{i}", f"fine {i}", "m1") for i in range(30)]
    _, batch_id = run_batch(client, jsonl(lines))
    batch = wait_batch(client, batch_id, timeout=20)
    assert batch["request_counts"] == {"total": 31, "completed": 30, "failed": 1}
    [line] = output_lines(client, batch["error_file_id"])
    assert line["response"] is None
    assert line["error"]["code"] == "timeout" and " attempts)" in line["error"]["message"]


def test_unroutable_model_fails_validation_with_lines(make_app):
    client = make_app(start=True).test_client()
    content = jsonl(
        [request_line("a"), request_line("b", model="gpt-nope"), request_line("c", model="other")]
    )
    _, batch_id = run_batch(client, content)
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "failed" and isinstance(batch["failed_at"], int)
    errors = batch["errors"]["data"]
    assert [(e["line"], e["code"], e["param"]) for e in errors] == [
        (2, "model_not_found", "body.model"),
        (3, "model_not_found", "body.model"),
    ]
    assert "gpt-nope" in errors[0]["message"]
    assert batch["output_file_id"] is None


def test_cancel_stops_within_two_seconds_and_keeps_what_finished(make_app, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.3})
    client = make_app(start=True, upstream_url=provider.url, concurrency=4).test_client()
    _, batch_id = run_batch(client, echo_lines(200, model="m1"))
    wait_batch(client, batch_id, statuses=("in_progress",))
    time.sleep(1.0)
    started = time.time()
    response = client.post(
        f"/v1/batches/{batch_id}/cancel", headers=AUTH_A, content_type="application/json"
    )
    assert response.get_json()["status"] == "cancelling"
    batch = wait_batch(client, batch_id, timeout=10)
    assert batch["status"] == "cancelled" and time.time() - started < 2.0
    done = batch["request_counts"]["completed"]
    assert 0 < done < 200 and batch["request_counts"]["total"] == 200
    lines = output_lines(client, batch["output_file_id"])
    assert len(lines) == done == len({x["custom_id"] for x in lines})


def test_cancel_answers_the_counts_get_shows(make_app, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.2})
    client = make_app(start=True, upstream_url=provider.url, concurrency=4).test_client()
    _, batch_id = run_batch(client, echo_lines(200, model="m1"))
    deadline = time.monotonic() + 30
    while True:  # until the running claim has saved some counts
        shown = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
        if shown["request_counts"]["completed"] > 0:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)
    answer = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A).get_json()
    assert answer["status"] in ("cancelling", "cancelled")
    counts = answer["request_counts"]
    assert counts["total"] == 200 and counts["completed"] >= shown["request_counts"]["completed"]
    assert answer["usage"]["total_tokens"] >= shown["usage"]["total_tokens"] > 0
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "cancelled"
    # once it reads cancelled, the input may go (and a repeated cancel says so too)
    again = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A).get_json()
    assert again["status"] == "cancelled" and again["request_counts"] == batch["request_counts"]
    assert client.delete(f"/v1/files/{batch['input_file_id']}", headers=AUTH_A).status_code == 200


def test_completion_window_expiry(make_app, provider):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.2})
    now = [time.time()]
    client = make_app(
        start=True, clock=lambda: now[0], upstream_url=provider.url, concurrency=2
    ).test_client()
    _, batch_id = run_batch(client, echo_lines(40, model="m1"))
    wait_batch(client, batch_id, statuses=("in_progress",))
    time.sleep(0.6)
    now[0] += 86_401
    batch = wait_batch(client, batch_id, timeout=10)
    assert batch["status"] == "expired" and isinstance(batch["expired_at"], int)
    done = output_lines(client, batch["output_file_id"])
    expired = output_lines(client, batch["error_file_id"])
    assert all(x["error"] is None for x in done)
    assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in expired)
    # "provider" is on every kind of line: the answering one, or null where none was tried
    assert {x["provider"] for x in done} == {"default"}
    assert {x["provider"] for x in expired} == {None}
    ids = [x["custom_id"] for x in done + expired]
    assert len(ids) == 40 == len(set(ids)) and 0 < len(expired) < 40
    assert batch["request_counts"] == {"total": 40, "completed": len(done), "failed": len(expired)}


def test_resume_from_a_journal_with_a_torn_tail(make_app, provider):
    app = make_app(upstream_url=provider.url)  # executor thread not started: driven below
    client = app.test_client()
    _, batch_id = run_batch(client, echo_lines(30, model="m1"))
    zumik = app.extensions["zumik"]
    batch = zumik.store("proj-a").batch(batch_id)
    # an earlier claim (epoch 1) finished r0..r9, then died mid-write of r10
    lines = [
        journal.entry_bytes(i + 1, error_line(f"r{i}", "earlier", "from the first claim"))
        for i in range(10)
    ]
    batch.segment_path(1).write_bytes(
        b"".join(lines) + b'11\t{"id":"batch_req_x","custom_id":"r10","resp'
    )
    batch.lease_path(1).write_text(json.dumps({"epoch": 1}))
    batch.update(lambda record: record.update(status="in_progress"))
    asyncio.run(drive(zumik.executor))
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["request_counts"] == {"total": 30, "completed": 20, "failed": 10}
    out = output_lines(client, record["output_file_id"])
    assert sorted(x["custom_id"] for x in out) == sorted(f"r{i}" for i in range(10, 30))
    failed = output_lines(client, record["error_file_id"])
    assert sorted(x["custom_id"] for x in failed) == sorted(f"r{i}" for i in range(10))
    stats = requests.get(provider.url.replace("/v1", "/_stats")).json()
    assert stats["requests"] == 20  # r0..r9 were not sent again; r10 (torn) was
    assert "message 10" in stats["by_content"]


def test_run_once_takes_a_batch_of_each_project_first(make_app, provider):
    app = make_app(upstream_url=provider.url)
    client = app.test_client()
    batch_ids = [run_batch(client, echo_lines(5, model="m1", prefix=f"b{i}-"))[1] for i in range(2)]
    file_id = upload(client, echo_lines(5, model="m1"), auth=AUTH_B).get_json()["id"]
    batch_ids.append(create_batch(client, file_id, auth=AUTH_B).get_json()["id"])
    executor = app.extensions["zumik"].executor

    async def steps() -> tuple[int, list[str]]:
        async with executor.opened():
            claimed = await executor.run_once()
            projects = sorted(run.project for run in executor.runs.values())
            await executor.run_until_idle()
            return claimed, projects

    # one batch of each project at once; A's second later (slots to spare, or it waited)
    assert asyncio.run(steps()) == (2, ["proj-a", "proj-b"])
    for batch_id, auth in zip(batch_ids, (AUTH_A, AUTH_A, AUTH_B), strict=True):
        record = client.get(f"/v1/batches/{batch_id}", headers=auth).get_json()
        assert record["status"] == "completed"
        assert record["request_counts"] == {"total": 5, "completed": 5, "failed": 0}


def test_healthz_answers_503_in_the_envelope_when_the_executor_thread_died(make_app):
    app = make_app(start=True)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    executor = app.extensions["zumik"].executor
    executor._loop.call_soon_threadsafe(executor._loop.stop)  # its loop dies under it
    executor._thread.join(5)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "executor_dead"


def test_aborts_at_every_step_lose_no_concurrency_slot(make_app, provider):
    """A task cancelled before its first step never runs its own ``finally``; no slot may be
    lost with it, nor with a sender cancelled anywhere else, or after ZUMIK_CONCURRENCY such
    aborts (cancels, lost leases, shutdowns) the worker can send nothing. Found by the
    multi-host cancel tests: batches stuck in cancelling with nothing in flight. The run is
    aborted 0, 1, 2, ... loop steps after its first sender exists, so every point of its
    senders' lives is hit, a sender not yet started among them."""
    app = make_app(upstream_url=provider.url, concurrency=2, claim_mode="lease")
    client = app.test_client()
    _, batch_id = run_batch(client, echo_lines(60, model="m1"))
    executor = app.extensions["zumik"].executor
    unstarted_senders_aborted = 0

    async def steps() -> None:
        nonlocal unstarted_senders_aborted
        async with executor.opened():
            for steps_before_abort in range(16):
                await executor.run_once()
                run = executor.runs[batch_id]
                while not run.senders and not run.outcome:  # validation, recovery: threads
                    await asyncio.sleep(0)
                for _ in range(steps_before_abort):
                    await asyncio.sleep(0)
                unstarted_senders_aborted += sum(
                    inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED
                    for task in run.senders
                )
                run.abort()  # handed back; the next claim needs every slot again
                await asyncio.wait(set(executor.tasks))
                assert executor.scheduler.in_use == 0 and not executor.scheduler.projects
            await asyncio.wait_for(executor.run_until_idle(), 30)

    asyncio.run(steps())
    assert unstarted_senders_aborted > 0
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["status"] == "completed"
