"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, against
real gunicorn and the fake provider. One browser and one server for the module.

``ZUMIK_SCREENSHOTS=DIR`` keeps the pages' screenshots in DIR; the README's come from
``bench/screenshots.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import AUTH_A, AUTH_B, KEY_A, KEY_B, Server, echo_lines, jsonl, request_line
from fake_provider import ProviderThread

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,  # a real browser against real gunicorn
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (.ci/run installs chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderThread]:
    thread = ProviderThread().start()
    thread.provider.control["latency"] = 0.15
    yield thread
    if thread._thread.is_alive():
        thread.stop()


@pytest.fixture(scope="module")
def admin_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("dash") / "data"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "zumik.cli",
            "--data-dir",
            str(data_dir),
            "keys",
            "create",
            "--admin",
            "ops",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return data_dir, made.stdout.strip()


@pytest.fixture(scope="module")
def server(admin_key: tuple[Path, str], provider: ProviderThread) -> Iterator[Server]:
    data_dir, _ = admin_key
    instance = Server(
        data_dir,
        {
            "ZUMIK_UPSTREAM_URL": provider.url,
            "ZUMIK_CONCURRENCY": "2",
            "ZUMIK_MAX_ATTEMPTS": "2",
            "ZUMIK_RETRY_BACKOFF": "0.05",
        },
        workers=2,
    ).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server: Server):
    context = browser.new_context(
        base_url=server.url, viewport={"width": 1280, "height": 860}, accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def sign_in(page, key: str) -> None:
    page.goto("/dashboard/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/")


def start_batch(
    server: Server,
    lines: bytes,
    auth: dict[str, str] = AUTH_A,
    metadata: dict[str, str] | None = None,
) -> str:
    file_id = requests.post(
        f"{server.url}/v1/files",
        headers=auth,
        timeout=30,
        files={"file": ("in.jsonl", lines)},
        data={"purpose": "batch"},
    ).json()["id"]
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": metadata or {},
    }
    answer = requests.post(f"{server.url}/v1/batches", headers=auth, json=body, timeout=30)
    return answer.json()["id"]


