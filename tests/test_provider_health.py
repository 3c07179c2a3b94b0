"""Provider health in one executor against a real fake provider: outages are waited out
(lines keep their attempts), a poison line fails alone, a provider down past the completion
window expires the batch, hostile answers fail their line with a clear error, and anything
unexpected on a line is an internal_error line, never a missing one."""

from __future__ import annotations

import asyncio
import time

import pytest
import requests
from conftest import (
    AUTH_A,
    create_batch,
    drive,
    echo_lines,
    jsonl,
    output_lines,
    request_line,
    upload,
    wait_batch,
    wait_until,
)
from fake_provider import ProviderThread

from zumik.execution.limits import parse_reset
from zumik.execution.upstream import retry_after
from zumik.ops.metrics import provider_states
from zumik.settings import load_settings

FAST = {
    "retry_backoff": 0.02,
    "provider_down_seconds": 0.3,
    "provider_probe_max": 0.3,
    "provider_down_failures": 3,
}


def control(provider, **knobs):
    requests.post(provider.url.replace("/v1", "/_control"), json=knobs, timeout=5)


def stats(provider):
    return requests.get(provider.url.replace("/v1", "/_stats"), timeout=5).json()


def start(client, content: bytes) -> str:
    file_id = upload(client, content).get_json()["id"]
    return create_batch(client, file_id).get_json()["id"]


def by_id(client, batch) -> dict:
    """Every result line of a batch: the output file's successes and the error file's
    failures (OpenAI's split)."""
    lines = {}
    for key in ("output_file_id", "error_file_id"):
        if batch[key]:
            lines.update((x["custom_id"], x) for x in output_lines(client, batch[key]))
    return lines


@pytest.mark.slow
def test_an_outage_is_waited_out_without_failing_a_line(make_app, provider):
    control(provider, latency=0.05)
    app = make_app(start=True, upstream_url=provider.url, concurrency=4, max_attempts=2, **FAST)
    client = app.test_client()
    batch_id = start(client, echo_lines(150, model="m"))
    wait_until(
        lambda: (
            client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["request_counts"][
                "completed"
            ]
            >= 20
        ),
        30,
        "20 lines done",
    )
    provider.outage(2.0, 1.5)  # killed for 2 s, then "loading the model" for 1.5 s
    batch = wait_batch(client, batch_id, timeout=60)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 150, "completed": 150, "failed": 0}
    lines = output_lines(client, batch["output_file_id"])
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(150))
    assert stats(provider)["statuses"].get("503", 0) >= 1  # it was probed while loading
    executor = app.extensions["zumik"].executor
    health = executor.upstream.health["default"]
    assert health.up and health.downs >= 1 and health.wait_seconds > 0
    executor.metrics.set_providers({"default": health.snapshot()})
    executor.metrics.flush(executor.settings.data_dir)
    [state] = provider_states(executor.settings.data_dir)
    assert state["provider"] == "default" and state["up"] is True and state["downs"] >= 1
    assert {
        "in_flight",
        "held",
        "concurrency_limit",
        "rate_limited",
        "retries",
        "latency_ewma_s",
        "wait_seconds",
    } <= set(state)


def test_a_poison_line_fails_alone_after_its_attempts(make_app, provider):
    control(provider, latency=0.01)
    client = make_app(
        start=True, upstream_url=provider.url, concurrency=4, max_attempts=3, **FAST
    ).test_client()
    lines = [request_line(f"r{i}", f"message {i}", "m") for i in range(40)]
    lines[17] = request_line("poison", "#fail:500:999", "m")
    batch = wait_batch(client, start(client, jsonl(lines)), timeout=60)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 40, "completed": 39, "failed": 1}
    poison = by_id(client, batch)["poison"]  # the provider's last answer, as it gave it
    assert poison["error"] is None and poison["response"]["status_code"] == 500
    assert stats(provider)["by_content"]["#fail:500:999"] == 3


@pytest.mark.slow
def test_a_provider_down_past_the_window_expires_the_batch(make_app, provider):
    app = make_app(
        start=True, upstream_url=provider.url, concurrency=4, completion_window=4, **FAST
    )
    client = app.test_client()
    provider.outage(120.0)
    batch = wait_batch(client, start(client, echo_lines(12, model="m")), timeout=30)
    assert batch["status"] == "expired"
    assert batch["request_counts"] == {"total": 12, "completed": 0, "failed": 12}
    lines = by_id(client, batch)
    assert {x["error"]["code"] for x in lines.values()} == {"batch_expired"}
    assert len(lines) == 12


