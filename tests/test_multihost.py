"""Two Zumik hosts on one JuiceFS volume (two mounts, each with its own client cache, metadata
in a local redis-server), both in ``ZUMIK_CLAIM_MODE=lease``: what a user of either host sees.

The machinery is in ``tests/juicefs_cluster.py``; where FUSE, redis-server or juicefs are
missing the module says so and skips (CI installs them: .ci/run).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import AUTH_A, AUTH_B, TERMINAL, echo_lines, wait_until
from juicefs_cluster import Cluster, ClusterUnavailable, Host

from zumik.storage.keys import create_key, list_keys, revoke_key

pytestmark = pytest.mark.slow  # two hosts on a JuiceFS mount

CONCURRENCY = 8
CLUSTER: list[Cluster] = []
RANK = {
    "validating": 0,
    "in_progress": 1,
    "finalizing": 2,
    "cancelling": 2,
    "completed": 3,
    "failed": 3,
    "cancelled": 3,
    "expired": 3,
}


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    try:  # ZUMIK_TEST_KEEP=1 keeps the folder (host and juicefs logs) for a post-mortem
        with Cluster(keep=bool(os.environ.get("ZUMIK_TEST_KEEP"))) as running:
            CLUSTER[:] = [running]
            yield running
    except ClusterUnavailable as exc:
        pytest.skip(f"multi-host tests need a JuiceFS mount: {exc}")


@pytest.fixture(scope="module")
def upstream():
    from fake_provider import ProviderThread

    thread = ProviderThread().start()
    yield thread
    thread.stop()


def base_env(upstream, **extra: str) -> dict[str, str]:
    return {
        "ZUMIK_UPSTREAM_URL": upstream.url,
        "ZUMIK_CONCURRENCY": str(CONCURRENCY),
        "ZUMIK_CLAIM_MODE": "lease",
        "ZUMIK_LEASE_SECONDS": "2",
        "ZUMIK_MAX_FILES": "1000",
        "ZUMIK_MAX_ACTIVE_BATCHES": "64",
        **extra,
    }


def control(upstream, **knobs) -> None:
    requests.post(upstream.url.replace("/v1", "/_control"), json=knobs, timeout=10)
    requests.post(upstream.url.replace("/v1", "/_reset"), timeout=10)


def upload(host: Host, content: bytes, auth=AUTH_A) -> requests.Response:
    return host.api(
        "POST", "/v1/files", auth, files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}
    )


def wait_terminal(host: Host, batch_id: str, timeout: float = 60.0) -> dict:
    try:
        return host.wait_batch(batch_id, timeout=timeout)
    except AssertionError:
        if os.environ.get("ZUMIK_TEST_KEEP"):
            dump_state(batch_id)
        raise


def dump_state(batch_id: str) -> None:
    """Stacks, the batch's files and the hosts' in-flight gauges, for a post-mortem."""
    print(CLUSTER[0].stacks())
    folder = CLUSTER[0].data_dir("a") / "proj-a" / "batches"
    for path in sorted(folder.glob(f"{batch_id}.*")):
        print("FILE", path.name, path.read_bytes()[:300])
    for other in CLUSTER[0].hosts.values():
        metrics = requests.get(other.url + "/metrics", timeout=10).text.splitlines()
        print("METRICS", other.name, [line for line in metrics if "inflight" in line])


def output_ids(host: Host, file_id: str | None) -> list[str]:
    if file_id is None:
        return []
    content = host.api("GET", f"/v1/files/{file_id}/content").content
    return [json.loads(line)["custom_id"] for line in content.splitlines()]


def holder(cluster: Cluster, batch_id: str) -> str | None:
    """Which host ("a" or "b") holds the batch's newest lease, when host names tell."""
    folder = cluster.data_dir("a") / "proj-a" / "batches"
    leases = sorted(
        folder.glob(f"{batch_id}.run/lease.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
    )
    if not leases:
        return None
    text = leases[-1].read_text(errors="replace")
    for name in ("a", "b"):
        if f"zumik-{name}" in text:
            return name
    return None


def wait_running(hosts: dict[str, Host], batch_id: str, lines: int = 20) -> None:
    def running() -> bool:
        record = hosts["a"].batch(batch_id)
        return record["status"] == "in_progress" and record["request_counts"]["completed"] >= lines

    wait_until(running, 30, f"batch {batch_id} to run {lines} lines")


def check_consistent(host: Host, record: dict, total: int) -> None:
    """A terminal record and its files agree: each custom_id at most once, counts true."""
    ids = output_ids(host, record["output_file_id"]) + output_ids(host, record["error_file_id"])
    assert len(ids) == len(set(ids)), "a custom_id appears twice"
    counts = record["request_counts"]
    assert counts["completed"] + counts["failed"] == len(set(ids)) <= total
    if record["status"] == "completed":
        assert len(set(ids)) == total
    if counts["completed"]:
        assert record["output_file_id"] is not None, record


# -- the tests ---------------------------------------------------------------------------------
def test_files_and_batches_visible_across_hosts(cluster, upstream):
    a, b = cluster.ensure(base_env(upstream))
    content = echo_lines(30)
    file_id = upload(a, content).json()["id"]
    assert b.api("GET", f"/v1/files/{file_id}").json()["bytes"] == len(content)
    assert b.api("GET", f"/v1/files/{file_id}/content").content == content
    batch_id = b.start_batch(content)
    record = wait_terminal(a, batch_id)
    assert record["status"] == "completed"
    assert sorted(output_ids(b, record["output_file_id"])) == sorted(f"r{i}" for i in range(30))
    assert a.api("DELETE", f"/v1/files/{file_id}").json()["deleted"] is True
    assert b.api("GET", f"/v1/files/{file_id}").status_code == 404


def test_quota_holds_across_hosts(cluster, upstream):
    a, b = cluster.ensure(base_env(upstream, ZUMIK_MAX_FILES="5"))
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda i: upload((a, b)[i % 2], echo_lines(3), AUTH_B).status_code, range(16))
        )
    stored = a.api("GET", "/v1/files", AUTH_B).json()["data"]
    assert answers.count(200) == 5 and len(stored) == 5, answers
    for meta in stored:
        b.api("DELETE", f"/v1/files/{meta['id']}", AUTH_B)


