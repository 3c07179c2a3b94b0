"""What the store promises, checked on a local folder and on a JuiceFS mount alike.

Every test gets a ``where``: a fresh folder and the same folder as a second host sees it (for
the local directory, the same path; for JuiceFS, the volume's second mount, with its own client
cache, as tests/test_multihost.py runs two hosts). The JuiceFS half skips, saying why, where
FUSE, redis-server or juicefs are missing (CI installs them: .ci/run).

Covered here (no direct tests elsewhere): create-if-absent publish (``fsutil.link_once``),
versioned updates under contention from threads and processes, temp-file ownership and the
sweep, the progress slots, what pending uploads hold, the outbox claim names.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from juicefs_cluster import Cluster, ClusterUnavailable

from zumik.core import ids
from zumik.storage import fsutil, progress
from zumik.storage.upload_records import pending_usage
from zumik.storage.versioned import VersionedDoc
from zumik.webhooks import outbox


@dataclass
class Where:
    """One folder, as this host (``here``) and as a second host (``there``) see it."""

    kind: str
    here: Path
    there: Path


@pytest.fixture(scope="module")
def juicefs() -> Iterator[Cluster]:
    try:
        with Cluster() as running:
            yield running
    except ClusterUnavailable as exc:
        pytest.skip(f"the JuiceFS half of the storage contract needs a JuiceFS mount: {exc}")


@pytest.fixture(params=["local", pytest.param("juicefs", marks=pytest.mark.slow)])
def where(request, tmp_path: Path) -> Where:
    if request.param == "local":
        folder = tmp_path / "store"
        folder.mkdir()
        return Where("local", folder, folder)
    cluster: Cluster = request.getfixturevalue("juicefs")
    name = f"contract-{uuid.uuid4().hex[:8]}"
    here = cluster.mounts[0] / name
    here.mkdir()
    there = cluster.mounts[1] / name
    fsutil.fsync_dir(here.parent)
    for _ in range(100):  # the second mount's directory cache may lag by up to 1 s
        if there.is_dir():
            break
        time.sleep(0.02)
    return Where("juicefs", here, there)


def durable_temp(directory: Path, data: bytes) -> Path:
    tmp = fsutil.temp_path(directory, "t-")
    fsutil.write_durably(tmp, data)
    return tmp


# -- create-if-absent publish -------------------------------------------------------------------
def test_link_once_publishes_once_and_never_replaces(where: Where) -> None:
    first = durable_temp(where.here, b"first")
    second = durable_temp(where.there, b"second")
    assert fsutil.link_once(first, where.here / "doc") is True
    assert fsutil.link_once(second, where.there / "doc") is False  # the other host loses
    assert (where.there / "doc").read_bytes() == b"first"
    assert (where.here / "doc").read_bytes() == b"first"
    assert first.exists() and second.exists()  # the temps stay for their callers to unlink


def test_link_once_has_exactly_one_winner_among_racing_threads(where: Where) -> None:
    temps = [durable_temp(where.here if i % 2 else where.there, b"%d" % i) for i in range(16)]
    start = threading.Barrier(len(temps))
    wins: list[int] = []

    def race(i: int) -> None:
        start.wait()
        folder = where.here if i % 2 else where.there
        if fsutil.link_once(temps[i], folder / "target"):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(temps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert (where.here / "target").read_bytes() == b"%d" % wins[0]


# -- versioned documents under contention -------------------------------------------------------
def _increment(path: str, times: int) -> None:
    doc = VersionedDoc(Path(path))
    for _ in range(times):
        doc.update(lambda current: {**current, "n": current["n"] + 1})


def test_versioned_update_loses_no_increment_across_threads(where: Where) -> None:
    VersionedDoc(where.here / "counter.json").create({"n": 0})
    paths = [where.here / "counter.json", where.there / "counter.json"]
    threads = [threading.Thread(target=_increment, args=(str(paths[i % 2]), 15)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert VersionedDoc(paths[0]).read() == {"n": 90}
    found = VersionedDoc(paths[0]).read_version()
    assert found is not None and found[0] == 91  # one version per increment, none skipped


def test_versioned_update_loses_no_increment_across_processes(where: Where) -> None:
    VersionedDoc(where.here / "counter.json").create({"n": 0})
    paths = [where.here / "counter.json", where.there / "counter.json"]
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no shared hints
    workers = [context.Process(target=_increment, args=(str(paths[i % 2]), 10)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert VersionedDoc(paths[0]).read() == {"n": 40}


def test_versioned_create_is_create_if_absent(where: Where) -> None:
    assert VersionedDoc(where.here / "d.json").create({"who": "here"}) is True
    assert VersionedDoc(where.there / "d.json").create({"who": "there"}) is False
    assert VersionedDoc(where.here / "d.json").read() == {"who": "here"}


def test_an_unchanged_document_is_not_written_again(where: Where) -> None:
    doc = VersionedDoc(where.here / "d.json")
    doc.create({"status": "done"})
    stored, wrote = doc.update(lambda current: None)
    assert (stored, wrote) == ({"status": "done"}, False)
    assert not doc.version_path(2).exists()


# -- temp files: owned by a host and a pid, swept only when abandoned ----------------------------
def test_temp_names_record_this_host_and_pid(where: Where) -> None:
    tmp = fsutil.temp_path(where.here, "label-")
    assert tmp.name.startswith(fsutil.TEMP_PREFIX)
    assert fsutil.temp_owner(tmp.name) == (fsutil.host_id(), os.getpid())
    assert fsutil.temp_owner(".tmp-not-an-owner") is None


def test_the_sweep_removes_only_abandoned_or_old_temps(where: Where) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    host = fsutil.host_id()
    mine_live = where.here / f"{fsutil.TEMP_PREFIX}{host}@{os.getpid()}-live"
    mine_dead = where.here / f"{fsutil.TEMP_PREFIX}{host}@{dead_pid}-dead"
    other_host = where.here / f"{fsutil.TEMP_PREFIX}elsewhere.0000beef@{dead_pid}-theirs"
    other_old = where.here / f"{fsutil.TEMP_PREFIX}elsewhere.0000beef@{dead_pid}-old"
    before_reboot = f"{host.rsplit('.', 1)[0]}.00000000"  # this machine, an earlier boot id
    rebooted = where.here / f"{fsutil.TEMP_PREFIX}{before_reboot}@{os.getpid()}-before"
    unrelated = where.here / "file-abc.json"
    for path in (mine_live, mine_dead, other_host, other_old, rebooted, unrelated):
        path.write_bytes(b"x")
    old = time.time() - 3 * 86_400
    # (aged through the sweeping mount: another mount's attribute cache may hold the old mtime
    # for a second, which only delays that sweep)
    os.utime(where.there / other_old.name, (old, old))
    removed = fsutil.sweep_temps(where.there)  # the sweep reads names, wherever it runs
    # this host's with its process gone, this machine's from before a reboot (whatever pid it
    # names: pids are reused after a boot), anyone's older than a day
    assert not mine_dead.exists() and not rebooted.exists() and not other_old.exists()
    assert mine_live.exists() and other_host.exists()  # another host's young temp is theirs
    assert unrelated.exists() and removed == 3


# -- the progress slots ---------------------------------------------------------------------------
def test_progress_reads_the_newest_whole_slot(where: Where) -> None:
    path = where.here / "b.progress"
    assert progress.read(path) is None
    for seq in range(1, 6):
        progress.write(path, {"request_counts": {"completed": seq}}, epoch=1, seq=seq)
        assert progress.read(path)["request_counts"]["completed"] == seq
    assert path.stat().st_size == 2 * progress.SLOT  # rewritten in place, never grown


def test_a_torn_slot_falls_back_to_the_other(where: Where) -> None:
    path = where.here / "b.progress"
    progress.write(path, {"request_counts": {"completed": 3}}, epoch=1, seq=3)
    progress.write(path, {"request_counts": {"completed": 4}}, epoch=1, seq=4)
    with open(path, "r+b") as f:  # seq 4 lives in slot 0: a write half-done there
        f.seek(progress.HEADER + 5)
        f.write(b"#####")
    assert progress.read(path)["request_counts"]["completed"] == 3


def test_a_newer_claims_progress_wins_over_an_older_ones(where: Where) -> None:
    path = where.here / "b.progress"
    progress.write(path, {"request_counts": {"completed": 90}}, epoch=1, seq=9)
    progress.write(path, {"request_counts": {"completed": 40}}, epoch=2, seq=2)
    assert progress.read(path) == {"request_counts": {"completed": 40}, "epoch": 2, "seq": 2}


def test_progress_too_large_for_a_slot_is_refused(where: Where) -> None:
    with pytest.raises(ValueError, match="too large"):
        progress.write(where.here / "b.progress", {"x": "y" * progress.SLOT}, epoch=1, seq=1)


# -- what pending uploads hold ------------------------------------------------------------------
def test_pending_uploads_hold_one_file_and_their_parts(where: Where) -> None:
    now = time.time()
    uploads = where.here / "uploads"
    uploads.mkdir()

    def record(status: str, expires_at: float, parts: list[int]) -> str:
        upload_id = ids.new_id(ids.UPLOAD_PREFIX, now)
        VersionedDoc(uploads / f"{upload_id}.json").create(
            {"id": upload_id, "status": status, "expires_at": expires_at}
        )
        for size in parts:
            part_id = ids.new_id(ids.PART_PREFIX, now)
            (uploads / f"{upload_id}.{part_id}").write_bytes(b"p" * size)
        return upload_id

    record("pending", now + 3600, [100, 50])
    record("pending", now + 3600, [])
    record("pending", now - 1, [1000])  # expired: holds nothing, its parts are being freed
    record("cancelled", now + 3600, [2000])
    record("completed", now + 3600, [4000])
    (uploads / "notes.txt").write_bytes(b"not an upload")
    assert pending_usage(uploads, now) == (2, 150)
    assert pending_usage(where.there / "uploads", now) == (2, 150)
    assert pending_usage(where.here / "missing", now) == (0, 0)


# -- the outbox claim names ---------------------------------------------------------------------
def test_an_outbox_claim_is_stale_past_its_lease_or_when_its_holder_is_gone() -> None:
    now = time.time()
    live = outbox._claim_name("wh_1", now)
    assert live.startswith("wh_1" + outbox.CLAIM_MARK) and live.endswith(outbox.HOST)
    assert not outbox._claim_is_stale(live, now + 1, lease=30)
    assert outbox._claim_is_stale(live, now + 31, lease=30)  # past its lease, whoever holds it
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    mine_dead = f"wh_1{outbox.CLAIM_MARK}{int(now * 1000)}-{int(dead.stdout)}-{outbox.HOST}"
    assert outbox._claim_is_stale(mine_dead, now + 1, lease=30)  # this host, pid gone
    rebooted = f"{outbox.HOST.rsplit('.', 1)[0]}.00000000"  # this machine, an earlier boot
    before_reboot = f"wh_1{outbox.CLAIM_MARK}{int(now * 1000)}-{os.getpid()}-{rebooted}"
    assert outbox._claim_is_stale(before_reboot, now + 1, lease=30)  # its pid is reused now
    theirs = f"wh_1{outbox.CLAIM_MARK}{int(now * 1000)}-{int(dead.stdout)}-elsewhere.0000beef"
    assert not outbox._claim_is_stale(theirs, now + 1, lease=30)  # another host's pid: lease
    # a host name with dashes in it still parses (the host is everything after the pid)
    dashed = f"wh_1{outbox.CLAIM_MARK}{int(now * 1000)}-{os.getpid()}-web-01.abcd1234"
    assert not outbox._claim_is_stale(dashed, now + 1, lease=30)
    for garbage in (f"wh_1{outbox.CLAIM_MARK}", f"wh_1{outbox.CLAIM_MARK}soon-1-h"):
        assert outbox._claim_is_stale(garbage, now, lease=30)  # unreadable: never stuck


def test_outbox_claims_hand_each_entry_to_one_deliverer(where: Where) -> None:
    data = where.here / "data"
    directory = data / "proj-a" / outbox.OUTBOX_DIR
    directory.mkdir(parents=True)
    for i in range(6):
        entry = {"webhook_id": f"wh_{i}", "next_at": 0, "attempts": 0}
        fsutil.write_json(directory / f"wh_{i}.json", entry)
    here, there = outbox.Outbox(data, lease=30), outbox.Outbox(where.there / "data", lease=30)
    claimed = here.claim_due(3) + there.claim_due(10)
    names = [c.entry["webhook_id"] for c in claimed]
    assert sorted(names) == [f"wh_{i}" for i in range(6)]  # each once, none twice
    claimed[0].retry({"attempts": 1, "next_at": time.time() + 3600})
    assert json.loads((directory / f"{names[0]}.json").read_bytes())["attempts"] == 1
    assert here.claim_due(10) == []  # not due yet; the rest are held