def test_hostile_answers_end_in_a_decision(make_app, provider):
    control(provider, big_bytes=3 << 20)
    client = make_app(
        start=True, upstream_url=provider.url, max_attempts=2, max_response_bytes=1 << 20, **FAST
    ).test_client()
    kinds = ["big", "gzipbomb", "deep", "deep200", "retryafter", "resetheader"]
    content = jsonl(
        [request_line(kind, f"#hostile:{kind}", "m") for kind in kinds]
        + [request_line(f"after{i}", f"fine {i}", "m") for i in range(5)]
    )
    started = time.time()
    batch = wait_batch(client, start(client, content), timeout=60)
    assert batch["status"] == "completed"
    lines = by_id(client, batch)
    assert len(lines) == 11
    for kind in ("big", "gzipbomb"):
        assert lines[kind]["error"]["code"] == "response_too_large", lines[kind]
        assert "ZUMIK_MAX_RESPONSE_BYTES" in lines[kind]["error"]["message"]
    assert lines["deep"]["error"]["code"] == "upstream_error"
    assert "HTTP 400" in lines["deep"]["error"]["message"]
    assert lines["deep200"]["error"]["code"] == "invalid_upstream_response"
    assert lines["retryafter"]["error"] is None  # a Retry-After of words: plain backoff
    assert lines["resetheader"]["error"] is None
    # a reset header of 5,000 digits did not block the provider for ages
    assert all(lines[f"after{i}"]["error"] is None for i in range(5))
    assert time.time() - started < 30


def test_header_parsing_never_raises():
    for value in (
        "soon, maybe tomorrow",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "9" * 5000,
        "",
        "Wed, 99 Foo 2026 99:99:99 GMT",
        "\udcff",
        "0x10",
        "Mon, 01 Jan 0001",
    ):
        seconds = retry_after({"retry-after": value, "retry-after-ms": value})
        assert seconds is None or 0 <= seconds <= 300
        reset = parse_reset(value)
        assert reset is None or 0 <= reset <= 3600
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "nan", "retry-after": "2"}) == 2.0
    assert parse_reset("6m0s") == 360 and parse_reset("99h") == 3600


def test_an_unexpected_exception_fails_the_line_with_internal_error(make_app, provider):
    app = make_app(upstream_url=provider.url)
    client = app.test_client()
    batch_id = start(client, echo_lines(6, model="m"))
    executor = app.extensions["zumik"].executor

    async def run_with_a_closed_session() -> None:
        async with executor.opened():
            await executor.upstream.session.close()  # every send now raises RuntimeError
            await executor.run_until_idle()

    asyncio.run(run_with_a_closed_session())
    batch = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 6, "completed": 0, "failed": 6}
    lines = by_id(client, batch)
    assert len(lines) == 6
    assert {x["error"]["code"] for x in lines.values()} == {"internal_error"}
    counters = executor.metrics.snapshot()["counters"]
    assert any("zumik_line_errors_total" in key and value == 6 for key, value in counters.items())


def test_a_corrupted_input_line_is_an_internal_error_not_a_loop(make_app, provider):
    app = make_app(upstream_url=provider.url)
    client = app.test_client()
    file_id = upload(client, echo_lines(5, model="m")).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    zumik = app.extensions["zumik"]
    store = zumik.store("proj-a")
    asyncio.run(drive_validation_only(zumik.executor, store, batch_id))
    path = store.file_data_path(file_id)  # the blob changes on disk after validation
    data = path.read_bytes().splitlines(keepends=True)
    data[2] = b'{"custom_id": "r2", "method": "POST", "url": 7}\n'
    path.write_bytes(b"".join(data))
    asyncio.run(drive(zumik.executor))
    batch = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert batch["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert by_id(client, batch)["r2"]["error"]["code"] == "internal_error"


async def drive_validation_only(executor, store, batch_id) -> None:
    """Validate (the record moves to in_progress) without running any line."""
    store.batch(batch_id).update(lambda record: record.update(status="in_progress"))


@pytest.fixture
def second_provider():
    thread = ProviderThread().start()
    yield thread
    thread.stop()


def test_lines_fall_through_to_a_live_candidate_while_a_provider_is_down(
    make_app, provider, second_provider, tmp_path
):
    from test_routing import write_config

    control(provider, unavailable_seconds=600)  # alpha, auto.safe's first, answers 503
    control(second_provider, latency=0.05)
    settings = load_settings({"ZUMIK_CONFIG": write_config(tmp_path, provider, second_provider)})
    app = make_app(
        start=True, providers=settings.providers, models=settings.models, concurrency=4, **FAST
    )
    client = app.test_client()
    content = jsonl([request_line(f"s{i}", f"x{i}", "auto.safe") for i in range(40)])
    batch = wait_batch(client, start(client, content), timeout=60)
    assert batch["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
    assert {x["provider"] for x in by_id(client, batch).values()} == {"beta"}
    alpha = app.extensions["zumik"].executor.upstream.health["alpha"]
    assert not alpha.up and alpha.held == 0  # marked down; no line waited for it
    assert stats(second_provider)["requests"] == 40
    # once alpha was down, lines went to beta first: far fewer than 2 tries per line at alpha
    assert stats(provider)["requests"] < 40
