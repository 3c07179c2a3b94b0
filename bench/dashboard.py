"""Server-side render time of the dashboard with 1,000 batches, against the API's own list.

    .venv/bin/python bench/dashboard.py [--batches 1000] [--append]

Builds a project with N batch records (5 active, the rest terminal, 1 in 10 failed) through the
store, signs in with Flask's test client and times each page (median of 30 requests, after a
warm-up that fills the worker's status index). The baseline, measured in the same run, is the
API's ``GET /v1/batches?limit=50`` (one page of 50 records as JSON). ``--append`` adds the table
to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zumik import create_app  # noqa: E402
from zumik.core import records  # noqa: E402
from zumik.settings import load_settings  # noqa: E402
from zumik.storage.store import ProjectStore  # noqa: E402

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def build(data_dir: Path, count: int):
    app = create_app(load_settings({}, data_dir=data_dir, api_keys={KEY: "bench"}))
    client = app.test_client()
    line = (
        b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
        b'"body":{"model":"zumik-echo","messages":[{"role":"user","content":"hi"}]}}\n'
    )
    file_id = client.post(
        "/v1/files",
        headers=AUTH,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(line), "in.jsonl")},
    ).json["id"]
    store = ProjectStore(data_dir, "bench").ensure()
    now = int(time.time())
    for i in range(count):
        record = records.new_batch(
            f"batch_{i:024x}",
            now=now - count + i,
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            window="24h",
            metadata={"job": f"nightly-{i}", "team": "search"},
            total=100,
        )
        store.create_batch(record, max_active=count, max_files=10 * count, max_bytes=1 << 40)
        if i < count - 5:
            status = records.Status.FAILED if i % 10 == 0 else records.Status.COMPLETED
            store.update_batch(record["id"], lambda r, s=status: records.move(r, s, now))
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/dashboard/signin").text
    ).group(1)
    client.post("/dashboard/signin", data={"csrf_token": token, "key": KEY})
    return client, f"batch_{count - 1:024x}"


def median_ms(client, path: str, headers=None, rounds: int = 30) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        client, newest = build(Path(tmp) / "data", args.batches)
        started = time.perf_counter()
        client.get("/dashboard/")
        cold = (time.perf_counter() - started) * 1000
        baseline = median_ms(client, "/v1/batches?limit=50", AUTH)
        rows = [("cold first view of / (reads every record once)", cold)]
        for label, path in (
            ("batches, page 1 (50 rows)", "/dashboard/"),
            ("batches, failed filter, page 2", "/dashboard/?status=failed&page=2"),
            ("batches, page 20", "/dashboard/?page=20"),
            ("batch detail", f"/dashboard/batches/{newest}"),
            (
                "live poll of 50 ids",
                "/dashboard/api/batches?ids="
                + ",".join(f"batch_{i:024x}" for i in range(args.batches - 50, args.batches)),
            ),
            ("files", "/dashboard/files"),
        ):
            rows.append((label, median_ms(client, path)))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Dashboard render, {args.batches} batches ({stamp})",
        "",
        f"Baseline `GET /v1/batches?limit=50` (JSON): {baseline:.2f} ms median.",
        "",
        "| page | median ms | ratio to baseline |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {ms:.2f} | {ms / baseline:.2f} |" for label, ms in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