def screenshot(page, name: str) -> None:
    """``ZUMIK_SCREENSHOTS=DIR``: keep what the tests saw, to look at (the README's own
    screenshots come from a realistic demo: bench/screenshots.py)."""
    directory = os.environ.get("ZUMIK_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / name), full_page=False)


def test_sign_in_wrong_key_then_right_key(page) -> None:
    page.goto("/dashboard/")
    assert page.url.endswith("/dashboard/signin")
    page.get_by_label("API key").fill("zk_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    assert "That key is not valid" in page.get_by_role("alert").inner_text()
    page.get_by_label("API key").fill(KEY_A)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/")
    assert page.get_by_role("heading", name="Batches", exact=True).is_visible()
    assert page.locator(".project").inner_text().startswith("proj-a")


def test_progress_moves_live_then_detail_and_output_download(page, server: Server) -> None:
    metadata = {"team": "search", "run": "nightly <b>42</b>"}
    done_already = start_batch(
        server, echo_lines(3, model="gpt-x", prefix="d"), metadata={"purpose": "warm-up"}
    )
    running = start_batch(server, echo_lines(80, model="gpt-x"), metadata=metadata)
    sign_in(page, KEY_A)
    page.evaluate("window.__notReloaded = true")
    row = page.locator(f'tr[data-batch="{running}"]')
    text = row.locator('[data-field="text"]')
    first = text.inner_text()
    page.wait_for_function(
        "([sel, before]) => { const el = document.querySelector(sel);"
        " return el && el.textContent !== before && /^[1-9]/.test(el.textContent); }",
        arg=[f'tr[data-batch="{running}"] [data-field="text"]', first],
    )
    assert page.evaluate("window.__notReloaded") is True  # updated in place, no reload
    assert row.get_by_text("nightly <b>42</b>").count() == 1  # metadata shown as text
    assert row.locator('[data-field="rate"]').inner_text().endswith("lines/s")
    # The warm-up batch is listed beside the running one and its row, too, reaches its end.
    warm_up = page.locator(f'tr[data-batch="{done_already}"]')
    warm_up.locator('[data-field="status"]').filter(has_text="completed").wait_for()
    assert warm_up.locator('[data-field="text"]').inner_text() == "3 / 3"
    assert warm_up.get_by_text("warm-up").count() == 1
    screenshot(page, "dashboard-batches.png")
    page.get_by_role("link", name=running).click()
    page.wait_for_url(f"**/dashboard/batches/{running}")
    detail = page.locator("[data-detail] .badge").first
    detail.filter(has_text="completed").wait_for(timeout=40_000)  # updated live, then
    page.locator(".timeline").filter(has_text="completed").wait_for()  # the region refreshed
    assert page.evaluate("window.__notReloaded") is None  # (a new page: the click navigated)
    timeline = page.locator(".timeline").inner_text()
    for step in ("created", "in progress", "finalizing", "completed"):
        assert step in timeline
    assert page.get_by_role("cell", name="nightly <b>42</b>").count() == 1
    screenshot(page, "dashboard-batch.png")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download output file").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    assert len(lines) == 80
    assert {json.loads(line)["custom_id"] for line in lines} == {f"r{i}" for i in range(80)}


CELLS_AGREE = """([before]) => {
  const text = s => (document.querySelector(s) || {}).textContent || "";
  const number = s => Number(text(s).replace(/,/g, ""));
  const done = Number(text('[data-field="text"]').split(" / ")[0].replace(/,/g, ""));
  const cells = number('[data-field="completed_text"]') + number('[data-field="failed_text"]');
  return cells > before && cells === done && number('[data-field="total_tokens"]') > 0
    && text('[data-field="run_time"]') !== "—";
}"""


def test_cancel_a_running_batch(page, server: Server) -> None:
    batch_id = start_batch(server, echo_lines(300, model="gpt-x", prefix="c"))
    sign_in(page, KEY_A)
    page.goto(f"/dashboard/batches/{batch_id}")
    page.evaluate("window.__notReloaded = true")
    before = int(page.locator('[data-field="completed_text"]').inner_text().replace(",", ""))
    # the cells, the usage and the durations move with the headline, in place
    page.wait_for_function(CELLS_AGREE, arg=[before], timeout=30_000)
    assert page.evaluate("window.__notReloaded") is True
    screenshot(page, "dashboard-batch-running.png")
    page.get_by_text("Cancel batch…").click()
    page.get_by_role("button", name="Yes, cancel this batch").click()
    assert "Cancel" in page.get_by_role("status").first.inner_text()
    page.locator("[data-detail] .badge").filter(has_text="cancelled").wait_for(timeout=30_000)
    # the notice follows the batch: "Cancelling..." turns "Cancelled" (also when it was done
    # before the page loaded), never left standing beside a cancelled badge
    page.locator('[data-flash="done"]').filter(has_text="Cancelled (cancelled)").wait_for(
        timeout=10_000
    )
    assert page.locator('[data-flash="cancelling"]').count() == 0
    record = requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A, timeout=10)
    assert record.json()["status"] == "cancelled"
    assert record.json()["request_counts"]["completed"] < 300


def test_a_failed_batch_says_why_and_its_times_stay_current(page, server: Server) -> None:
    wrong_url = jsonl(
        [
            request_line("ok", "fine", "gpt-x"),
            {
                "custom_id": "emb",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "gpt-x", "input": "x"},
            },
        ]
    )
    batch_id = start_batch(server, wrong_url)
    deadline = time.time() + 30
    while (
        requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A).json()["status"]
        != "failed"
    ):
        assert time.time() < deadline
        time.sleep(0.1)
    sign_in(page, KEY_A)
    row = page.locator(f'tr[data-batch="{batch_id}"]')
    assert "line 2" in row.locator('[data-field="reason"]').inner_text()
    page.goto(f"/dashboard/batches/{batch_id}")
    assert "line 2" in page.locator("p.reason").inner_text()
    ago = page.locator("[data-ago]").first
    assert ago.inner_text() in ("just now",) or ago.inner_text().endswith("s ago")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_function(
        "() => /[0-9]+ s ago/.test(document.querySelector('[data-ago]').textContent)"
        " && Number(document.querySelector('[data-ago]').textContent.split(' ')[0]) >= 5",
        timeout=30_000,
    )
    assert page.evaluate("window.__notReloaded") is True


