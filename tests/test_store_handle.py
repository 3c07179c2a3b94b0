"""The store's per-batch handle: every name of a batch's files, the one record update,
markers and removal; domain errors from the store."""

from __future__ import annotations

import json
import os

import pytest

from zumik.core.exceptions import FileInUse, TooManyActive, ZumikError
from zumik.storage.store import ProjectStore

BATCH = "batch_0123456789abcdef01234567"
OTHER = "batch_0123456789abcdef01234568"
FILE = "file-0123456789abcdef01234567"  # (the store refuses a malformed id)


@pytest.fixture
def store(tmp_path):
    return ProjectStore(tmp_path, "proj").ensure()


def test_every_file_of_a_batch_is_named_by_its_handle(store):
    batch = store.batch(BATCH)
    batch.create({"id": BATCH, "status": "validating", "input_file_id": "file-x"})
    assert batch.is_marked_active() and store.active_ids() == [BATCH]
    batch.mark_cancel()
    assert batch.cancel_requested()
    for epoch in (1, 2, 10):
        batch.segment_path(epoch).write_bytes(b"")
        batch.lease_path(epoch).write_bytes(b"{}")
    store.batch(OTHER).segment_path(1).write_bytes(b"")  # another batch's: not ours
    assert [p.name for p in batch.segments()] == [
        f"{BATCH}.1.jsonl",
        f"{BATCH}.2.jsonl",
        f"{BATCH}.10.jsonl",
    ]
    assert [epoch for epoch, _ in batch.leases()] == [1, 2, 10]
    with batch.run_lock():
        pass
    batch.remove_run_state()
    assert batch.segments() == [] and not batch.cancel_requested()
    assert len(batch.leases()) == 3  # epochs go on after finalizing
    batch.remove()
    assert batch.read() is None and not batch.is_marked_active()
    assert sorted(os.listdir(store.batches_dir)) == [f"{OTHER}.1.jsonl"]


def test_update_is_the_read_modify_write_and_clears_the_marker_when_terminal(store):
    batch = store.batch(BATCH)
    with pytest.raises(KeyError):
        batch.update(lambda record: None)
    batch.create({"id": BATCH, "status": "in_progress", "n": 0})
    assert batch.update(lambda record: record.update(n=1))["n"] == 1
    assert batch.is_marked_active()
    batch.update(lambda record: {**record, "status": "completed"})  # returning a new record
    assert batch.read() == {"id": BATCH, "status": "completed", "n": 1}
    assert not batch.is_marked_active()


def test_the_store_raises_domain_errors(store, tmp_path):
    (store.files_dir / f"{FILE}.data").write_bytes(b"x")
    (store.files_dir / f"{FILE}.json").write_text(json.dumps({"id": FILE, "bytes": 1}))
    record = {"id": BATCH, "status": "validating", "input_file_id": FILE}
    store.create_batch(record, max_active=1, max_files=10, max_bytes=1000)
    with pytest.raises(TooManyActive) as too_many:
        store.create_batch({**record, "id": OTHER}, max_active=1, max_files=10, max_bytes=1000)
    assert too_many.value.code == "quota_exceeded" and isinstance(too_many.value, ZumikError)
    with pytest.raises(FileInUse) as in_use:
        store.delete_file(FILE)
    assert in_use.value.param == "file_id" and BATCH in in_use.value.message
