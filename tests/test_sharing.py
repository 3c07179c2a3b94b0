"""One budget per provider across executors (budget files under the data dir), the server's
own queue depth (capped, timed-out reads of its metrics page), and the per-request priority."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
from aiohttp import web

from zumik.execution import serverload
from zumik.execution.provider_budget import ProviderBudget, share
from zumik.execution.routing import ProviderConfig, Route, Target
from zumik.execution.scheduler import FairScheduler
from zumik.execution.sharing import ProviderSharing
from zumik.execution.upstream import Upstream
from zumik.execution.wire import RequestBody
from zumik.storage import fsutil


def test_two_executors_split_one_learned_limit(tmp_path):
    async def main():
        provider = ProviderConfig("gpu", "http://127.0.0.1:1/v1", max_added_latency=0.1)
        sides = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                upstream = Upstream(session)
                limits = upstream.limits_for(provider)
                limits.delay.probing = False
                limits.delay.limit = 40.0
                limits.in_flight = 20  # busy, and one more line waits for a slot
                scheduler = FairScheduler(256)
                scheduler.waiting = 1
                sides.append((ProviderSharing(tmp_path, upstream, scheduler), limits))
            for sharing, _ in sides * 2:  # each reads what the other published
                await sharing.share_once()
            caps = [limits.cap for _, limits in sides]
            assert caps == [20, 20]  # 40 between them, not 40 each
            files = sorted((tmp_path / ".providers" / "gpu").glob("*.json"))
            assert len(files) == 2
            doc = json.loads(files[0].read_text())
            assert doc["limit"] == 40.0 and doc["wanting"] is True
            await sides[1][0].close()  # a stopping executor withdraws its entry
            assert len(list((tmp_path / ".providers" / "gpu").glob("*.json"))) == 1
            await sides[0][0].close()

    asyncio.run(main())


def test_shares_are_max_min_fair_and_stale_or_dead_entries_count_for_nothing(tmp_path):
    mine = ProviderBudget(tmp_path, "gpu", "a")
    other = ProviderBudget(tmp_path, "gpu", "b")
    other.publish(30.0, 3, wanting=False)  # uses 3, wants no more
    assert share(30.0, mine.peers()) == 27 / 30
    other.publish(30.0, 15, wanting=True)
    assert share(30.0, mine.peers()) == 0.5
    assert mine.peers(now=time.time() + 60) == []  # stale: its owner stopped writing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".providers" / "gpu" / "dead.json").write_text(
        json.dumps({"host": fsutil.host_id(), "pid": dead.pid, "at": time.time(), "in_flight": 99})
    )
    (tmp_path / ".providers" / "gpu" / "junk.json").write_bytes(b"[" * 100_000)
    (tmp_path / ".providers" / "gpu" / "odd.json").write_text(
        json.dumps({"at": time.time(), "limit": "x", "in_flight": 1e300, "wanting": 1})
    )
    (tmp_path / ".providers" / "gpu" / "notime.json").write_text(
        json.dumps({"at": "now", "in_flight": 5, "wanting": True})  # no time: stale
    )
    peers = mine.peers()
    assert [p.owner for p in peers if p.owner != "odd"] == [other.owner]
    odd = next(p for p in peers if p.owner == "odd")
    assert odd.in_flight <= 1e6 and odd.wanting is False
    assert share(30.0, []) == 1.0


def test_waiting_requests_are_read_from_vllm_llamacpp_and_sglang_pages():
    page = (
        "# HELP vllm:num_requests_waiting x\n"
        'vllm:num_requests_waiting{model_name="m"} 3.0\n'
        'vllm:num_requests_running{model_name="m"} 24\n'
        "llamacpp:requests_deferred 2\n"
        "sglang:num_queue_reqs NaN\n"
        "vllm:num_requests_waiting_other 100\n"
    )
    assert serverload.waiting_requests(page) == 5
    assert serverload.waiting_requests("up 1\n") is None
    assert serverload.waiting_requests("vllm:num_requests_waiting 1e300\n") == 1_000_000


def test_metrics_reads_are_capped_and_timed_out(monkeypatch):
    async def big(request):
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"# filler\n" * 10_000
        for _ in range(1000):  # 90 MB if nobody stopped reading
            await response.write(chunk)
        return response

    async def slow(request):
        await asyncio.sleep(30)
        return web.Response(text="vllm:num_requests_waiting 1\n")

    async def good(request):
        return web.Response(text="vllm:num_requests_waiting 4\n")

    async def main():
        app = web.Application()
        app.router.add_get("/big", big)
        app.router.add_get("/slow", slow)
        app.router.add_get("/good", good)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        monkeypatch.setattr(serverload, "TIMEOUT_SECONDS", 0.5)
        try:
            async with aiohttp.ClientSession() as session:
                assert await serverload.read_capped(session, base + "/big", 1 << 20) is None
                started = time.monotonic()
                assert await serverload.read_capped(session, base + "/slow") is None
                assert time.monotonic() - started < 5
                page = await serverload.read_capped(session, base + "/good")
                assert serverload.waiting_requests(page) == 4
                assert await serverload.read_capped(session, "http://127.0.0.1:1/x") is None
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_a_provider_with_priority_gets_it_in_every_body_and_the_batch_header():
    seen = []

    async def chat(request):
        seen.append((await request.json(), request.headers.get("X-Zumik-Batch")))
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        return web.json_response({"choices": [], "usage": usage})

    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        provider = ProviderConfig("p", f"http://127.0.0.1:{port}/v1", priority=10)
        route = Route("m", "fallback", (Target(provider, "m"),))
        try:
            async with aiohttp.ClientSession() as session:
                upstream = Upstream(session)
                body = RequestBody.of({"model": "m", "messages": []})
                assert (await upstream.send(route, body)).ok
                own = RequestBody.of({"model": "m", "messages": [], "priority": -1})
                assert (await upstream.send(route, own)).ok  # the line's own priority wins
        finally:
            await runner.cleanup()

    asyncio.run(main())
    assert [body.get("priority") for body, _ in seen] == [10, -1]
    assert all(header == "1" for _, header in seen)


def test_settings_take_the_knob_metrics_url_and_priority(tmp_path):
    from zumik.execution.routing import Router
    from zumik.settings import ConfigError, load_settings

    config = tmp_path / "zumik.toml"
    config.write_text(
        "[providers.gpu]\n"
        'base_url = "http://127.0.0.1:8000/v1"\n'
        "max_added_latency = 0.05\n"
        'metrics_url = "http://127.0.0.1:8000/metrics"\n'
        "priority = 10\n"
    )
    router = Router.from_settings(load_settings({"ZUMIK_CONFIG": str(config)}))
    gpu = router.providers["gpu"]
    assert (gpu.max_added_latency, gpu.metrics_url, gpu.priority) == (
        0.05,
        "http://127.0.0.1:8000/metrics",
        10,
    )
    assert gpu.max_concurrency == 32  # ZUMIK_CONCURRENCY's default
    config.write_text('[providers.gpu]\nbase_url = "http://x/v1"\npriority = "high"\n')
    try:
        Router.from_settings(load_settings({"ZUMIK_CONFIG": str(config)}))
    except ConfigError as exc:
        assert "priority" in str(exc)
    else:
        raise AssertionError("a non-integer priority was accepted")
    env = {"ZUMIK_UPSTREAM_URL": "http://127.0.0.1:8000/v1", "ZUMIK_MAX_ADDED_LATENCY": "0"}
    assert Router.from_settings(load_settings(env)).default.max_added_latency == 0.0
    assert os.environ.get("ZUMIK_MAX_ADDED_LATENCY") is None
