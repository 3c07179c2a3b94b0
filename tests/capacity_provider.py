"""A model of a continuous-batching model server (vLLM, llama.cpp's server, SGLang), over HTTP.

One "GPU" runs decode steps. A step advances every running sequence by one output token; its
time is ``step`` seconds up to ``knee`` sequences (flat: the GPU is not saturated), then
proportional to the number running (``step * n / knee``: throughput stays flat, each request
gets slower). At most ``slots`` sequences run; the rest wait in a FIFO queue (by ``priority``
first, lower sooner, when ``--priority`` scheduling is on: vLLM ``--scheduling-policy
priority``). A request needs ``max_tokens`` steps (``usage.completion_tokens`` says so) plus one
prefill step.

Requests carrying an ``X-Zumik-Batch`` header are class ``batch``, the others ``interactive``.
``GET /stats`` gives per-class counts and latency percentiles (ms), the running/waiting peak and
finished tokens; ``POST /stats/reset`` zeroes them. ``GET /metrics`` answers Prometheus text with
vLLM's ``vllm:num_requests_running`` and ``vllm:num_requests_waiting``.

Shapes: ``--shape small`` (knee 16, 24 slots, 9 ms steps: ~100 req/s of 16 tokens, a lone
request ~150 ms) and ``--shape wide`` (knee 64, 96 slots, 20 ms steps: ~190 req/s).

Run alone: ``python tests/capacity_provider.py --port 8000 --shape small``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

SHAPES = {
    "small": {"knee": 16, "slots": 24, "step": 0.009},
    "wide": {"knee": 64, "slots": 96, "step": 0.02},
}
BATCH_HEADER = "X-Zumik-Batch"
MAX_TOKENS = 4096
MAX_LAG = 0.05


@dataclass
class _Sequence:
    remaining: int
    done: asyncio.Future[None]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class CapacityModel:
    """The GPU, its slots and its queue."""

    def __init__(
        self, knee: int, slots: int, step: float, priority_scheduling: bool = False
    ) -> None:
        self.knee, self.slots, self.step = knee, slots, step
        self.priority_scheduling = priority_scheduling
        self.running: list[_Sequence] = []
        self.waiting: list[tuple[int, int, _Sequence]] = []  # heap of (priority, seq, sequence)
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self.reset()

    def reset(self) -> None:
        self.latencies: dict[str, list[float]] = {"batch": [], "interactive": []}
        self.tokens: dict[str, int] = {"batch": 0, "interactive": 0}
        self.peak_running = self.peak_waiting = 0
        self.since = time.monotonic()

    def step_time(self, n: int) -> float:
        return self.step * max(1.0, n / self.knee)

    async def generate(self, tokens: int, priority: int) -> None:
        """Wait until ``tokens`` output tokens (plus a prefill step) were decoded."""
        sequence = _Sequence(tokens + 1, asyncio.get_running_loop().create_future())
        key = priority if self.priority_scheduling else 0
        heapq.heappush(self.waiting, (key, next(self._order), sequence))
        self._admit()
        self._wake.set()
        await sequence.done

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.slots:
            self.running.append(heapq.heappop(self.waiting)[2])
        self.peak_running = max(self.peak_running, len(self.running))
        self.peak_waiting = max(self.peak_waiting, len(self.waiting))

    async def run(self) -> None:
        """The GPU: step while anything runs. Steps follow a schedule (each due a step time
        after the previous one was due), so a late wake-up shortens the next wait instead of
        slowing the GPU down; a lag over ``MAX_LAG`` is forgiven rather than caught up."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if not self.running:
                self._wake.clear()
                await self._wake.wait()
                due = loop.time()
            due = max(due, loop.time() - MAX_LAG) + self.step_time(len(self.running))
            await asyncio.sleep(max(0.0, due - loop.time()))
            still = []
            for sequence in self.running:
                sequence.remaining -= 1
                if sequence.remaining <= 0:
                    if not sequence.done.done():
                        sequence.done.set_result(None)
                else:
                    still.append(sequence)
            self.running = still
            self._admit()


class CapacityProvider:
    """HTTP handlers around one ``CapacityModel``."""

    def __init__(self, model: CapacityModel) -> None:
        self.model = model

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 << 20)
        for path in ("/v1/chat/completions", "/chat/completions"):
            app.router.add_post(path, self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/stats/reset", self.reset)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._start)
        return app

    async def _start(self, app: web.Application) -> None:
        app["gpu"] = asyncio.get_running_loop().create_task(self.model.run())

    async def chat(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        body: dict[str, Any] = await request.json()
        tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        tokens = min(max(int(tokens), 1), MAX_TOKENS)
        priority = body.get("priority", 0)
        priority = priority if isinstance(priority, int) else 0
        await self.model.generate(tokens, priority)
        kind = "batch" if BATCH_HEADER in request.headers else "interactive"
        self.model.latencies[kind].append(time.monotonic() - started)
        self.model.tokens[kind] += tokens
        return web.json_response(
            {
                "id": "chatcmpl-capacity",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "capacity"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "x" * tokens},
                        "finish_reason": "length",
                    }
                ],
                "usage": {
                    "prompt_tokens": 8,
                    "completion_tokens": tokens,
                    "total_tokens": 8 + tokens,
                },
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "capacity"}]})

    async def stats(self, request: web.Request) -> web.Response:
        model = self.model
        classes = {}
        for kind, values in model.latencies.items():
            classes[kind] = {
                "count": len(values),
                "p50_ms": round(percentile(values, 0.5) * 1000, 1),
                "p90_ms": round(percentile(values, 0.9) * 1000, 1),
                "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                "tokens": model.tokens[kind],
            }
        return web.json_response(
            {
                "classes": classes,
                "seconds": time.monotonic() - model.since,
                "running": len(model.running),
                "waiting": len(model.waiting),
                "peak_running": model.peak_running,
                "peak_waiting": model.peak_waiting,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.model.reset()
        return web.json_response({"ok": True})

    async def metrics(self, request: web.Request) -> web.Response:
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="capacity"}} {len(self.model.running)}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="capacity"}} {len(self.model.waiting)}\n'
        )
        return web.Response(text=text, content_type="text/plain")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--priority", action="store_true", help="schedule by body.priority")
    args = parser.parse_args()
    from fake_provider import free_port

    port = args.port or free_port()
    model = CapacityModel(**SHAPES[args.shape], priority_scheduling=args.priority)
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    web.run_app(
        CapacityProvider(model).app(), host=args.host, port=port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
