"""The embeddings scenario: Zumik's inputs/s on an embeddings batch as a ratio of a bare
client packing 64 inputs per request and a bare client sending one input per request, all
three in the same run against the same server.

Upstreams: the fake provider with a per-request cost (served one request at a time, like a
model server: ``EMBED_REQUEST_COST`` per request plus ``EMBED_ITEM_COST`` per input), and, when
a llama-cpp-python venv is present (``BENCH_LLAMA_VENV``, default ``/tmp/venv-llama``), the
real llama.cpp server with the tiny local model (``../shared/tools/llama``). Against llama.cpp
every Zumik vector is also compared with the one-by-one client's vector for the same text.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from fake_provider import free_port  # noqa: E402

EMBED_REQUEST_COST = 0.0025  # s per request (the llama.cpp: ~298 inputs/s alone)
EMBED_ITEM_COST = 0.0005  # s per input (... and ~1,400/s packing 64)
TEXTS = 2000
PACK = 64
ROUNDS = 3
WORDS = ["hi", "hello", "the", "world", "test", "ok", "yes", "no"]  # one token each in the
# tiny model's vocabulary (other text falls back to one token per byte)
LLAMA_TOOLS = ROOT.parent.parent / "shared" / "tools" / "llama"


# The tools' tiny model with ``llama.pooling_type = mean`` in its metadata (the server has no
# pooling flag; without a pooling type it answers per-token vectors, which Zumik's check sees
# differ and then sends one line at a time).
MEAN_POOLING_MODEL = r"""
import runpy, sys
import gguf
maker, out = sys.argv[1], sys.argv[2]
add_name = gguf.GGUFWriter.add_name
def with_pooling(self, name):
    add_name(self, name)
    self.add_pooling_type(gguf.PoolingType.MEAN)
gguf.GGUFWriter.add_name = with_pooling
sys.argv = [maker, "--out", out]
runpy.run_path(maker, run_name="__main__")
"""


def texts(n: int = TEXTS, seed: int = 0) -> list[str]:
    """Short texts of 4 to 51 words (5-52 tokens with the BOS, as in the issue), deterministic."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 51))) for _ in range(n)]


