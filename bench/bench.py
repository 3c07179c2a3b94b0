"""Zumik benchmarks. Each figure is a ratio against a baseline measured in the same run.

    python bench/bench.py            # every scenario
    python bench/bench.py overhead latency   # some of them

Scenarios: overhead, overhead_cpu, latency, concurrency, memory, transfer, responsiveness, scale,
uploads, json_upload, fairness, sharedfs, estimate, embeddings, embeddings_llama
(bench/embeddings.py), results_paging (bench/results_paging.py).
Results are printed and appended to bench/RESULTS.md with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import embeddings  # noqa: E402  (bench/ is on the path: this script's folder)
from fake_provider import free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import results_paging  # noqa: E402

KEY = "bench-key"
ROUNDS = 3  # runs per side; the best of each is compared
AUTH = {"Authorization": f"Bearer {KEY}"}


def lines_file(path: Path, n: int, model: str = "bench-model") -> Path:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "custom_id": f"r{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {
                            "model": model,
                            "max_tokens": 16,
                            "messages": [{"role": "user", "content": f"say hello number {i}"}],
                        },
                    }
                ).encode()
                + b"\n"
            )
    return path


class Provider:
    """The fake provider in its own process."""

    def __init__(self, latency: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "fake_provider.py"),
                "--port",
                str(self.port),
                "--latency",
                str(latency),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.port}/_stats")

    def reset(self) -> None:
        requests.post(f"http://127.0.0.1:{self.port}/_reset", timeout=5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Zumik:
    """Zumik under gunicorn with ``workers`` workers."""

    def __init__(
        self,
        data_dir: Path,
        upstream: str,
        workers: int = 1,
        concurrency: int = 64,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("BENCH_LOG") or data_dir.parent / f"zumik-{self.port}.log")
        env = {
            **os.environ,
            "ZUMIK_DATA_DIR": str(data_dir),
            "ZUMIK_API_KEYS": f"{KEY}=bench",
            "ZUMIK_UPSTREAM_URL": upstream,
            "ZUMIK_CONCURRENCY": str(concurrency),
            "ZUMIK_POLL_INTERVAL": "0.05",
            **(extra_env or {}),
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:zumik.serve.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "zumik.serve.wsgi:app",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_http(self.url + "/healthz")
        time.sleep(0.5)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]

    def upload(self, path: Path) -> str:
        with open(path, "rb") as f:
            response = requests.post(
                self.url + "/v1/files", headers=AUTH, files={"file": (path.name, f)}, timeout=600
            )
        response.raise_for_status()
        return response.json()["id"]

    def upload_streaming(self, path: Path) -> str:
        """Upload with curl, which streams from disk (``requests`` builds the body in memory
        first and becomes the bottleneck at ~100 MB/s)."""
        out = subprocess.run(
            [
                "curl",
                "-sS",
                "--fail-with-body",
                self.url + "/v1/files",
                "-H",
                f"Authorization: Bearer {KEY}",
                "-F",
                "purpose=batch",
                "-F",
                f"file=@{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout)["id"]

    def create(self, file_id: str) -> str:
        response = requests.post(
            self.url + "/v1/batches",
            headers=AUTH,
            timeout=30,
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        response.raise_for_status()
        return response.json()["id"]

    def wait(self, batch_id: str, timeout: float = 900, poll: float = 0.25) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            batch = requests.get(
                f"{self.url}/v1/batches/{batch_id}", headers=AUTH, timeout=30
            ).json()
            if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                return batch
            time.sleep(poll)
        raise RuntimeError("batch did not finish")

    def completed_at(self, batch_id: str) -> float:
        """When the server logged the batch ``completed`` (ms precision, same clock as ours).

        The line follows the record's save by a moment, so look again briefly."""
        for _ in range(100):
            for line in self.log.read_text().splitlines():
                if batch_id in line and line.startswith("{"):
                    entry = json.loads(line)
                    if entry.get("batch_id") == batch_id and entry.get("status") == "completed":
                        return entry["ts"]
            time.sleep(0.05)
        raise RuntimeError(f"no completed log line for {batch_id}")

    def run_batch(self, path: Path) -> tuple[float, dict]:
        """Seconds from sending the create to the server finishing the batch.

        Taken from the server's own log line, so the figure neither includes a client's poll
        interval nor pays for fast polling (status reads would steal CPU from the executor).
        """
        file_id = self.upload(path)
        started = time.time()
        batch_id = self.create(file_id)
        batch = self.wait(batch_id)
        return self.completed_at(batch_id) - started, batch

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


