"""Scenario ``results_paging``: what one page of ``GET /v1/batches/{id}/results`` costs, at
the start of a 50,000-line batch and near its end, while it runs (read from the journal) and
once it ended (from the files). A page seeks to its cursor, so the page near the end should
cost what the first one does (ratio ~1), and a fraction of reading every result (the
baseline, measured in the same run: paging through all of them, or downloading the output
file)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import requests

TOTAL = 50_000
PAGE = 100
REPS = 25


def _page(url: str, auth: dict[str, str], after: str | None, limit: int = PAGE) -> dict:
    params: dict[str, Any] = {"limit": limit}
    if after:
        params["after"] = after
    response = requests.get(url, headers=auth, params=params, timeout=60)
    response.raise_for_status()
    return response.json()


def _walk(url: str, auth: dict[str, str], stop_at: int) -> tuple[str | None, int, float]:
    """Page with limit=1000 until ``stop_at`` results were seen: the cursor there, the count
    and the seconds it took."""
    after, seen = None, 0
    started = time.perf_counter()
    while seen < stop_at:
        page = _page(url, auth, after, min(1000, stop_at - seen))
        seen += len(page["data"])
        after = page["last_id"]
        if not page["data"]:
            time.sleep(0.05)
    return after, seen, time.perf_counter() - started


def _time_page(url: str, auth: dict[str, str], after: str | None) -> float:
    times = []
    for _ in range(REPS):
        started = time.perf_counter()
        page = _page(url, auth, after)
        times.append(time.perf_counter() - started)
        assert len(page["data"]) == PAGE, len(page["data"])
    return statistics.median(times) * 1000


def scenario(workdir: Path, zumik_cls: Any, provider_cls: Any, lines_file: Any, auth: dict) -> dict:
    provider = provider_cls(0.05)
    path = lines_file(workdir / "paging.jsonl", TOTAL)
    zumik = zumik_cls(workdir / "data-paging", provider.url, workers=2, concurrency=48)
    try:
        file_id = zumik.upload(path)
        batch_id = zumik.create(file_id)
        url = f"{zumik.url}/v1/batches/{batch_id}/results"
        status = f"{zumik.url}/v1/batches/{batch_id}"
        # while it runs: wait for 41,000 results, then time a page at 0 and at 40,000
        deadline = time.time() + 900
        while True:
            batch = requests.get(status, headers=auth, timeout=30).json()
            counts = batch["request_counts"]
            if counts["completed"] + counts["failed"] >= 41_000:
                break
            assert batch["status"] in ("validating", "in_progress"), batch["status"]
            assert time.time() < deadline
            time.sleep(0.2)
        near_end, _, _ = _walk(url, auth, 40_000)
        running_first = _time_page(url, auth, None)
        running_end = _time_page(url, auth, near_end)
        running_state = requests.get(status, headers=auth, timeout=30).json()["status"]
        batch = zumik.wait(batch_id)
        # once it ended: the same two pages from the files, and the two baselines
        near_end, _, _ = _walk(url, auth, TOTAL - 1000)
        done_first = _time_page(url, auth, None)
        done_end = _time_page(url, auth, near_end)
        _, seen, walk_s = _walk(url, auth, TOTAL)
        started = time.perf_counter()
        body = requests.get(
            f"{zumik.url}/v1/files/{batch['output_file_id']}/content", headers=auth, timeout=600
        ).content
        download_ms = (time.perf_counter() - started) * 1000
        assert seen == TOTAL and body.count(b"\n") == TOTAL
    finally:
        zumik.stop()
        provider.stop()
    return {
        "scenario": "results_paging",
        "lines": TOTAL,
        "page": PAGE,
        "running_state_while_timed": running_state,
        "running_page_at_0_ms": round(running_first, 2),
        "running_page_at_40k_ms": round(running_end, 2),
        "running_ratio_40k_vs_0": round(running_end / running_first, 3),
        "done_page_at_0_ms": round(done_first, 2),
        "done_page_at_49k_ms": round(done_end, 2),
        "done_ratio_49k_vs_0": round(done_end / done_first, 3),
        "all_50k_by_pages_of_1000_ms": round(walk_s * 1000, 1),
        "output_download_ms": round(download_ms, 1),
        "page_vs_download": round(done_end / download_ms, 4),
        "target": "ratios ~1 (a page costs its own size, not its position)",
    }
