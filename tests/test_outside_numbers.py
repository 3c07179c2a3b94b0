"""Nothing from outside wedges a batch. Numbers are bounded before arithmetic: a provider's
``usage`` of 400 digits or a ``total_tokens`` of 10**12, on the live path and in journal
recovery, never wedges a batch nor puts a rate bucket in debt for longer than a minute. And a
batch whose runs keep failing, whatever the cause, can still be cancelled and still expires."""

from __future__ import annotations

import asyncio
import json
import time

from conftest import (
    AUTH_A,
    create_batch,
    drive,
    jsonl,
    output_lines,
    request_line,
    upload,
    wait_batch,
)

from zumik.core.numbers import TOKENS_MAX, bounded_int, bounded_seconds
from zumik.execution.limits import ProviderLimits
from zumik.execution.routing import ProviderConfig
from zumik.settings import load_settings
from zumik.storage import journal
from zumik.storage.store import ProjectStore


def priced_app(make_app, tmp_path, provider, **overrides):
    config = tmp_path / "zumik.toml"
    config.write_text(f'''
[providers.paid]
base_url = "{provider.url}"
input_price = 2.5
output_price = 10.0

[models.m]
provider = "paid"
model = "m"
''')
    settings = load_settings({"ZUMIK_CONFIG": str(config)})
    return make_app(
        config=settings.config,
        providers=settings.providers,
        models=settings.models,
        retry_backoff=0.01,
        **overrides,
    )


def test_bounded_numbers():
    assert bounded_int(10**400) == TOKENS_MAX
    assert [bounded_int(v) for v in (True, -5, 1.5, "7", None, 12)] == [0, 0, 0, 0, 0, 12]
    assert bounded_seconds(10**400, 300.0) == 300.0
    assert bounded_seconds("9" * 65, 300.0) is None
    assert [bounded_seconds(v, 30.0) for v in ("nan", "inf", "-3", "12.5", 1e308)] == [
        None,
        None,
        0.0,
        12.5,
        30.0,
    ]


def test_a_400_digit_usage_never_wedges_a_priced_batch(make_app, tmp_path, provider):
    """Found by review: a 400-digit ``prompt_tokens`` raised OverflowError in the cost sum, on
    the live path and in recovery on every later claim: never completed, never cancellable."""
    client = priced_app(make_app, tmp_path, provider, start=True).test_client()
    lines = [request_line("huge", "#hostile:hugeusage", "m")] + [
        request_line(f"r{i}", f"fine {i}", "m") for i in range(3)
    ]
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    batch = wait_batch(client, create_batch(client, file_id).get_json()["id"], timeout=30)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert batch["usage"]["input_tokens"] < 2 * TOKENS_MAX
    assert 0 < batch["cost"]["total"] < 1e6
    out = {x["custom_id"]: x for x in output_lines(client, batch["output_file_id"])}
    assert out["huge"]["response"]["body"]["usage"]["prompt_tokens"] == 10**400  # kept as sent


def test_recovery_counts_an_entry_with_huge_numbers(tmp_path):
    segment = tmp_path / "b.1.jsonl"
    huge = 10**400
    line = {
        "custom_id": "x",
        "provider": "paid",
        "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": huge}}},
        "error": None,
    }
    segment.write_bytes(
        journal.entry_bytes(1, json.dumps(line).encode() + b"\n")
        + journal.entry_bytes(2, json.dumps({**line, "custom_id": "y"}).encode() + b"\n")
    )
    progress = journal.recover([segment], repair=True, prices={"paid": (1.0, 1.0)})
    assert progress.completed == 2 and progress.unreadable == 0
    assert progress.usage["input_tokens"] == 2 * TOKENS_MAX
    assert progress.cost()["total"] == 2 * TOKENS_MAX / 1e6


def test_a_trillion_token_answer_does_not_put_the_tpm_bucket_in_debt():
    """Found by review: one answer claiming ``total_tokens: 10**12`` put a ``tpm`` provider's
    bucket years in debt, and every later line of every tenant on that worker waited."""
    now = [1000.0]
    limits = ProviderLimits(
        ProviderConfig("p", "http://p", tpm=60_000, max_concurrency=4), clock=lambda: now[0]
    )
    limits.on_success(10, {"total_tokens": 10**12}, None)
    assert limits.tpm is not None
    wait = limits.tpm.wait_time(10)
    assert 0 < wait <= 61.0  # at most a minute of the budget, not years
    limits.on_success(10, {"total_tokens": 10**400}, None)
    assert limits.tpm.wait_time(10) <= 61.0


def wedged_batch(make_app, tmp_path, clock):
    """A batch whose journal cannot be read nor written (its segment is a folder): every run
    of it fails, whatever it holds."""
    app = make_app(clock=clock, data_dir=tmp_path / "data")
    client = app.test_client()
    file_id = upload(client, jsonl([request_line(f"r{i}") for i in range(3)])).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    zumik = app.extensions["zumik"]
    handle = ProjectStore(zumik.settings.data_dir, "proj-a").batch(batch_id)
    for epoch in range(1, 4):
        handle.segment_path(epoch).mkdir()
    return client, zumik.executor, batch_id


def test_a_batch_whose_runs_keep_failing_can_still_be_cancelled(make_app, tmp_path):
    client, executor, batch_id = wedged_batch(make_app, tmp_path, time.time)
    asyncio.run(drive(executor))  # the run fails: paused
    assert client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["status"] == (
        "in_progress"
    )
    cancel = client.post(f"/v1/batches/{batch_id}/cancel", headers=AUTH_A).get_json()
    assert cancel["status"] == "cancelling"
    executor.paused_until.clear()  # the pause is over
    asyncio.run(drive(executor))
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["status"] == "cancelled"


def test_a_batch_whose_runs_keep_failing_still_expires(make_app, tmp_path):
    now = [time.time()]
    client, executor, batch_id = wedged_batch(make_app, tmp_path, lambda: now[0])
    asyncio.run(drive(executor))
    now[0] += 86_400 + 1
    executor.paused_until.clear()
    asyncio.run(drive(executor))
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["status"] == "expired"


def test_recovery_skips_an_entry_whose_line_number_has_5000_digits(tmp_path):
    segment = tmp_path / "b.1.jsonl"
    good = json.dumps({"custom_id": "x", "response": None, "error": {"code": "e"}}).encode()
    segment.write_bytes(b"9" * 5000 + b"\t" + good + b"\n" + b"2\t" + good + b"\n")
    progress = journal.recover([segment], repair=True)
    assert progress.failed == 1 and 2 in progress.done
