"""The ``sharing`` scenario (issue 23): Zumik against a model of a continuous-batching server
(tests/capacity_provider.py), alone and beside interactive users, for two server shapes.

Per shape, in one run:
1. a bare closed-loop client at fixed concurrencies (a sweep): the best is the capacity C;
2. interactive users alone: open-loop Poisson arrivals at 20% of C, their p99 latency;
3. a Zumik batch alone (default settings): lines per second over the whole batch (from the
   create to the server's completed log line, so with validation, the first probe and the slow
   start), and its steady rate after ``STEADY_AFTER`` seconds (as the sweep measures), / C;
4. the batch running, then the same interactive users beside it: their p99 against (2), and the
   batch's throughput meanwhile as a share of the spare capacity (C - interactive rate).
Interactive latencies are measured twice: by the interactive client (end to end, so on a loaded
machine it also counts CPU contention between the processes of the bench) and by the provider
(from a request's arrival to its answer: what the model server's load does to it); throughput
is counted by the provider.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from fake_provider import free_port  # noqa: E402

from bench import AUTH, Zumik, lines_file, wait_http  # noqa: E402

SWEEPS = {"small": [8, 12, 16, 20, 24, 32], "wide": [32, 48, 64, 80, 96, 128]}
SWEEP_SECONDS = 4.0
INTERACTIVE_SECONDS = 30.0
BATCH_SECONDS = 25.0  # how long the lone batch should last at capacity
INTERACTIVE_SHARE = 0.2
STEADY_AFTER = 5.0  # the lone batch's steady rate is counted from here on (like the sweep's)

LOADGEN = r"""
import asyncio, json, random, sys, time
import aiohttp
url, mode, value, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
body = {"model": "capacity", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
latencies = []
async def one(session, headers):
    started = time.perf_counter()
    async with session.post(url + "/chat/completions", json=body, headers=headers) as r:
        await r.read()
        assert r.status == 200, r.status
    latencies.append(time.perf_counter() - started)
async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        end = time.perf_counter() + seconds
        if mode == "closed":  # value = concurrency; batch class
            async def worker():
                while time.perf_counter() < end:
                    await one(session, {"X-Zumik-Batch": "bare"})
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(int(value))))
            elapsed = time.perf_counter() - started
        else:  # value = arrivals per second, Poisson; interactive class
            rng, tasks, started = random.Random(7), [], time.perf_counter()
            at = started
            while True:
                at += rng.expovariate(value)
                if at >= end:
                    break
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                tasks.append(asyncio.create_task(one(session, {})))
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    print(json.dumps({"count": len(latencies), "seconds": elapsed,
                      "req_s": len(latencies) / elapsed,
                      "p50_ms": q(0.5) * 1000, "p99_ms": q(0.99) * 1000}))
