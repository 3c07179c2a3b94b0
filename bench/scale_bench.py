"""The ``scale`` scenario (issue 28): everyday requests in a project holding 100, 10,000 and
100,000 files and batch records, each request's median as a ratio to its cost at 100.

A project is built fast: files (metadata + a one-line blob) and ended batch records written
straight in the layout from before the ledger, with creation times spread over the past week
(records live a week), then the store's own start-up recovery (``ProjectStore.recover``) counts
them and builds the ledger and listing indexes: the upgrade path, timed. Then Zumik runs under
gunicorn (2 workers, fake provider) and each request is sent ``REPEAT`` times.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zumik.core import ids, records  # noqa: E402
from zumik.storage.store import ProjectStore  # noqa: E402

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROJECT = "bench"
WEEK = 7 * 86_400
REPEAT = 40
LINE = (
    b'{"custom_id":"r0","method":"POST","url":"/v1/chat/completions",'
    b'"body":{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}}\n'
)
SIZES = tuple(int(n) for n in os.environ.get("BENCH_SCALE_SIZES", "100,10000,100000").split(","))


def build(data_dir: Path, n: int) -> float:
    """``n`` files and ``n`` ended batch records in today's layout; returns the seconds the
    store's recovery took to count them and build its indexes."""
    store = ProjectStore(data_dir, PROJECT).ensure()
    now = time.time()
    step = WEEK / n
    file_ids = []
    for i in range(n):
        created = now - WEEK + i * step
        file_id = ids.new_id(ids.FILE_PREFIX, created)
        file_ids.append(file_id)
        store.file_data_path(file_id).write_bytes(LINE)
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(LINE),
            "created_at": int(created),
            "filename": f"in{i}.jsonl",
            "purpose": "batch",
            "status": "processed",
            "status_details": None,
            "expires_at": None,
            "requests": 1,
        }
        store.file_meta_path(file_id).write_text(json.dumps(meta))
    for i in range(n):
        created = now - WEEK + i * step + 1
        record = records.new_batch(
            ids.new_id(ids.BATCH_PREFIX, created),
            now=int(created),
            input_file_id=file_ids[i],
            endpoint="/v1/chat/completions",
            window="24h",
            metadata={"n": str(i)},
            total=1,
        )
        records.move(record, records.Status.COMPLETED, int(created) + 60)
        record["request_counts"]["completed"] = 1
        store.batch(record["id"]).record_path.write_text(json.dumps(record))
    started = time.perf_counter()
    store.recover()
    return time.perf_counter() - started


def median_ms(send: Callable[[], requests.Response]) -> float:
    for _ in range(5):  # warm both workers
        send().raise_for_status()
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        response = send()
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times) * 1000


def measure(zumik: Any, batch_id: str, input_id: str) -> dict[str, float]:
    url = zumik.url
    session = requests.Session()

    def upload() -> requests.Response:
        return session.post(
            url + "/v1/files",
            headers=AUTH,
            files={"file": ("one.jsonl", LINE)},
            data={"purpose": "batch"},
            timeout=60,
        )

    def create() -> requests.Response:
        return session.post(
            url + "/v1/batches",
            headers=AUTH,
            json={"input_file_id": input_id, "endpoint": "/v1/chat/completions"},
            timeout=60,
        )

    return {
        "POST /v1/files": median_ms(upload),
        "POST /v1/batches": median_ms(create),
        "GET /v1/batches?limit=20": median_ms(
            lambda: session.get(url + "/v1/batches?limit=20", headers=AUTH, timeout=60)
        ),
        "GET /v1/files?limit=20": median_ms(
            lambda: session.get(url + "/v1/files?limit=20", headers=AUTH, timeout=60)
        ),
        "GET /v1/batches/{id}": median_ms(
            lambda: session.get(f"{url}/v1/batches/{batch_id}", headers=AUTH, timeout=60)
        ),
    }


def run(workdir: Path, zumik_class: Any, provider_class: Any, rss_kb: Any) -> dict:
    """The scenario; ``zumik_class``, ``provider_class`` and ``rss_kb`` come from bench.py."""
    result: dict[str, Any] = {
        "scenario": "scale",
        "target": "each request <= 2x its cost at 100 with 100,000 files and batch records",
        "disk": os.environ.get("BENCH_SCALE_DIR", "local"),
    }
    base = Path(os.environ.get("BENCH_SCALE_DIR") or workdir)
    provider = provider_class(0.0)
    costs: dict[int, dict[str, float]] = {}
    try:
        for n in SIZES:
            data_dir = base / f"data-scale-{n}"
            result[f"build_recover_s_{n}"] = round(build(data_dir, n), 2)
            store = ProjectStore(data_dir, PROJECT)
            batch_id = next(store.batch_ids())
            input_id = next(store.iter_file_ids())
            zumik = zumik_class(
                data_dir,
                provider.url,
                workers=2,
                extra_env={
                    "ZUMIK_API_KEYS": f"{KEY}={PROJECT}",
                    "ZUMIK_MAX_FILES": "10000000",
                    "ZUMIK_MAX_BYTES": str(1 << 40),
                    "ZUMIK_MAX_RECORDS": "10000000",
                    "ZUMIK_MAX_ACTIVE_BATCHES": "1000",
                },
            )
            try:
                costs[n] = measure(zumik, batch_id, input_id)
                result[f"worker_rss_mb_{n}"] = round(
                    max(rss_kb(pid) for pid in zumik.worker_pids()) / 1024, 1
                )
            finally:
                zumik.stop()
    finally:
        provider.stop()
    first = SIZES[0]
    for n in SIZES:
        for name, ms in costs[n].items():
            result[f"{name} ms@{n}"] = round(ms, 2)
            if n != first:
                result[f"{name} x@{n}"] = round(ms / costs[first][name], 2)
    return result