def test_long_file_names_wrap_at_their_separators(page, server: Server) -> None:
    name = "customer_support_transcripts-2026-11-30.cleaned.deduplicated.final.jsonl"
    requests.post(
        f"{server.url}/v1/files",
        headers=AUTH_A,
        timeout=30,
        files={"file": (name, echo_lines(2))},
        data={"purpose": "batch"},
    )
    sign_in(page, KEY_A)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto("/dashboard/files")
    cell = page.locator(".filename", has_text="customer_support").first
    assert cell.inner_text().replace("\n", "") == name
    lines = page.evaluate(
        """(el) => { const r = document.createRange(); r.selectNodeContents(el);
        return Array.from(r.getClientRects()).length; }""",
        cell.element_handle(),
    )
    assert lines >= 2  # it wraps rather than overflowing the page
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    screenshot(page, "dashboard-files-phone.png")


def failing_lines(n: int, prefix: str, every: int) -> bytes:
    return jsonl(
        [
            request_line(
                f"{prefix}{i}",
                f"{prefix} {i}" + (" #fail:400:1" if i % every == 0 else ""),
                "gpt-x",
            )
            for i in range(n)
        ]
    )


def wait_status(server: Server, batch_id: str, statuses: tuple[str, ...]) -> dict:
    deadline = time.time() + 60
    while True:
        record = requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A, timeout=10)
        if record.json()["status"] in statuses:
            return record.json()
        assert time.time() < deadline, record.json()["status"]
        time.sleep(0.1)


def test_retry_button_opens_the_new_batch_linked_both_ways(page, server: Server) -> None:
    original = start_batch(server, failing_lines(9, "y", 3))
    assert wait_status(server, original, ("completed",))["request_counts"]["failed"] == 3
    sign_in(page, KEY_A)
    page.goto(f"/dashboard/batches/{original}")
    page.get_by_text("Retry 3 lines…").click()
    page.get_by_role("button", name="Yes, retry these lines").click()
    page.wait_for_url(re.compile(r".*/dashboard/batches/batch_(?!" + original[6:] + ")"))
    retry_id = page.url.rsplit("/", 1)[1]
    assert "Retrying 3 lines" in page.get_by_role("status").first.inner_text()
    assert page.get_by_role("link", name=original).count() == 1  # "Retry of"
    record = requests.get(f"{server.url}/v1/batches/{retry_id}", headers=AUTH_A, timeout=10)
    assert record.json()["retry_of"] == original
    page.locator("[data-detail] .badge").filter(has_text="completed").wait_for(timeout=40_000)
    page.get_by_role("link", name=original).click()
    page.wait_for_url(f"**/dashboard/batches/{original}")
    assert page.get_by_role("link", name=retry_id).count() == 1  # "Retried by"
    assert page.get_by_text("Retry 3 lines…").count() == 1  # the original's lines still failed
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download merged output").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    assert sorted(json.loads(x)["custom_id"] for x in lines) == sorted(f"y{i}" for i in range(9))


def test_failed_lines_appear_live_and_results_page_by_page(page, server: Server) -> None:
    # 200 lines at 0.15 s, 2 in flight: ~15 s of running, time enough on a loaded machine
    batch_id = start_batch(server, failing_lines(200, "f", 4))
    sign_in(page, KEY_A)
    page.goto(f"/dashboard/batches/{batch_id}")
    live = page.locator("[data-live-failures] [data-rows] tr")
    live.first.wait_for(timeout=60_000)
    still = requests.get(f"{server.url}/v1/batches/{batch_id}", headers=AUTH_A, timeout=10)
    assert still.json()["status"] == "in_progress"  # shown while it runs, not at the end
    assert live.first.locator("td").first.inner_text().startswith("f")
    assert "400" in live.first.inner_text()
    page.get_by_role("button", name="Read the first results").click()
    rows = page.locator("[data-results] [data-rows] tr")
    rows.first.wait_for()
    first_page = rows.all_inner_texts()
    assert 1 <= len(first_page) <= 20
    wait_status(server, batch_id, ("completed",))
    page.get_by_role("button", name="Next results").click()
    page.wait_for_function(
        "(before) => { const r = document.querySelectorAll('[data-results] [data-rows] tr');"
        " return r.length && r[0].innerText !== before; }",
        arg=first_page[0],
    )
    assert not set(rows.all_inner_texts()) & set(first_page)  # the next page, no repeats