BASELINE = r"""
import asyncio, json, sys, time
import aiohttp
url, path, out, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
async def main():
    lines = [json.loads(x) for x in open(path, "rb")]
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=0)
    with open(out, "wb") as f:
        async with aiohttp.ClientSession(connector=conn) as session:
            async def one(line):
                async with sem:
                    async with session.post(url + "/chat/completions", json=line["body"]) as r:
                        body = await r.read()
                f.write(json.dumps({"custom_id": line["custom_id"]}).encode()[:-1]
                        + b',"body":' + body + b"}\n")
            started = time.perf_counter()
            await asyncio.gather(*(one(line) for line in lines))
            print(time.perf_counter() - started)
asyncio.run(main())
"""


def baseline(url: str, path: Path, concurrency: int, workdir: Path) -> float:
    """A bare aiohttp client sending the same lines and writing results to a file."""
    script = workdir / "baseline.py"
    script.write_text(BASELINE)
    out = subprocess.run(
        [sys.executable, str(script), url, str(path), str(workdir / "b.out"), str(concurrency)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def throughput(
    name: str, latency: float, n: int, concurrency: int, workdir: Path, target: str
) -> dict:
    """Best of ``ROUNDS`` for each side, the two sides interleaved so drift hits both."""
    provider = Provider(latency)
    path = lines_file(workdir / f"{name}.jsonl", n)
    try:
        zumik = Zumik(workdir / f"data-{name}", provider.url, concurrency=concurrency)
        bases, runs = [], []
        try:
            zumik.run_batch(path)  # warm-up: connections, imports, page cache
            for _ in range(ROUNDS):
                bases.append(baseline(provider.url, path, concurrency, workdir))
                runs.append(zumik.run_batch(path))
        finally:
            zumik.stop()
        base, elapsed = min(bases), min(r[0] for r in runs)
        assert all(r[1]["request_counts"]["completed"] == n for r in runs), runs[-1][1]
    finally:
        provider.stop()
    ideal = concurrency / latency if latency else None
    return {
        "scenario": name,
        "lines": n,
        "concurrency": concurrency,
        "latency_s": latency,
        "baseline_req_s": round(n / base),
        "zumik_req_s": round(n / elapsed),
        "ratio": round(base / elapsed, 3),
        "ratio_to_C_over_L": round(n / elapsed / ideal, 3) if ideal else None,
        "target": target,
    }


ZUMIK_IN_PROCESS = r"""
import asyncio, io, sys
from pathlib import Path
root, upstream, path, data = sys.argv[1:5]
sys.path.insert(0, root)
from zumik import create_app
from zumik.settings import load_settings
settings = load_settings({}, data_dir=Path(data), api_keys={"k": "bench"}).replace(
    upstream_url=upstream, concurrency=64)
app = create_app(settings, start_executor=False)
client, auth = app.test_client(), {"Authorization": "Bearer k"}
content = Path(path).read_bytes()
file_id = client.post("/v1/files", headers=auth, content_type="multipart/form-data", data={
    "purpose": "batch", "file": (io.BytesIO(content), "in.jsonl")}).get_json()["id"]
batch_id = client.post("/v1/batches", headers=auth, json={
    "input_file_id": file_id, "endpoint": "/v1/chat/completions",
    "completion_window": "24h"}).get_json()["id"]
executor = app.extensions["zumik"].executor
async def drive():
    async with executor.opened():
        await executor.run_until_idle()
asyncio.run(drive())
batch = client.get(f"/v1/batches/{batch_id}", headers=auth).get_json()
assert batch["request_counts"]["completed"] == content.count(b"\n"), batch
"""


def instructions(command: list[str]) -> int:
    """Instructions a command executes (valgrind's cachegrind, no cache simulation)."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            *command,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    refs = next(line for line in out.splitlines() if "I refs:" in " ".join(line.split()))
    return int(refs.split()[-1].replace(",", ""))


def overhead_cpu(workdir: Path) -> dict:
    """Instructions per line: the executor (in-process, through upload, validation, sending
    and finalize) against the bare aiohttp client, as the difference between a 2,500-line and
    a 500-line run of each (start-up cancels out). Counted, not timed, so the figure does not
    move with the machine's load: the deterministic companion of ``overhead``."""
    if shutil.which("valgrind") is None:
        return {"scenario": "overhead_cpu", "skipped": "valgrind not installed"}
    small, big = 500, 2500
    provider = Provider(0.0)
    runner, client = workdir / "zumik_in_process.py", workdir / "baseline.py"
    runner.write_text(ZUMIK_IN_PROCESS)
    client.write_text(BASELINE)
    counts: dict[str, dict[int, int]] = {"zumik": {}, "baseline": {}}
    try:
        for n in (small, big):
            path = lines_file(workdir / f"cpu-{n}.jsonl", n)
            counts["zumik"][n] = instructions(
                [
                    sys.executable,
                    str(runner),
                    str(ROOT),
                    provider.url,
                    str(path),
                    str(workdir / f"cpu-data-{n}"),
                ]
            )
            counts["baseline"][n] = instructions(
                [sys.executable, str(client), provider.url, str(path), str(workdir / "b.out"), "64"]
            )
    finally:
        provider.stop()
    per_line = {side: (c[big] - c[small]) / (big - small) for side, c in counts.items()}
    return {
        "scenario": "overhead_cpu",
        "lines": [small, big],
        "zumik_instructions_per_line": round(per_line["zumik"]),
        "baseline_instructions_per_line": round(per_line["baseline"]),
        "ratio": round(per_line["baseline"] / per_line["zumik"], 3),
        "target": ">= 0.9",
    }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_kb(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def memory(workdir: Path) -> dict:
    provider = Provider(0.0)
    result = {"scenario": "memory", "target": "growth <= 64 MB, flat in the line count"}
    try:
        for n in (20_000, 200_000):
            path = lines_file(workdir / f"mem{n}.jsonl", n)
            zumik = Zumik(
                workdir / f"data-mem{n}",
                provider.url,
                extra_env={
                    "ZUMIK_MAX_REQUESTS": "1000000",
                    "ZUMIK_MAX_BYTES": str(4 << 30),
                    "ZUMIK_MAX_UPLOAD_BYTES": str(2 << 30),
                },
            )
            try:
                [pid] = zumik.worker_pids()
                idle = rss_kb(pid)
                file_id = zumik.upload(path)
                sampler = RssSampler(pid)
                batch = zumik.wait(zumik.create(file_id))
                peak = sampler.stop()
                assert batch["request_counts"]["completed"] == n
                result[f"growth_mb_{n}"] = round((peak - idle) / 1024, 1)
            finally:
                zumik.stop()
    finally:
        provider.stop()
    return result


def big_file(path: Path, size_mb: int) -> Path:
    """About ``size_mb`` MiB of ~1 KB request lines."""
    line = json.dumps(
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "a" * 900}]},
        }
    )
    with open(path, "wb") as f:
        for i in range(size_mb * 1024 * 1024 // (len(line) + 10)):
            f.write(line.replace('"x"', f'"x{i}"', 1).encode() + b"\n")
    return path


def transfer(workdir: Path) -> dict:
    path = big_file(workdir / "big.jsonl", 200)
    size = path.stat().st_size
    cp_times = []
    for _ in range(2):
        started = time.perf_counter()
        shutil.copyfile(path, workdir / "copy.jsonl")
        os.sync()
        cp_times.append(time.perf_counter() - started)
        os.unlink(workdir / "copy.jsonl")
    cp_s = min(cp_times)
    zumik = Zumik(
        workdir / "data-transfer",
        "http://127.0.0.1:9/v1",
        extra_env={
            "ZUMIK_MAX_REQUESTS": "1000000",
            "ZUMIK_MAX_UPLOAD_BYTES": str(1 << 30),
            "ZUMIK_MAX_BYTES": str(2 << 30),
        },
    )
    up_times, down_times = [], []
    try:
        [pid] = zumik.worker_pids()
        idle = rss_kb(pid)
        sampler = RssSampler(pid)
        for _ in range(2):  # best of two, each file deleted after its download
            started = time.perf_counter()
            file_id = zumik.upload_streaming(path)
            up_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            with requests.get(
                f"{zumik.url}/v1/files/{file_id}/content", headers=AUTH, stream=True, timeout=600
            ) as response:
                got = sum(len(c) for c in response.iter_content(1 << 20))
            down_times.append(time.perf_counter() - started)
            assert got == size
            requests.delete(f"{zumik.url}/v1/files/{file_id}", headers=AUTH, timeout=60)
        peak = sampler.stop()
    finally:
        zumik.stop()
    up_s, down_s = min(up_times), min(down_times)
    mb = size / 1e6
    return {
        "scenario": "transfer",
        "bytes": size,
        "cp_mb_s": round(mb / cp_s),
        "upload_mb_s": round(mb / up_s),
        "download_mb_s": round(mb / down_s),
        "upload_vs_cp": round(cp_s / up_s, 3),
        "download_vs_cp": round(cp_s / down_s, 3),
        "rss_growth_mb": round((peak - idle) / 1024, 1),
        "target": ">= 100 MB/s up, >= 300 MB/s down, RSS growth <= 32 MB",
    }


def responsiveness(workdir: Path) -> dict:
    """Status and list reads from a second client while scenario 1 runs (four times over, for
    enough samples); only reads that start and end inside a batch's run count as busy."""
    provider = Provider(0.0)
    path = lines_file(workdir / "resp.jsonl", 5000)
    zumik = Zumik(workdir / "data-resp", provider.url)
    timed: list[tuple[float, float]] = []  # (started, seconds)
    idle: list[float] = []
    current = {"batch": None}
    try:
        file_ids = [zumik.upload(path) for _ in range(4)]

        def probe(into: list, stop: threading.Event, busy: bool) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                batch_id = current["batch"]
                route = f"/v1/batches/{batch_id}" if batch_id and i % 2 else "/v1/files"
                started, t0 = time.time(), time.perf_counter()
                session.get(zumik.url + route, headers=AUTH, timeout=30)
                took = time.perf_counter() - t0
                into.append((started, took) if busy else took)
                i += 1
                time.sleep(0.01)

        stop = threading.Event()
        thread = threading.Thread(target=probe, args=(idle, stop, False))
        thread.start()
        time.sleep(2)
        stop.set()
        thread.join()
        windows = []
        stop = threading.Event()
        thread = threading.Thread(target=probe, args=(timed, stop, True))
        thread.start()
        for file_id in file_ids:
            begun = time.time()
            current["batch"] = batch_id = zumik.create(file_id)
            zumik.wait(batch_id, poll=0.1)
            windows.append((begun, zumik.completed_at(batch_id)))
        stop.set()
        thread.join()
        samples = [
            took
            for started, took in timed
            if any(a <= started and started + took <= b for a, b in windows)
        ]
    finally:
        zumik.stop()
        provider.stop()

    def pct(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 1)

    return {
        "scenario": "responsiveness",
        "samples": len(samples),
        "idle_p50_ms": pct(idle, 50),
        "idle_p99_ms": pct(idle, 99),
        "busy_p50_ms": pct(samples, 50),
        "busy_p99_ms": pct(samples, 99),
        "target": "p99 <= 50 ms while scenario 1 runs",
    }


def scale(workdir: Path) -> dict:
    provider = Provider(0.05)
    paths = [lines_file(workdir / f"scale{i}.jsonl", 2000) for i in range(8)]
    zumik = Zumik(
        workdir / "data-scale",
        provider.url,
        workers=4,
        extra_env={"ZUMIK_MAX_ACTIVE_BATCHES": "16"},
    )
    try:
        one_s, _ = zumik.run_batch(paths[0])
        ids = [zumik.upload(p) for p in paths]
        started = time.perf_counter()
        batch_ids = [zumik.create(f) for f in ids]
        for b in batch_ids:
            assert zumik.wait(b)["request_counts"]["completed"] == 2000
        all_s = time.perf_counter() - started
    finally:
        zumik.stop()
        provider.stop()
    return {
        "scenario": "scale",
        "one_batch_req_s": round(2000 / one_s),
        "eight_batches_req_s": round(16000 / all_s),
        "ratio": round(one_s * 8 / all_s, 3),
        "target": "> 1 (work spreads over 4 workers)",
    }


def _finalize_seconds(zumik: Zumik, batch_id: str) -> float:
    for line in zumik.log.read_text().splitlines():
        if line.startswith("{") and batch_id in line and "finalized in" in line:
            return float(json.loads(line)["msg"].rsplit("finalized in ", 1)[1].split()[0])
    raise RuntimeError(f"no finalize line for {batch_id}")


def _fs_ops(folder: Path, n: int = 200) -> dict:
    """Milliseconds per claim (lease mode) and per record update, in-process, on ``folder``."""
    from zumik.storage.batchhandle import BatchHandle
    from zumik.storage.claims import Claimer
    from zumik.storage.versioned import VersionedDoc

    batches, active = folder / "batches", folder / "active"
    batches.mkdir(parents=True)
    active.mkdir()
    claimer = Claimer("lease", 30.0)
    started = time.perf_counter()
    for i in range(n):
        claim = claimer.try_claim(BatchHandle(batches, active, f"batch_{i:024x}"))
        assert claim is not None
    claim_ms = (time.perf_counter() - started) * 1000 / n
    doc = VersionedDoc(folder / "record.json")
    doc.create({"n": 0})
    started = time.perf_counter()
    for _ in range(n):
        doc.update(lambda d: d.update(n=d["n"] + 1))
    return {
        "claim_ms": round(claim_ms, 2),
        "record_update_ms": round((time.perf_counter() - started) * 1000 / n, 2),
    }


def sharedfs(workdir: Path) -> dict:
    """Local disk vs one JuiceFS volume (local redis + local blocks, two mounts = two hosts):
    upload, claim, record update, one batch, finalize; then 4 batches on one host vs the same
    4 spread over two hosts on two mounts. Needs FUSE, redis-server and juicefs (the tests')."""
    from juicefs_cluster import Cluster

    provider = Provider(0.05)
    batch = lines_file(workdir / "shared.jsonl", 3000)
    big = lines_file(workdir / "big.jsonl", 40_000)
    env = {
        "ZUMIK_CLAIM_MODE": "lease",
        "ZUMIK_LEASE_SECONDS": "10",
        "ZUMIK_MAX_ACTIVE_BATCHES": "16",
    }
    out: dict = {
        "scenario": "sharedfs",
        "batch_lines": 3000,
        "upload_bytes": big.stat().st_size,
        "provider_latency_s": 0.05,
        "concurrency": 32,
    }

    def one_host(name: str, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        zumik = Zumik(data_dir, provider.url, workers=1, concurrency=32, extra_env=env)
        try:
            started = time.perf_counter()
            zumik.upload_streaming(big)
            out[f"{name}_upload_mb_s"] = round(
                big.stat().st_size / 1e6 / (time.perf_counter() - started), 1
            )
            seconds, record = zumik.run_batch(batch)
            out[f"{name}_batch_lines_s"] = round(3000 / seconds)
            out[f"{name}_finalize_s"] = _finalize_seconds(zumik, record["id"])
            ids = [zumik.upload(batch) for _ in range(4)]
            started = time.perf_counter()
            for batch_id in [zumik.create(f) for f in ids]:
                zumik.wait(batch_id, poll=0.1)
            out[f"{name}_4_batches_lines_s"] = round(12000 / (time.perf_counter() - started))
        finally:
            zumik.stop()
        for key, value in _fs_ops(data_dir.parent / f"ops-{name}").items():
            out[f"{name}_{key}"] = value

    try:
        one_host("local", workdir / "local" / "data")
        with Cluster() as cluster:
            one_host("juicefs", cluster.data_dir("a") / "one")
            (cluster.data_dir("a") / "two").mkdir(parents=True)
            hosts = [
                Zumik(
                    cluster.data_dir(h) / "two",
                    provider.url,
                    workers=1,
                    concurrency=32,
                    extra_env=env,
                )
                for h in "ab"
            ]
            try:
                ids = [hosts[i % 2].upload(batch) for i in range(4)]
                started = time.perf_counter()
                batch_ids = [hosts[i % 2].create(f) for i, f in enumerate(ids)]
                for batch_id in batch_ids:
                    hosts[0].wait(batch_id, poll=0.1)
                out["juicefs_2_hosts_4_batches_lines_s"] = round(
                    12000 / (time.perf_counter() - started)
                )
            finally:
                for host in hosts:
                    host.stop()
    finally:
        provider.stop()
    out["ratio_juicefs_to_local_batch"] = round(
        out["juicefs_batch_lines_s"] / out["local_batch_lines_s"], 3
    )
    out["ratio_2_hosts_to_1"] = round(
        out["juicefs_2_hosts_4_batches_lines_s"] / out["juicefs_4_batches_lines_s"], 3
    )
    out["target"] = "informational (docs/scale-out.md)"
    return out


def fairness(workdir: Path) -> dict:
    """Another project's 10-line batch while one project runs 10 batches of 3,000 lines at
    50 ms (issue 12); the baseline is the same small batch on the idle server."""
    provider = Provider(0.05)
    other = {"Authorization": "Bearer other-key"}
    big = [lines_file(workdir / f"fair{i}.jsonl", 3000) for i in range(10)]
    small = lines_file(workdir / "fair-small.jsonl", 10)
    zumik = Zumik(
        workdir / "data-fair",
        provider.url,
        workers=2,
        concurrency=32,
        extra_env={"ZUMIK_API_KEYS": f"{KEY}=bench,other-key=other"},
    )

    def small_batch() -> float:
        with open(small, "rb") as f:
            file_id = requests.post(
                zumik.url + "/v1/files",
                headers=other,
                timeout=60,
                files={"file": ("small.jsonl", f)},
            ).json()["id"]
        started = time.time()
        batch_id = requests.post(
            zumik.url + "/v1/batches",
            headers=other,
            timeout=60,
            json={
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()["id"]
        while (
            requests.get(f"{zumik.url}/v1/batches/{batch_id}", headers=other, timeout=30).json()[
                "status"
            ]
            != "completed"
        ):
            time.sleep(0.02)
        return time.time() - started

    try:
        alone = small_batch()
        batch_ids = [zumik.create(zumik.upload(path)) for path in big]
        time.sleep(3.0)  # every big batch claimed and sending
        busy = small_batch()
        for batch_id in batch_ids:
            requests.post(f"{zumik.url}/v1/batches/{batch_id}/cancel", headers=AUTH, timeout=30)
    finally:
        zumik.stop()
        provider.stop()
    return {
        "scenario": "fairness",
        "big_batches": 10,
        "big_lines": 3000,
        "latency_s": 0.05,
        "small_alone_s": round(alone, 2),
        "small_behind_big_s": round(busy, 2),
        "target": "small_behind_big_s <= 5",
    }


def json_upload(workdir: Path) -> dict:
    """Peak RSS growth of the worker for the largest JSON-body upload allowed
    (``ZUMIK_MAX_JSON_UPLOAD_BYTES``, default 16 MiB) against the same content sent as a
    multipart upload (streamed, the baseline), each on a fresh server."""
    cap = 16 * 1024 * 1024
    line = json.dumps(
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "a" * 900}]},
        }
    )
    lines, size = [], len(b'{"content": ""}')
    while size + len(json.dumps(line)) + 20 < cap:
        lines.append(line.replace('"x"', f'"x{len(lines)}"', 1))
        size += len(json.dumps(lines[-1])) - 2 + 2  # escaped quotes and the escaped newline
    content = "\n".join(lines) + "\n"
    body = json.dumps({"content": content}).encode()
    assert len(body) <= cap
    path = workdir / "json-upload.jsonl"
    path.write_text(content)
    growth = {}
    for kind in ("multipart", "json"):
        zumik = Zumik(workdir / f"data-{kind}", "http://127.0.0.1:9/v1")
        try:
            [pid] = zumik.worker_pids()
            idle = rss_kb(pid)
            sampler = RssSampler(pid)
            if kind == "json":
                response = requests.post(
                    zumik.url + "/v1/files",
                    data=body,
                    timeout=120,
                    headers={**AUTH, "Content-Type": "application/json"},
                )
                response.raise_for_status()
            else:
                zumik.upload_streaming(path)
            time.sleep(0.2)
            growth[kind] = (sampler.stop() - idle) / 1024
        finally:
            zumik.stop()
    return {
        "scenario": "json_upload",
        "body_bytes": len(body),
        "multipart_rss_growth_mb": round(growth["multipart"], 1),
        "json_rss_growth_mb": round(growth["json"], 1),
        "json_growth_per_body_mb": round(growth["json"] / (len(body) / 2**20), 2),
        "target": "bounded by the cap (per request), multipart flat",
    }