def test_sigkill_of_one_host_mid_batch_exactly_once(cluster, upstream):
    control(upstream, latency=0.05)
    hosts = dict(zip("ab", cluster.ensure(base_env(upstream)), strict=True))
    total = 400
    batch_ids = [
        hosts["ab"[i % 2]].start_batch(echo_lines(total, model="m", prefix=f"k{i}-"))
        for i in range(4)
    ]
    for batch_id in batch_ids:
        wait_running(hosts, batch_id)
    hosts["a"].stop(signal.SIGKILL)  # the whole host: master, workers, their executors
    started = time.time()
    records = [wait_terminal(hosts["b"], batch_id, timeout=90) for batch_id in batch_ids]
    took = time.time() - started
    for i, record in enumerate(records):
        ids = output_ids(hosts["b"], record["output_file_id"])
        assert record["status"] == "completed"
        assert sorted(ids) == sorted(f"k{i}-{n}" for n in range(total))  # each exactly once
    stats = requests.get(upstream.url.replace("/v1", "/_stats"), timeout=10).json()
    resent = stats["requests"] - 4 * total
    print(
        "\nmulti-host report:",
        json.dumps(
            {
                "fault": "SIGKILL host a",
                "batches": 4,
                "lines": 4 * total,
                "finished_after_s": round(took, 1),
                "resent_upstream": resent,
            }
        ),
    )
    assert resent <= 2 * CONCURRENCY  # at most what host a (2 workers) had in flight
    control(upstream, latency=0.0)


