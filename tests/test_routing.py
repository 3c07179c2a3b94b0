"""Providers and routes: mixed-model batches over two providers, cheapest and fallback,
retries honouring Retry-After (sleep injected), rpm measured at the provider, AIMD."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
import requests
from conftest import AUTH_A, create_batch, jsonl, output_lines, request_line, upload, wait_batch
from fake_provider import ProviderThread

from zumik.execution.routing import ProviderConfig, Route, Target
from zumik.execution.upstream import Upstream, retry_delay
from zumik.execution.wire import RequestBody
from zumik.settings import load_settings


@pytest.fixture
def second_provider():
    thread = ProviderThread().start()
    yield thread
    thread.stop()


def control(provider, **knobs):
    requests.post(provider.url.replace("/v1", "/_control"), json=knobs, timeout=5)


def stats(provider):
    return requests.get(provider.url.replace("/v1", "/_stats"), timeout=5).json()


def write_config(tmp_path, p1, p2, extra: str = "") -> str:
    config = tmp_path / "zumik.toml"
    config.write_text(f'''
[providers.alpha]
base_url = "{p1.url}"
api_key = "alpha-secret"
input_price = 1.0
output_price = 2.0
max_attempts = 2
headers = {{ "X-Team" = "research" }}

[providers.beta]
base_url = "{p2.url}"
input_price = 0.1
output_price = 0.2

[models."code.fast"]
provider = "alpha"
model = "qwen"

[models."chat.big"]
provider = "beta"
model = "llama"

[models."auto.cheapest"]
strategy = "cheapest"
candidates = [ {{ provider = "alpha", model = "small" }}, {{ provider = "beta", model = "tiny" }} ]

[models."auto.safe"]
strategy = "fallback"
candidates = [{{ provider = "alpha", model = "first" }}, {{ provider = "beta", model = "second" }}]
{extra}
''')
    return str(config)


def test_mixed_batch_routes_each_line_to_its_provider(
    make_app, provider, second_provider, tmp_path
):
    config = write_config(tmp_path, provider, second_provider)
    settings = load_settings({"ZUMIK_CONFIG": config})
    app = make_app(
        start=True,
        config=settings.config,
        providers=settings.providers,
        models=settings.models,
        retry_backoff=0.01,
    )
    client = app.test_client()
    aliases = ["code.fast", "chat.big", "auto.cheapest"]
    lines = [request_line(f"l{i}", f"q{i}", aliases[i % 3]) for i in range(30)]
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    batch = wait_batch(client, create_batch(client, file_id).get_json()["id"])
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 30
    out = {x["custom_id"]: x for x in output_lines(client, batch["output_file_id"])}
    expected = {
        "code.fast": ("alpha", "qwen"),
        "chat.big": ("beta", "llama"),
        "auto.cheapest": ("beta", "tiny"),
    }
    for i in range(30):
        name, model = expected[aliases[i % 3]]
        assert out[f"l{i}"]["provider"] == name
        assert out[f"l{i}"]["response"]["body"]["model"] == model
    assert stats(provider)["by_model"] == {"qwen": 10}
    assert stats(second_provider)["by_model"] == {"llama": 10, "tiny": 10}
    assert stats(provider)["headers"][-1] == {
        "authorization": "Bearer alpha-secret",
        "x-team": "research",
    }
    cost = batch["cost"]
    assert cost is not None and cost["total"] == pytest.approx(cost["input"] + cost["output"])
    assert cost["total"] > 0
    models = client.get("/v1/models", headers=AUTH_A).get_json()
    assert {m["id"] for m in models["data"]} == {"zumik-echo", *aliases, "auto.safe"}


def test_fallback_moves_on_when_the_first_provider_is_down(
    make_app, provider, second_provider, tmp_path
):
    control(provider, overload_above=-1)  # alpha answers 429 to everything
    config = write_config(tmp_path, provider, second_provider)
    settings = load_settings({"ZUMIK_CONFIG": config})
    client = make_app(
        start=True, providers=settings.providers, models=settings.models, retry_backoff=0.01
    ).test_client()
    file_id = upload(
        client, jsonl([request_line(f"s{i}", f"x{i}", "auto.safe") for i in range(5)])
    ).get_json()["id"]
    batch = wait_batch(client, create_batch(client, file_id).get_json()["id"])
    out = output_lines(client, batch["output_file_id"])
    assert {x["provider"] for x in out} == {"beta"} and all(x["error"] is None for x in out)
    assert stats(provider)["requests"] == 10  # 2 attempts each at alpha
    assert stats(second_provider)["by_model"] == {"second": 5}


def test_unknown_model_without_default_provider_fails_validation(
    make_app, provider, second_provider, tmp_path
):
    settings = load_settings({"ZUMIK_CONFIG": write_config(tmp_path, provider, second_provider)})
    client = make_app(
        start=True, providers=settings.providers, models=settings.models
    ).test_client()
    file_id = upload(
        client, jsonl([request_line("a", "x", "code.fast"), request_line("b", "x", "gpt-4o")])
    ).get_json()["id"]
    batch = wait_batch(client, create_batch(client, file_id).get_json()["id"])
    assert batch["status"] == "failed"
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, "model_not_found")]
    assert stats(provider)["requests"] == 0  # nothing ran


def run(coro):
    return asyncio.run(coro)


async def send_many(provider_config, bodies, sleep=None, concurrent=True):
    async with aiohttp.ClientSession() as session:
        upstream = Upstream(session, sleep=sleep or asyncio.sleep, rng=random.Random(1))
        route = Route("m", "fallback", (Target(provider_config, "m"),))
        if concurrent:
            outcomes = await asyncio.gather(*(upstream.send(route, b) for b in bodies))
        else:
            outcomes = [await upstream.send(route, b) for b in bodies]
        return outcomes, upstream


def body(content: str) -> RequestBody:
    return RequestBody.of({"model": "m", "messages": [{"role": "user", "content": content}]})


def test_retry_after_is_honoured_with_the_clock_injected(provider):
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    config = ProviderConfig("p", provider.url, max_attempts=4, retry_backoff=0.5)
    outcomes, upstream = run(send_many(config, [body("#fail:429:2 #ra:7")], fake_sleep))
    assert outcomes[0].ok and outcomes[0].attempts == 3 and slept == [7.0, 7.0]
    slept.clear()
    outcomes, _ = run(send_many(config, [body("#fail:500:9")], fake_sleep))
    assert not outcomes[0].ok and outcomes[0].attempts == 4
    assert "HTTP 500" in outcomes[0].error_message and "4 attempts" in outcomes[0].error_message
    # exponential backoff with +-25 % jitter: 0.5, 1, 2
    for expected, got in zip([0.5, 1.0, 2.0], slept, strict=True):
        assert 0.75 * expected <= got <= 1.25 * expected
    slept.clear()
    outcomes, _ = run(send_many(config, [body("#fail:400:9")], fake_sleep))
    assert outcomes[0].attempts == 1 and slept == []  # other 4xx are final at once


def test_retry_delay_header_forms():
    rng = random.Random(0)
    assert retry_delay({"retry-after-ms": "250"}, 1, rng) == 0.25
    assert retry_delay({"retry-after": "3"}, 1, rng) == 3.0
    assert retry_delay({"retry-after": "99999"}, 1, rng) == 300.0  # capped
    assert 0.3 <= retry_delay({}, 1, rng) <= 0.7


@pytest.mark.slow
def test_rpm_limit_holds_at_the_provider(provider):
    config = ProviderConfig("p", provider.url, rpm=600)  # 10 requests a second
    outcomes, _ = run(send_many(config, [body(f"r{i}") for i in range(40)]))
    assert all(o.ok for o in outcomes)
    times = sorted(stats(provider)["times"])
    assert times[-1] - times[0] >= 2.5  # 40 requests at 10/s with a burst of 10
    for start in times:
        in_window = sum(1 for t in times if start <= t < start + 1.0)
        assert in_window <= 21


@pytest.mark.slow
def test_aimd_backs_off_an_overloaded_provider(provider):
    control(provider, overload_above=4, latency=0.02)
    config = ProviderConfig(
        "p", provider.url, max_concurrency=32, max_attempts=20, retry_backoff=0.01
    )
    outcomes, upstream = run(send_many(config, [body(f"a{i}") for i in range(200)]))
    assert all(o.ok for o in outcomes)
    limits = upstream.limits["p"]
    assert limits.decreases >= 2 and limits.limit < 32
    rejected = stats(provider)["statuses"].get("429", 0)
    # without AIMD 32 in flight against a limit of 4 would draw far more rejections
    assert rejected < 200


def test_ratelimit_headers_pause_the_provider():
    from zumik.execution.limits import ProviderLimits, parse_reset

    assert parse_reset("6m0s") == 360 and parse_reset("20ms") == 0.02 and parse_reset("1.5") == 1.5
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limits = ProviderLimits(
        ProviderConfig("p", "http://x/v1"), clock=lambda: now[0], sleep=fake_sleep
    )
    limits.on_success(
        0, None, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    )

    async def go():
        await limits.acquire(body("x"))
        limits.release()

    run(go())
    assert slept == [2.0]


def test_aimd_report(provider, capsys):
    """The figure for the notes: rejections drawn by 200 requests against a provider that
    takes 4 at a time, with AIMD (max_concurrency 32)."""
    control(provider, overload_above=4, latency=0.02)
    config = ProviderConfig(
        "p", provider.url, max_concurrency=32, max_attempts=50, retry_backoff=0.01
    )
    outcomes, upstream = run(send_many(config, [body(f"b{i}") for i in range(200)]))
    rejected = stats(provider)["statuses"].get("429", 0)
    with capsys.disabled():
        print(
            f"\nAIMD: 200 requests, 429s drawn {rejected}, decreases "
            f"{upstream.limits['p'].decreases}, final limit {upstream.limits['p'].limit:.1f}"
        )
    assert all(o.ok for o in outcomes) and rejected < 150