def uploads(workdir: Path) -> dict:
    """Uploads API: a 20 MB and a 200 MB file sent as 50 MiB parts (last first), then
    completed. The worker's RSS growth while it assembles each (peak during the complete over
    the RSS just before) must not grow with the size; assembly speed is set against cp and
    against a direct upload of the same file (same validator) in the same run."""
    zumik = Zumik(
        workdir / "data-uploads",
        "http://127.0.0.1:9/v1",
        extra_env={
            "ZUMIK_MAX_REQUESTS": "1000000",
            "ZUMIK_MAX_UPLOAD_BYTES": str(1 << 30),
            "ZUMIK_MAX_BYTES": str(2 << 30),
        },
    )
    result: dict = {
        "scenario": "uploads",
        "target": "RSS growth while assembling <= 32 MB, the same for both sizes",
    }
    try:
        [pid] = zumik.worker_pids()
        for size_mb in (20, 200):
            path = big_file(workdir / f"up{size_mb}.jsonl", size_mb)
            size = path.stat().st_size
            started = time.perf_counter()
            shutil.copyfile(path, workdir / "copy.jsonl")
            os.sync()
            cp_s = time.perf_counter() - started
            os.unlink(workdir / "copy.jsonl")
            started = time.perf_counter()  # the baseline: the same file as one direct upload
            direct = zumik.upload_streaming(path)
            direct_s = time.perf_counter() - started
            requests.delete(f"{zumik.url}/v1/files/{direct}", headers=AUTH, timeout=60)
            upload = requests.post(
                zumik.url + "/v1/uploads",
                headers=AUTH,
                timeout=60,
                json={
                    "bytes": size,
                    "filename": path.name,
                    "mime_type": "application/jsonl",
                    "purpose": "batch",
                },
            ).json()
            part_size = 50 * 1024 * 1024
            part_ids = {}
            for start in reversed(range(0, size, part_size)):
                with open(path, "rb") as f:
                    f.seek(start)
                    chunk = f.read(part_size)
                part = requests.post(
                    f"{zumik.url}/v1/uploads/{upload['id']}/parts",
                    headers=AUTH,
                    files={"data": ("upload", chunk)},
                    timeout=600,
                )
                part.raise_for_status()
                part_ids[start] = part.json()["id"]
            before = rss_kb(pid)
            sampler = RssSampler(pid)
            started = time.perf_counter()
            done = requests.post(
                f"{zumik.url}/v1/uploads/{upload['id']}/complete",
                headers=AUTH,
                timeout=600,
                json={"part_ids": [part_ids[k] for k in sorted(part_ids)]},
            )
            complete_s = time.perf_counter() - started
            peak = sampler.stop()
            done.raise_for_status()
            assert done.json()["file"]["bytes"] == size
            result[f"assemble_rss_growth_mb_{size_mb}"] = round((peak - before) / 1024, 1)
            result[f"assemble_mb_s_{size_mb}"] = round(size / 1e6 / complete_s)
            result[f"assemble_vs_cp_{size_mb}"] = round(cp_s / complete_s, 3)
            result[f"assemble_vs_direct_upload_{size_mb}"] = round(direct_s / complete_s, 3)
            result[f"worker_rss_mb_after_{size_mb}"] = round(rss_kb(pid) / 1024, 1)
            os.unlink(path)
    finally:
        zumik.stop()
    return result