asyncio.run(main())
"""


class CapacityServer:
    def __init__(self, shape: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "capacity_provider.py"),
                "--port",
                str(self.port),
                "--shape",
                shape,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.base + "/stats")

    def stats(self) -> dict:
        return requests.get(self.base + "/stats", timeout=10).json()

    def reset(self) -> None:
        requests.post(self.base + "/stats/reset", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def loadgen(workdir: Path, url: str, mode: str, value: float, seconds: float) -> subprocess.Popen:
    script = workdir / "loadgen.py"
    script.write_text(LOADGEN)
    return subprocess.Popen(
        [sys.executable, str(script), url, mode, str(value), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    return json.loads(out)


def wait_for_batch_traffic(server: CapacityServer, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.stats()["classes"]["batch"]["count"] > 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the batch never reached the provider")


def shape_run(shape: str, workdir: Path) -> dict:
    server = CapacityServer(shape)
    try:
        sweep = {}
        for concurrency in SWEEPS[shape]:
            sweep[concurrency] = round(
                finish(loadgen(workdir, server.url, "closed", concurrency, SWEEP_SECONDS))["req_s"],
                1,
            )
        best_c = max(sweep, key=lambda c: sweep[c])
        capacity = sweep[best_c]
        rate = INTERACTIVE_SHARE * capacity
        server.reset()
        alone = finish(loadgen(workdir, server.url, "poisson", rate, INTERACTIVE_SECONDS))
        alone_server = server.stats()["classes"]["interactive"]

        zumik = Zumik(workdir / f"data-sharing-{shape}", server.url, concurrency=256)
        try:
            n = int(capacity * BATCH_SECONDS)
            sampler = LimitSampler(zumik)
            steady_from = threading.Timer(STEADY_AFTER, server.reset)  # past the start-up
            steady_from.start()
            elapsed, batch = zumik.run_batch(lines_file(workdir / f"alone-{shape}.jsonl", n))
            steady_from.cancel()
            steady = server.stats()
            steady_rate = steady["classes"]["batch"]["count"] / steady["seconds"]
            limit_alone = sampler.stop()
            assert batch["request_counts"]["completed"] == n, batch
            zumik_alone = n / elapsed

            n_shared = int(capacity * (INTERACTIVE_SECONDS + 30))
            path = lines_file(workdir / f"shared-{shape}.jsonl", n_shared)
            batch_id = zumik.create(zumik.upload(path))
            wait_for_batch_traffic(server)
            time.sleep(5.0)  # the batch runs alone at its learned limit first
            server.reset()
            sampler = LimitSampler(zumik)
            shared = finish(loadgen(workdir, server.url, "poisson", rate, INTERACTIVE_SECONDS))
            limit_shared = sampler.stop()
            stats = server.stats()
            batch_rate = stats["classes"]["batch"]["count"] / stats["seconds"]
            requests.post(f"{zumik.url}/v1/batches/{batch_id}/cancel", headers=AUTH, timeout=30)
            operator = providers_view(zumik)
        finally:
            zumik.stop()
    finally:
        server.stop()
    spare = capacity - shared["req_s"]
    return {
        "shape": shape,
        "bare_sweep_req_s": sweep,
        "best_bare_concurrency": best_c,
        "capacity_req_s": capacity,
        "zumik_alone_req_s": round(zumik_alone, 1),
        "alone_ratio": round(zumik_alone / capacity, 3),
        "zumik_alone_steady_req_s": round(steady_rate, 1),
        "alone_steady_ratio": round(steady_rate / capacity, 3),
        "interactive_req_s": round(shared["req_s"], 1),
        "interactive_p99_alone_ms": round(alone["p99_ms"], 1),
        "interactive_p99_shared_ms": round(shared["p99_ms"], 1),
        "p99_increase": round(shared["p99_ms"] / alone["p99_ms"] - 1, 3),
        "server_p99_alone_ms": alone_server["p99_ms"],
        "server_p99_shared_ms": stats["classes"]["interactive"]["p99_ms"],
        "server_p99_increase": round(
            stats["classes"]["interactive"]["p99_ms"] / alone_server["p99_ms"] - 1, 3
        ),
        "batch_shared_req_s": round(batch_rate, 1),
        "spare_share": round(batch_rate / spare, 3),
        "peak_waiting_shared": stats["peak_waiting"],
        "learned_limit_alone": limit_alone,
        "learned_limit_shared": limit_shared,
        "provider_view": operator,
    }


class LimitSampler:
    """The learned limit as /metrics reports it, once a second, in a thread."""

    def __init__(self, zumik: Zumik) -> None:
        self.zumik, self.values = zumik, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            value = providers_view(self.zumik).get("zumik_provider_learned_limit")
            if value is not None:
                self.values.append(value)

    def stop(self) -> dict:
        self.stopped.set()
        self.thread.join(5)
        values = self.values or [0.0]
        return {
            "mean": round(statistics.mean(values), 1),
            "min": min(values),
            "max": max(values),
        }


def providers_view(zumik: Zumik) -> dict:
    """The operator's view of the default provider, from the metrics snapshot."""
    try:
        snapshot = requests.get(zumik.url + "/metrics", timeout=10).text
    except requests.RequestException:
        return {}
    wanted = ("zumik_provider_learned_limit", "zumik_provider_baseline_seconds_per_token")
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in snapshot.splitlines()
        if line.startswith(wanted)
    }


def sharing(workdir: Path) -> dict:
    shapes = [shape_run(shape, workdir) for shape in ("small", "wide")]
    return {
        "scenario": "sharing",
        "shapes": shapes,
        "target": "alone_ratio >= 0.9, p99_increase <= 0.25, spare_share >= 0.6 (both shapes)",
    }


def sharing_model(workdir: Path) -> dict:
    """The same two phases in virtual time (tests/test_adaptive.py ``simulate``: the limiter
    itself against the capacity model, no HTTP, no processes), so the figures do not move with
    the machine's load; three seeds, 120 s each, both shapes, fixed limits beside it."""
    from test_adaptive import simulate

    shapes = {"small": {"knee": 16, "slots": 24, "step": 0.009}, "wide": {}}
    shapes["wide"] = {"knee": 64, "slots": 96, "step": 0.02}
    out = []
    for shape, model in shapes.items():
        knee, slots = model["knee"], model["slots"]
        for seed in (1, 2, 3):
            best = max(
                simulate(**model, fixed=f, seconds=30, seed=seed)["batch_rate"]
                for f in (knee, slots)
            )
            rate = 0.2 * best
            lone = simulate(**model, interactive_rate=rate, batch=False, seconds=120, seed=seed)
            row = {"shape": shape, "seed": seed, "capacity_req_s": round(best, 1)}
            alone = simulate(**model, seconds=120, seed=seed)
            row["alone_ratio"] = round(alone["batch_rate"] / best, 3)
            for name, fixed in (("adaptive", None), ("fixed_0.75knee", knee * 3 // 4)):
                shared = simulate(
                    **model, interactive_rate=rate, fixed=fixed, seconds=120, seed=seed
                )
                row[f"{name}_p99_increase"] = round(shared["p99"] / lone["p99"] - 1, 3)
                row[f"{name}_spare_share"] = round(shared["batch_rate"] / (best - rate), 3)
            row["fixed_0.75knee_alone_ratio"] = round(
                simulate(**model, fixed=knee * 3 // 4, seconds=30, seed=seed)["batch_rate"] / best,
                3,
            )
            out.append(row)
    return {
        "scenario": "sharing_model",
        "rows": out,
        "target": "alone_ratio >= 0.9, p99_increase <= 0.25, spare_share >= 0.6",
    }