def lines_file(path: Path, corpus: list[str], model: str) -> Path:
    with open(path, "w") as f:
        for i, text in enumerate(corpus):
            body = {"model": model, "input": text}
            line = {"custom_id": f"t{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
            f.write(json.dumps(line) + "\n")
    return path


async def _bare(url: str, model: str, corpus: list[str], per_request: int, concurrency: int):
    """A bare aiohttp client: (seconds, vectors in corpus order)."""
    chunks = [corpus[i : i + per_request] for i in range(0, len(corpus), per_request)]
    vectors: list[Any] = [None] * len(corpus)
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(at: int, chunk: list[str]) -> None:
            payload = {"model": model, "input": chunk if per_request > 1 else chunk[0]}
            async with gate, session.post(url + "/embeddings", json=payload) as response:
                answer = await response.json()
            assert response.status == 200, answer
            for item in answer["data"]:
                vectors[at + item["index"]] = item["embedding"]

        started = time.perf_counter()
        await asyncio.gather(*(one(i * per_request, c) for i, c in enumerate(chunks)))
        return time.perf_counter() - started, vectors


def bare(url: str, model: str, corpus: list[str], per_request: int, concurrency: int = 4):
    return asyncio.run(_bare(url, model, corpus, per_request, concurrency))


def zumik_batch(zumik: Any, path: Path) -> tuple[float, dict, list[Any]]:
    """Create to the server's ``completed`` log line; the batch and its vectors by line."""
    file_id = zumik.upload(path)
    started = time.time()
    response = requests.post(
        zumik.url + "/v1/batches",
        headers=zumik_auth(),
        timeout=30,
        json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"},
    )
    response.raise_for_status()
    batch_id = response.json()["id"]
    batch = zumik.wait(batch_id, poll=0.1)
    elapsed = zumik.completed_at(batch_id) - started
    content = requests.get(
        f"{zumik.url}/v1/files/{batch['output_file_id']}/content", headers=zumik_auth(), timeout=60
    ).content
    vectors: list[Any] = [None] * batch["request_counts"]["total"]
    for raw in content.splitlines():
        line = json.loads(raw)
        vectors[int(line["custom_id"][1:])] = line["response"]["body"]["data"][0]["embedding"]
    return elapsed, batch, vectors


def zumik_auth() -> dict[str, str]:
    from bench import AUTH

    return AUTH


def max_diff(left: list[Any], right: list[Any]) -> float:
    return max(
        abs(a - b) for u, v in zip(left, right, strict=True) for a, b in zip(u, v, strict=True)
    )


def compare(name: str, url: str, model: str, workdir: Path, zumik_factory: Any) -> dict:
    corpus = texts()
    path = lines_file(workdir / f"{name}.jsonl", corpus, model)
    zumik = zumik_factory(workdir / f"data-{name}", url)
    packed, alone, runs = [], [], []
    try:
        zumik_batch(zumik, lines_file(workdir / "warm.jsonl", corpus[:200], model))  # warm-up
        for _ in range(ROUNDS):
            packed.append(bare(url, model, corpus, PACK))
            alone.append(bare(url, model, corpus, 1))
            runs.append(zumik_batch(zumik, path))
    finally:
        zumik.stop()
    unpacked = zumik_factory(workdir / f"data-{name}-1", url, {"ZUMIK_EMBEDDING_PACK": "1"})
    try:  # Zumik before packing (embedding_pack = 1), one round for reference
        one_line_each = zumik_batch(unpacked, path)[0]
    finally:
        unpacked.stop()
    n = len(corpus)
    best_packed = min(t for t, _ in packed)
    best_alone = min(t for t, _ in alone)
    best_zumik = min(r[0] for r in runs)
    assert all(r[1]["request_counts"]["completed"] == n for r in runs), runs[-1][1]
    one_by_one = alone[-1][1]
    return {
        "scenario": name,
        "inputs": n,
        "bare_packed_64_inputs_s": round(n / best_packed),
        "bare_one_by_one_inputs_s": round(n / best_alone),
        "zumik_inputs_s": round(n / best_zumik),
        "ratio_to_packed": round(best_packed / best_zumik, 3),
        "ratio_to_one_by_one": round(best_alone / best_zumik, 3),
        "zumik_pack_1_inputs_s": round(n / one_line_each),
        "speedup_over_pack_1": round(one_line_each / best_zumik, 2),
        "packed_vs_one_by_one_max_diff": max_diff(packed[-1][1], one_by_one),
        "zumik_vs_one_by_one_max_diff": max(max_diff(r[2], one_by_one) for r in runs),
        "target": "ratio_to_packed >= 0.8, vectors within 1e-4",
    }


def fake(workdir: Path) -> dict:
    from bench import Provider, Zumik

    provider = Provider(0.0)
    try:
        requests.post(
            provider.url.replace("/v1", "/_control"),
            json={"embed_request_cost": EMBED_REQUEST_COST, "embed_item_cost": EMBED_ITEM_COST},
            timeout=5,
        ).raise_for_status()
        result = compare(
            "embeddings",
            provider.url,
            "bench-embed",
            workdir,
            lambda data, url, env=None: Zumik(data, url, workers=2, concurrency=32, extra_env=env),
        )
        result["provider_cost"] = f"{EMBED_REQUEST_COST} s/request + {EMBED_ITEM_COST} s/input"
        return result
    finally:
        provider.stop()


def llama(workdir: Path) -> dict:
    venv = Path(os.environ.get("BENCH_LLAMA_VENV", "/tmp/venv-llama"))
    python = venv / "bin" / "python"
    if not python.exists():
        return {"scenario": "embeddings_llama", "skipped": f"no llama-cpp-python venv at {venv}"}
    from bench import Zumik, wait_http

    model = workdir / "tiny.gguf"
    maker = workdir / "make_mean_gguf.py"
    maker.write_text(MEAN_POOLING_MODEL)
    subprocess.run(
        [str(python), str(maker), str(LLAMA_TOOLS / "make_tiny_gguf.py"), str(model)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(workdir / "llama.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            str(python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "tiny",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "512",
            "--embedding",
            "True",
            "--verbose",
            "False",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(url + "/models", timeout=60)
        result = compare(
            "embeddings_llama",
            url,
            "tiny",
            workdir,
            lambda data, url, env=None: Zumik(data, url, workers=2, concurrency=32, extra_env=env),
        )
        result["provider"] = "llama-cpp-python server, tiny local GGUF, mean pooling"
        return result
    finally:
        server.terminate()
        server.wait(20)
        log.close()