def test_cancel_through_the_other_host(cluster, upstream):
    control(upstream, latency=0.05)
    hosts = dict(zip("ab", cluster.ensure(base_env(upstream)), strict=True))
    batch_id = hosts["a"].start_batch(echo_lines(2000, model="m"))
    wait_running(hosts, batch_id)
    other = hosts["b" if holder(cluster, batch_id) == "a" else "a"]
    asked = time.time()
    assert other.api("POST", f"/v1/batches/{batch_id}/cancel").json()["status"] == "cancelling"
    record = wait_terminal(other, batch_id, timeout=30)
    took = time.time() - asked
    assert record["status"] == "cancelled"
    check_consistent(other, record, 2000)
    print("\nmulti-host report:", json.dumps({"cancel_across_hosts_s": round(took, 2)}))
    control(upstream, latency=0.0)


def watch_statuses(
    hosts: dict[str, Host], batch_id: str, stop: threading.Event, seen: list[tuple[str, str]]
) -> None:
    """Poll both hosts (keeping their caches warm, as users polling do) and note each status."""
    while not stop.is_set():
        for name, host in hosts.items():
            with contextlib.suppress(requests.RequestException):
                response = host.api("GET", f"/v1/batches/{batch_id}")
                seen.append(
                    (
                        name,
                        response.json()["status"]
                        if response.status_code == 200
                        else f"HTTP {response.status_code}",
                    )
                )
        time.sleep(0.01)


def test_cancel_racing_completion_across_hosts(cluster, upstream):
    """Cancel through one host just as the batch completes on the other, several times: the
    batch always ends (never stuck in cancelling or finalizing), no host ever shows a status
    going backwards, and whatever finished is in the referenced files."""
    control(upstream, latency=0.0)
    hosts = dict(zip("ab", cluster.ensure(base_env(upstream)), strict=True))
    total = 300
    for attempt in range(6):
        batch_id = hosts["a"].start_batch(echo_lines(total, prefix=f"c{attempt}-"))
        stop, seen = threading.Event(), []
        watcher = threading.Thread(target=watch_statuses, args=(hosts, batch_id, stop, seen))
        watcher.start()
        try:
            runner = None
            deadline = time.time() + 30
            while time.time() < deadline:  # cancel through the other host right at the end
                runner = holder(cluster, batch_id) or runner
                probe = hosts[runner or "a"]
                record = probe.batch(batch_id)
                if record["request_counts"]["completed"] >= total * (attempt % 3) // 3 or record[
                    "status"
                ] in ("finalizing", *TERMINAL):
                    break
            other = hosts["b" if runner == "a" else "a"]
            other.api("POST", f"/v1/batches/{batch_id}/cancel")
            record = wait_terminal(other, batch_id, timeout=20)
            for host in hosts.values():
                assert wait_terminal(host, batch_id, timeout=10)["status"] == record["status"]
        finally:
            stop.set()
            watcher.join()
        assert record["status"] in ("completed", "cancelled"), record
        check_consistent(other, record, total)
        for name in hosts:
            ranks = [RANK.get(s, -1) for host, s in seen if host == name]
            assert ranks == sorted(ranks), f"host {name} saw {[s for h, s in seen if h == name]}"
        # listed, not looked up: a name removed by the other mount can stay in this mount's
        # lookup cache for a second, while listings are not cached
        assert batch_id not in os.listdir(cluster.data_dir("a") / "proj-a" / "active")


def test_ten_concurrent_cancels_through_the_other_host(cluster, upstream):
    control(upstream, latency=0.05)
    hosts = dict(zip("ab", cluster.ensure(base_env(upstream)), strict=True))
    lines = 3000  # long enough that none can finish before all ten are running and cancelled
    batch_ids = [
        hosts["a"].start_batch(echo_lines(lines, model="m", prefix=f"t{i}-")) for i in range(10)
    ]
    # claimed and running (within a project the batch nearest its deadline is served first,
    # so the later ones may not have sent a line yet)
    for batch_id in batch_ids:
        wait_running(hosts, batch_id, lines=0)

    def cancel(batch_id: str) -> int:
        other = hosts["b" if holder(cluster, batch_id) == "a" else "a"]
        return other.api("POST", f"/v1/batches/{batch_id}/cancel").status_code

    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(cancel, batch_ids)) == [200] * 10
    for batch_id in batch_ids:
        record = wait_terminal(hosts["b"], batch_id, timeout=30)
        assert record["status"] == "cancelled", record
        check_consistent(hosts["b"], record, lines)
        assert hosts["a"].batch(batch_id)["status"] == "cancelled"
    control(upstream, latency=0.0)