def estimate(workdir: Path) -> dict:
    """``POST /v1/files/{id}/estimate`` of a 50,000-line file: with the heuristic (no
    tokenizer) and with the provider's vLLM-shaped ``/tokenize`` (the fake provider, in its
    own process, 8 requests at once), each against the file's own upload (the streaming
    validation of the same bytes) measured in the same run. Best of ``ROUNDS``."""
    provider = Provider(0.0)
    zumik = Zumik(
        workdir / "estimate-data",
        provider.url,
        workers=1,
        # the whole file through the tokenizer, on a connection allowed to wait that long
        extra_env={"ZUMIK_ESTIMATE_SECONDS": "300", "ZUMIK_CLIENT_TIMEOUT": "600"},
    )
    try:
        path = lines_file(workdir / "estimate.jsonl", 50_000)
        uploads, heuristic, tokenized = [], [], []
        file_id = ""
        for _ in range(ROUNDS):
            started = time.perf_counter()
            file_id = zumik.upload(path)
            uploads.append(time.perf_counter() - started)
        url = f"{zumik.url}/v1/files/{file_id}/estimate"
        body = {"endpoint": "/v1/chat/completions"}

        def timed(payload: dict) -> tuple[float, dict]:
            started = time.perf_counter()
            answer = requests.post(url, headers=AUTH, json=payload, timeout=600)
            answer.raise_for_status()
            return time.perf_counter() - started, answer.json()

        for _ in range(ROUNDS):
            heuristic.append(timed({**body, "tokenizer": False}))
        requests.post(provider.url.replace("/v1", "/_control"), json={"tokenize": True}, timeout=10)
        for _ in range(ROUNDS):
            tokenized.append(timed(body))
        base = min(uploads)
        fast = min(heuristic, key=lambda r: r[0])
        slow = min(tokenized, key=lambda r: r[0])
        return {
            "scenario": "estimate",
            "lines": 50_000,
            "upload_s": round(base, 3),
            "heuristic_s": round(fast[0], 3),
            "heuristic_vs_upload": round(fast[0] / base, 3),
            "heuristic_lines_per_s": round(50_000 / fast[0]),
            "tokenizer_s": round(slow[0], 3),
            "tokenizer_vs_upload": round(slow[0] / base, 3),
            "tokenizer_lines_per_s": round(50_000 / slow[0]),
            "tokenized_lines": slow[1]["tokenized_lines"],
            "method": slow[1]["input_tokens_method"],
        }
    finally:
        zumik.stop()
        provider.stop()