def test_upload_by_file_chooser_and_a_validation_error(page, tmp_path: Path) -> None:
    good = tmp_path / "good <i>.jsonl"
    good.write_bytes(echo_lines(3))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl([request_line("x1")]) + b'{"custom_id": "x2", "method": "POST"\n')
    sign_in(page, KEY_A)
    page.get_by_role("link", name="Files").click()
    page.locator("#upload-file").set_input_files(str(good))
    status = page.locator("#upload-status")
    status.filter(has_text="Uploaded").wait_for()
    row = page.locator("tr[data-file]").filter(has_text="good <i>.jsonl")
    row.wait_for()
    assert "3 requests" in row.inner_text()
    page.locator("#upload-file").set_input_files(str(bad))
    status.filter(has_text="line 2").wait_for()
    assert "error" in (status.get_attribute("class") or "")
    assert page.locator("tr[data-file]").filter(has_text="bad.jsonl").count() == 0


def test_a_tenant_cannot_open_another_tenants_batch(page, server: Server) -> None:
    batch_id = start_batch(server, echo_lines(2, prefix="t"), auth=AUTH_A)
    sign_in(page, KEY_B)
    response = page.goto(f"/dashboard/batches/{batch_id}")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    assert page.locator(f'tr[data-batch="{batch_id}"]').count() == 0
    page.goto("/dashboard/")
    assert page.locator(f'tr[data-batch="{batch_id}"]').count() == 0


def test_sign_out(page) -> None:
    sign_in(page, KEY_A)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/dashboard/signin")
    assert "Signed out" in page.get_by_role("status").inner_text()
    page.goto("/dashboard/files")
    assert page.url.endswith("/dashboard/signin")


def test_operator_view_sees_every_project(
    page, server: Server, admin_key: tuple[Path, str]
) -> None:
    running = start_batch(server, echo_lines(60, model="gpt-x", prefix="o"), auth=AUTH_B)
    sign_in(page, admin_key[1])
    page.get_by_role("link", name="Operator").click()
    assert page.locator(".role").text_content() == "operator"
    assert page.get_by_role("cell", name=running).count() == 1  # proj-b's batch, seen by ops
    state = page.locator('tr[data-provider="default"] [data-field="state"]')
    assert re.search(r"up|no reports", state.inner_text())
    projects = page.locator("section", has=page.get_by_role("heading", name="Projects"))
    assert {"proj-a", "proj-b"} <= set(projects.locator("tbody td:first-child").all_inner_texts())
    assert (
        "free" in page.locator("section", has=page.get_by_role("heading", name="Disk")).inner_text()
    )
    page.get_by_role("link", name=running).click()  # another project's batch: read-only
    page.wait_for_url(f"**/dashboard/operator/projects/proj-b/batches/{running}")
    assert page.get_by_role("heading", name=running).is_visible()
    assert "read-only" in page.locator(".head").inner_text()
    assert page.get_by_text("Cancel batch…").count() == 0
    requests.post(f"{server.url}/v1/batches/{running}/cancel", headers=AUTH_B, timeout=10)


def test_a_tenant_key_gets_no_operator_view(page) -> None:
    sign_in(page, KEY_A)
    assert page.get_by_role("link", name="Operator").count() == 0
    response = page.goto("/dashboard/operator")
    assert response is not None and response.status == 403


def test_operator_view_shows_the_provider_going_down(
    page, server: Server, provider: ProviderThread, admin_key: tuple[Path, str]
) -> None:
    """Last in the module: it stops the module's provider."""
    start_batch(server, echo_lines(4, model="gpt-x", prefix="u"))  # traffic: executors report
    sign_in(page, admin_key[1])
    page.goto("/dashboard/operator")
    state = page.locator('tr[data-provider="default"] [data-field="state"]')
    state.filter(has_text="up").wait_for(timeout=30_000)  # the page refreshes itself
    provider.stop()
    stuck = start_batch(server, echo_lines(20, model="gpt-x", prefix="o"))
    state.filter(has_text="down").wait_for(timeout=40_000)
    row = page.locator('tr[data-provider="default"]')
    assert "held" in row.inner_text() or "down" in row.inner_text()
    requests.post(f"{server.url}/v1/batches/{stuck}/cancel", headers=AUTH_A, timeout=10)