def test_restarting_host_keeps_the_other_hosts_temp_files(cluster, upstream):
    """Host b restarts (its start-up recovery sweeps temp files) while host a is in the middle
    of an upload: a's temp file is a's to judge, so the upload still succeeds."""
    if not cluster.isolated:
        pytest.skip("needs PID and UTS namespaces (root) to give each host its own identity")
    a, b = cluster.ensure(base_env(upstream))
    go_on = threading.Event()  # each half > 1 MiB, what the server reads at a time
    first, second = echo_lines(12_000, prefix="x"), echo_lines(12_000, prefix="y")
    boundary = "zumikboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="in.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(first) + len(second) + len(tail)
    result: dict[str, tuple[int, bytes]] = {}

    def send() -> None:  # one upload whose second half waits for go_on
        connection = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        connection.putrequest("POST", "/v1/files")
        for key, value in {
            **AUTH_A,
            "Content-Length": str(length),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }.items():
            connection.putheader(key, value)
        connection.endheaders()
        connection.send(head + first)
        go_on.wait(30)
        connection.send(second + tail)
        answer = connection.getresponse()
        result["r"] = (answer.status, answer.read())

    sender = threading.Thread(target=send)
    files_dir = cluster.data_dir("a") / "proj-a" / "files"
    sender.start()
    try:
        wait_until(
            lambda: (
                files_dir.exists() and any(n.startswith(".tmp-") for n in os.listdir(files_dir))
            ),
            20,
            "the upload to start its temp file",
        )
        b.stop()
        b = cluster.start("b", cluster.env)  # start-up recovery runs here
    finally:
        go_on.set()
        sender.join()
    code, answer = result["r"]
    assert code == 200, answer
    file_id = json.loads(answer)["id"]
    assert b.api("GET", f"/v1/files/{file_id}").json()["bytes"] == len(first) + len(second)


def test_layout_is_one_folder_on_both_mounts(cluster):
    """Guard for the harness itself: the two mounts really are one volume."""
    probe = cluster.data_dir("a") / f"probe-{os.getpid()}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("x")
    assert Path(cluster.data_dir("b") / probe.name).read_text() == "x"
    probe.unlink()


def test_keys_edited_on_both_hosts_at_once_all_count_and_a_revoke_is_seen_at_once(
    cluster, upstream
):
    """``zumik keys`` run on both hosts at once keeps every key, and a key revoked on one host
    is refused by the other on its very next request (no cache timeout in between)."""
    a, b = cluster.ensure(base_env(upstream))
    with ThreadPoolExecutor(4) as pool:
        keys = list(
            pool.map(lambda i: create_key(cluster.data_dir("ab"[i % 2]), f"team{i}"), range(12))
        )
    for data_dir in (cluster.data_dir("a"), cluster.data_dir("b")):
        assert len(list_keys(data_dir)) == 12
    for key in keys:
        for host in (a, b):
            assert (
                host.api("GET", "/v1/files", {"Authorization": f"Bearer {key}"}).status_code == 200
            )
    for i, key in enumerate(keys[:6]):
        assert b.api("GET", "/v1/files", {"Authorization": f"Bearer {key}"}).status_code == 200
        revoke_key(cluster.data_dir("ab"[i % 2]), key)
        for host in (a, b):
            assert (
                host.api("GET", "/v1/files", {"Authorization": f"Bearer {key}"}).status_code == 401
            ), f"revoked key still accepted by {host.name}"
