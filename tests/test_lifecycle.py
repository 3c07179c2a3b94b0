"""Lifecycle: expiry sweeps with the clock jumped ahead, and a full disk during an upload and
during a batch (a real tiny tmpfs)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import (
    AUTH_A,
    create_batch,
    echo_lines,
    output_lines,
    upload,
    wait_batch,
    wait_until,
)

from zumik.storage import fsutil
from zumik.storage.janitor import Janitor
from zumik.storage.versioned import VersionedDoc

DAY = 86_400


def test_sweeper_expires_outputs_records_and_inputs(make_app, settings):
    now = [1_800_000_000.0]
    app = make_app(start=True, clock=lambda: now[0])
    client = app.test_client()
    shared_input = upload(client, echo_lines(2)).get_json()["id"]
    lone_input = upload(client, echo_lines(2)).get_json()["id"]
    timed = upload(
        client,
        echo_lines(1),
        **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"},
    ).get_json()["id"]
    first = wait_batch(client, create_batch(client, shared_input).get_json()["id"])
    lone = wait_batch(client, create_batch(client, lone_input).get_json()["id"])
    janitor = Janitor(settings, clock=lambda: now[0])
    assert janitor.sweep() == {"files": 0, "batches": 0, "keys": 0}
    now[0] += 2 * 3600 + 1  # the expires_after file is due
    assert janitor.sweep() == {"files": 1, "batches": 0, "keys": 0}
    assert client.get(f"/v1/files/{timed}", headers=AUTH_A).status_code == 404
    now[0] += DAY  # output files are due (ZUMIK_OUTPUT_TTL)
    for batch in (first, lone):
        assert client.get(f"/v1/files/{batch['output_file_id']}", headers=AUTH_A).status_code == 404
    assert janitor.sweep()["files"] == 2
    # a newer batch still uses the shared input when the first batch's record expires
    now[0] += 5 * DAY
    second = wait_batch(client, create_batch(client, shared_input).get_json()["id"])
    now[0] += 2 * DAY - 10
    # first and lone: 7 days after they ended (lone's input goes with it); second's output
    assert janitor.sweep() == {"batches": 2, "files": 1, "keys": 0}
    assert client.get(f"/v1/batches/{first['id']}", headers=AUTH_A).status_code == 404
    assert client.get(f"/v1/files/{lone_input}", headers=AUTH_A).status_code == 404
    assert client.get(f"/v1/files/{shared_input}", headers=AUTH_A).status_code == 200
    assert client.get(f"/v1/batches/{second['id']}", headers=AUTH_A).status_code == 200
    files_left = sorted(p.name for p in (settings.data_dir / "proj-a" / "files").iterdir())
    assert files_left == sorted([f"{shared_input}.json", f"{shared_input}.data"])
    batch_files = [
        p.name
        for p in (settings.data_dir / "proj-a" / "batches").iterdir()
        if first["id"] in p.name
    ]
    assert batch_files == []


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    filler = path / "filler"
    # unbuffered: a short last write leaves nothing behind for close() to fail on
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    return filler


def test_disk_full_during_upload(make_app, tmp_path):
    with tiny_filesystem(tmp_path / "tiny", "1m") as tiny:
        client = make_app(data_dir=tiny / "data").test_client()
        small = upload(client, echo_lines(2))
        assert small.status_code == 200
        before = sorted(p.name for p in (tiny / "data" / "proj-a" / "files").iterdir())
        response = upload(client, echo_lines(20_000))  # ~2.4 MB, more than the disk holds
        assert response.status_code == 507
        error = response.get_json()["error"]
        assert error["code"] == "insufficient_storage" and "full" in error["message"]
        after = sorted(p.name for p in (tiny / "data" / "proj-a" / "files").iterdir())
        assert after == before  # no partial file, usage unchanged
        listing = client.get("/v1/files", headers=AUTH_A).get_json()["data"]
        assert [f["id"] for f in listing] == [small.get_json()["id"]]


@pytest.mark.slow
def test_disk_full_during_a_batch_pauses_then_resumes(make_app, provider, tmp_path):
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05}, timeout=5)
    with tiny_filesystem(tmp_path / "tiny", "4m") as tiny:
        app = make_app(data_dir=tiny / "data", upstream_url=provider.url, concurrency=8, start=True)
        executor = app.extensions["zumik"].executor
        executor.pause_seconds = 0.5
        client = app.test_client()
        total = 400
        file_id = upload(client, echo_lines(total, model="m")).get_json()["id"]
        batch_id = create_batch(client, file_id).get_json()["id"]
        wait_until(  # mid-run
            lambda: (
                client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()["request_counts"][
                    "completed"
                ]
                > 0
            ),
            30,
            "the first lines done",
        )
        filler = fill(tiny)
        time.sleep(2.0)  # a window: the disk stays full this long, the batch must not fail
        record = VersionedDoc(tiny / "data" / "proj-a" / "batches" / f"{batch_id}.json").read()
        assert record["status"] == "in_progress"  # paused, not failed
        segments = list((tiny / "data" / "proj-a" / "batches").glob(f"{batch_id}.*.jsonl"))
        for segment in segments:  # the journal stays whole: every line ends and parses
            for line in segment.read_bytes().splitlines(keepends=True):
                number, _, output = line.partition(b"\t")
                assert line.endswith(b"\n") and number.isdigit()
                assert json.loads(output)["custom_id"]
        os.unlink(filler)
        batch = wait_batch(client, batch_id, timeout=60)
        assert batch["status"] == "completed"
        ids = [x["custom_id"] for x in output_lines(client, batch["output_file_id"])]
        assert len(ids) == len(set(ids)) == total


def test_healthz_on_a_full_disk_answers_503_and_leaves_no_probe_file(make_app, tmp_path):
    with tiny_filesystem(tmp_path / "tiny", "256k") as tiny:
        client = make_app(data_dir=tiny / "data").test_client()
        assert client.get("/healthz").status_code == 200
        filler = fill(tiny)
        for _ in range(5):
            response = client.get("/healthz")
            assert response.status_code == 503
            assert response.get_json()["data_dir_writable"] is False
        assert [p.name for p in (tiny / "data").iterdir() if p.name.startswith(".tmp-")] == []
        os.unlink(filler)
        assert client.get("/healthz").status_code == 200


def test_start_up_sweeps_dead_writers_temps_in_the_data_dir_itself(make_app, settings):
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / ".metrics").mkdir()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    host = fsutil.host_id()  # temp names record their host and pid (fsutil.temp_path)
    stale = [
        settings.data_dir / f".tmp-{host}@{dead}-health-abc",
        settings.data_dir / f".tmp-{host}@{dead}-k",
        settings.data_dir / ".metrics" / f".tmp-{host}@{dead}-m",
    ]
    for path in stale:
        path.write_bytes(b"x")
    live = settings.data_dir / f".tmp-{host}@{os.getpid()}-mine"
    live.write_bytes(b"x")
    make_app()
    assert [p for p in stale if p.exists()] == []
    assert live.exists()  # its owner (this process) is alive
