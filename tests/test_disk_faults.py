"""A disk that fills (ENOSPC) or fails (EIO) at any write of a batch, in the style of SQLite's
I/O-error tests: the k-th write call of the batch path (journal append and sync, progress,
leases, record versions, result files) fails, for every k over a small batch; then the space is
freed, and the batch must end ``completed`` with every line exactly once and the quota and
files consistent. The executor runs in-process (``run_until_idle``) on the built-in echo model.
"""

from __future__ import annotations

import asyncio
import errno
import json

import pytest
from conftest import AUTH_A, create_batch, drive, echo_lines, upload

from zumik.core import records
from zumik.storage import fsutil, journal
from zumik.storage.store import ProjectStore

LINES = 5
TERMINAL = ("completed", "failed", "cancelled", "expired")


def run_batch_with_faults(
    make_app, plan: fsutil.FaultPlan | None, data_dir
) -> tuple[dict, object, dict]:
    """Create a 5-line batch in a fresh ``data_dir``, run it with ``plan`` armed until the
    executor is idle, free the space, run it to its end; the final record, the client and
    what the checks need."""
    app = make_app(concurrency=2, poll_interval=0.01, data_dir=data_dir)
    client = app.test_client()
    file_id = upload(client, echo_lines(LINES)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    executor = app.extensions["zumik"].executor
    executor.pause_seconds = 0.0  # a paused batch is claimed again at the next step

    async def go() -> None:
        async with executor.opened():
            fsutil.inject_faults(plan)
            try:
                await asyncio.wait_for(executor.run_until_idle(), 30)
            finally:
                fsutil.inject_faults(None)  # the space is freed
            for _ in range(50):
                await asyncio.wait_for(executor.run_until_idle(), 30)
                record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
                if record["status"] in TERMINAL:
                    return
                await asyncio.sleep(0.01)

    asyncio.run(go())
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    return record, client, {"file_id": file_id, "settings": app.extensions["zumik"].settings}


def check_consistent(record: dict, client, state: dict, what: str) -> None:
    assert record["status"] == "completed", f"{what}: {record['status']} {record}"
    assert record["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}, what
    content = client.get(f"/v1/files/{record['output_file_id']}/content", headers=AUTH_A).data
    ids = [json.loads(line)["custom_id"] for line in content.splitlines()]
    assert sorted(ids) == sorted(f"r{i}" for i in range(LINES)), f"{what}: {ids}"
    assert record["error_file_id"] is None, what
    listed = client.get("/v1/files", headers=AUTH_A).get_json()["data"]
    assert sorted(f["id"] for f in listed) == sorted([state["file_id"], record["output_file_id"]])
    output = next(f for f in listed if f["id"] == record["output_file_id"])
    assert output["bytes"] == len(content), what
    root = state["settings"].data_dir / "proj-a"
    files = sorted(p.name for p in (root / "files").iterdir())
    assert files == sorted(f"{f['id']}.{ext}" for f in listed for ext in ("data", "json")), (
        f"{what}: stray files {files}"
    )
    assert not list((root / "active").iterdir()), what
    leftovers = [p.name for p in (root / "batches").iterdir() if p.name.endswith(".jsonl")]
    assert not leftovers, f"{what}: journal left behind {leftovers}"


def count_write_calls(make_app, data_dir) -> int:
    """How many write calls a clean run of the batch makes."""
    plan = fsutil.FaultPlan()
    record, client, state = run_batch_with_faults(make_app, plan, data_dir)
    check_consistent(record, client, state, "clean run")
    assert plan.calls > 10, plan.ops
    return plan.calls


@pytest.mark.parametrize(
    ("error", "persistent"),
    [(errno.ENOSPC, True), (errno.EIO, False)],
    ids=["enospc-until-freed", "eio-once"],
)
def test_every_write_point_failing_loses_no_line(make_app, tmp_path, error, persistent):
    """ENOSPC from the k-th write on (a full disk, freed afterwards), or EIO at the k-th write
    alone, for every k: the batch completes with every line exactly once."""
    calls = count_write_calls(make_app, tmp_path / "clean")
    failed_somewhere = 0
    for k in range(1, calls + 3):  # a few more: timing moves a progress save or a lease beat
        plan = fsutil.FaultPlan(k, error, persistent)
        record, client, state = run_batch_with_faults(make_app, plan, tmp_path / f"k{k}")
        check_consistent(record, client, state, f"k={k} ({plan.ops[k - 1 : k]})")
        failed_somewhere += plan.failures > 0
    print(f"\n{error=} {persistent=}: {calls} write calls, a fault at each of 1..{calls + 2}")
    assert failed_somewhere >= calls - 2  # the seam really hit (almost) every write point


def test_a_finalizing_batch_with_lines_missing_goes_back_to_sending(make_app, tmp_path):
    """A batch left ``finalizing`` with a journal that lacks lines (a finalize that an earlier
    version ran after a failed journal write): the next claim re-checks, sends the missing
    lines and only then publishes, every line exactly once."""
    app = make_app(data_dir=tmp_path / "data")
    client = app.test_client()
    file_id = upload(client, echo_lines(LINES)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    zumik = app.extensions["zumik"]
    handle = ProjectStore(zumik.settings.data_dir, "proj-a").batch(batch_id)

    def finalizing(record: dict) -> None:
        records.move(record, records.Status.IN_PROGRESS, 1)
        records.move(record, records.Status.FINALIZING, 1)

    handle.update(finalizing)
    journaled = [1, 2, 4]
    with open(handle.segment_path(1), "wb") as f:
        for number in journaled:
            line = {
                "id": f"batch_req_{number}",
                "custom_id": f"r{number - 1}",
                "response": {"status_code": 200, "request_id": "x", "body": {"usage": None}},
                "error": None,
            }
            f.write(journal.entry_bytes(number, json.dumps(line).encode() + b"\n"))
    asyncio.run(drive(zumik.executor))
    record = client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).get_json()
    assert record["status"] == "completed"
    assert record["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
    content = client.get(f"/v1/files/{record['output_file_id']}/content", headers=AUTH_A).data
    lines = [json.loads(line) for line in content.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(LINES))
    kept = {f"batch_req_{number}" for number in journaled}
    sent = [x["custom_id"] for x in lines if x["id"] not in kept]
    assert sorted(sent) == ["r2", "r4"]  # lines 3 and 5 were sent, the rest kept
