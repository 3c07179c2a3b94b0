"""The README's dashboard screenshots, from a realistic demo (not test data).

    .venv/bin/python bench/screenshots.py

Starts the fake provider (with latency, so a batch is caught running) and real gunicorn in a
temp dir, makes a few batches with meaningful metadata (a finished one, one with failed lines,
one that failed validation, one running), and writes ``docs/dashboard-batches.png`` and
``docs/dashboard-batch.png`` with headless Chromium (``/usr/bin/chromium``, Playwright).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import AUTH_A, KEY_A, Server  # noqa: E402
from fake_provider import ProviderThread  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

MODEL = "qwen2.5-7b-instruct"
TOPICS = ("refund request", "login problem", "shipping delay", "billing question", "bug report")


def lines(count: int, prefix: str, task: str, fail_every: int = 0) -> bytes:
    out = []
    for i in range(count):
        text = f"{task}: ticket #{4100 + i} ({TOPICS[i % len(TOPICS)]})"
        if fail_every and i % fail_every == fail_every - 1:
            text = "#fail:400:99 " + text
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        line = {"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions"}
        out.append(json.dumps({**line, "body": body}))
    return ("\n".join(out) + "\n").encode()


def batch(server: Server, name: str, content: bytes, metadata: dict[str, str]) -> str:
    file_id = requests.post(
        f"{server.url}/v1/files",
        headers=AUTH_A,
        files={"file": (name, content)},
        data={"purpose": "batch"},
        timeout=30,
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "metadata": metadata}
    return requests.post(f"{server.url}/v1/batches", headers=AUTH_A, json=body, timeout=30).json()[
        "id"
    ]


def wait(server: Server, batch_id: str, done: int = 0, timeout: float = 120) -> None:
    """Until the batch ended (``done`` 0) or has at least ``done`` lines finished."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        record = requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A).json()
        counts = record["request_counts"]
        if done and counts["completed"] + counts["failed"] >= done:
            return
        if not done and record["status"] in ("completed", "failed", "cancelled", "expired"):
            return
        time.sleep(0.2)
    raise SystemExit(f"{batch_id} did not get there in {timeout} s")


def main() -> None:
    provider = ProviderThread().start()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "4"}
        env["ZUMIK_MAX_ATTEMPTS"] = "1"
        server = Server(Path(tmp) / "data", env).start()
        try:
            meta = {"team": "support", "job": "ticket-triage", "owner": "maria"}
            first = batch(server, "triage-2026-11-30.jsonl", lines(120, "t", "Triage"), meta)
            wait(server, first)
            meta = {"team": "support", "job": "reply-drafts", "owner": "maria"}
            drafts = lines(200, "d", "Draft a reply", fail_every=40)
            second = batch(server, "reply-drafts-2026-12-01.jsonl", drafts, meta)
            wait(server, second)
            wrong = json.dumps(
                {
                    "custom_id": "e-0",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": MODEL, "input": "x"},
                }
            ).encode()
            meta = {"team": "search", "job": "faq-embeddings"}
            failed = batch(
                server, "faq-embeddings.jsonl", lines(3, "f", "FAQ") + wrong + b"\n", meta
            )
            wait(server, failed)
            provider.provider.control["latency"] = 0.25
            meta = {"team": "search", "job": "query-rewrites", "run": "2026-12-02"}
            running = batch(
                server, "query-rewrites-2026-12-02.jsonl", lines(3000, "q", "Rewrite"), meta
            )
            wait(server, running, done=400)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
                )
                page = browser.new_page(
                    base_url=server.url, viewport={"width": 1280, "height": 760}
                )
                page.goto("/dashboard/")
                page.get_by_label("API key").fill(KEY_A)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url("**/dashboard/")
                page.wait_for_timeout(2500)  # one poll: the running batch shows its rate
                page.screenshot(path=str(ROOT / "docs" / "dashboard-batches.png"))
                page.goto(f"/dashboard/batches/{running}")
                page.wait_for_timeout(2500)
                page.set_viewport_size({"width": 1280, "height": 980})
                page.screenshot(path=str(ROOT / "docs" / "dashboard-batch.png"))
                browser.close()
            requests.post(f"{server.url}/v1/batches/{running}/cancel", headers=AUTH_A, timeout=10)
        finally:
            server.stop()
            provider.stop()
    print("wrote docs/dashboard-batches.png and docs/dashboard-batch.png")


if __name__ == "__main__":
    main()