SCENARIOS = {
    "overhead": lambda w: throughput("overhead", 0.0, 5000, 64, w, ">= 0.9"),
    "overhead_cpu": overhead_cpu,
    "latency": lambda w: throughput("latency", 0.05, 5000, 64, w, ">= 0.9"),
    "concurrency": lambda w: throughput("concurrency", 1.0, 5000, 512, w, ">= 0.9 x C/L"),
    "memory": memory,
    "transfer": transfer,
    "responsiveness": responsiveness,
    "scale": scale,
    "sharedfs": sharedfs,
    "fairness": fairness,
    "json_upload": json_upload,
    "uploads": uploads,
    "estimate": estimate,
    "embeddings": embeddings.fake,
    "embeddings_llama": embeddings.llama,
    "results_paging": lambda w: results_paging.scenario(w, Zumik, Provider, lines_file, AUTH),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    names = args.scenarios or list(SCENARIOS)
    results = []
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        for name in names:
            print(f"running {name} ...", flush=True)
            result = SCENARIOS[name](Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    if not args.no_record:
        record(results, names)


def record(results: list[dict], names: list[str]) -> None:
    header = (
        f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} - "
        f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}\n\nCommand: `python bench/bench.py "
        f"{' '.join(names)}`\n\n"
    )
    rows = "".join(f"- `{json.dumps(r)}`\n" for r in results)
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(header + rows)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    _ = aiohttp  # the baseline's client; imported here so a missing install fails early
    main()
