"""Versioned documents (zumik.versioned): create-if-absent publishing of each next version, so
a writer holding a stale copy can never overwrite another writer's change."""

from __future__ import annotations

import os
import threading

import pytest

from zumik.storage import versioned
from zumik.storage.versioned import VersionedDoc


def test_update_publishes_the_next_version_and_reads_find_the_newest(tmp_path):
    doc = VersionedDoc(tmp_path / "batch_x.json")
    assert doc.read() is None
    assert doc.create({"status": "validating", "n": 0})
    assert not doc.create({"status": "other"})  # version 1 exists: create-if-absent
    stored, wrote = doc.update(lambda d: d.update(status="in_progress"))
    assert wrote and stored["status"] == "in_progress"
    assert sorted(os.listdir(tmp_path)) == ["batch_x.json", "batch_x.v2.json"]
    versioned._hints.clear()  # a fresh process (another host) finds the newest too
    assert VersionedDoc(tmp_path / "batch_x.json").read_version() == (2, stored)
    assert doc.update(lambda d: None) == (stored, False)  # unchanged: nothing written
    with pytest.raises(KeyError):
        VersionedDoc(tmp_path / "none.json").update(lambda d: None)


def test_a_writer_with_a_stale_copy_fails_its_claim_and_reapplies(tmp_path):
    """What a host with a stale cache does: it read version 1 while another host published
    version 2; its link of version 2 fails, so its change is applied to version 2."""
    doc = VersionedDoc(tmp_path / "b.json")
    doc.create({"status": "in_progress", "counts": 0})
    calls = []

    def cancel(record):
        calls.append(record["status"])
        if len(calls) == 1:  # meanwhile, another host completes the batch
            VersionedDoc(tmp_path / "b.json").update(lambda d: d.update(status="completed"))
        if record["status"] == "in_progress":
            record["status"] = "cancelling"

    stored, _ = doc.update(cancel)
    assert calls == ["in_progress", "completed"]
    assert stored["status"] == "completed" and doc.read()["status"] == "completed"


def test_concurrent_increments_are_never_lost(tmp_path):
    VersionedDoc(tmp_path / "c.json").create({"n": 0})

    def bump():
        for _ in range(25):
            VersionedDoc(tmp_path / "c.json").update(lambda d: d.update(n=d["n"] + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versioned._hints.clear()
    assert VersionedDoc(tmp_path / "c.json").read_version() == (101, {"n": 100})


def test_remove_takes_every_version(tmp_path):
    doc = VersionedDoc(tmp_path / "d.json")
    doc.create({"n": 0})
    doc.update(lambda d: d.update(n=1))
    doc.remove()
    assert os.listdir(tmp_path) == [] and doc.read() is None


def test_edit_creates_then_changes_and_cached_rebuilds_only_on_a_new_version(tmp_path):
    path = tmp_path / "sub" / "doc.json"
    builds: list[dict] = []
    cached = versioned.Cached(path, lambda doc: builds.append(dict(doc)) or len(doc))
    assert cached.get() == 0  # no document yet: built from {}
    assert versioned.edit(path, lambda doc: doc.setdefault("a", 1)) == 1
    assert cached.get() == 1 and cached.get() == 1
    assert versioned.edit(path, lambda doc: doc.pop("a")) == 1
    assert cached.get() == 0
    assert builds == [{}, {"a": 1}, {}]  # once at start, once per new version
