"""Claims on their own, on one batch handle: flock mode, lease mode, epochs, hand-back."""

from __future__ import annotations

import json
import threading

from zumik.storage.claims import Claimer, current_lease
from zumik.storage.store import ProjectStore


def handle(tmp_path, batch_id: str = "batch_0123456789abcdef01234567"):
    return ProjectStore(tmp_path, "proj").ensure().batch(batch_id)


def test_flock_claim_is_exclusive_until_released(tmp_path):
    batch = handle(tmp_path)
    first, second = Claimer("flock", 30.0), Claimer("flock", 30.0)
    claim = first.try_claim(batch)
    assert claim is not None and claim.epoch == 1
    assert second.try_claim(batch) is None  # the run lock is held
    claim.release()
    assert json.loads(batch.lease_path(1).read_bytes())["released"] is True
    again = second.try_claim(batch)
    assert again is not None and again.epoch == 2
    again.release()
    third = first.try_claim(batch)
    assert third is not None and third.epoch == 3
    assert [epoch for epoch, _ in batch.leases()] == [2, 3]  # older lease files are dropped
    third.release()


def test_a_holder_that_sees_a_newer_epoch_stops(tmp_path):
    batch = handle(tmp_path)
    claim = Claimer("lease", 30.0).try_claim(batch)
    assert claim is not None and claim.heartbeat()
    batch.lease_path(2).write_text(json.dumps({"epoch": 2}))  # another host took over
    assert claim.heartbeat() is False and claim.lost
    claim.release()  # a lost claim does not touch the newer lease
    assert current_lease(batch) == (2, batch.lease_path(2).read_bytes())


def test_lease_mode_waits_a_full_unchanged_period_on_its_own_clock(tmp_path):
    batch = handle(tmp_path)
    holder = Claimer("lease", 0.2).try_claim(batch)
    assert holder is not None
    contender = Claimer("lease", 0.2)
    assert contender.try_claim(batch) is None  # first sight of this lease starts the clock
    seen_state, seen_at = contender.seen[batch.batch_id]
    contender.seen[batch.batch_id] = (seen_state, seen_at - 0.2)  # a lease period later
    taken = contender.try_claim(batch)
    assert taken is not None and taken.epoch == 2
    assert holder.heartbeat() is False  # the old holder learns it lost


def test_lease_mode_takes_a_released_lease_at_once(tmp_path):
    batch = handle(tmp_path)
    holder = Claimer("lease", 30.0).try_claim(batch)
    assert holder is not None
    holder.release()
    taken = Claimer("lease", 30.0).try_claim(batch)
    assert taken is not None and taken.epoch == 2


def test_flock_claim_released_from_another_thread_is_free_at_once(tmp_path):
    """The executor takes a claim in its loop thread and releases it from a worker thread
    (``asyncio.to_thread``): the run lock must be free at once, not when the garbage collector
    closes the lock's file (filelock's hold count is thread-local by default)."""
    batch = handle(tmp_path)
    claimer = Claimer("flock", 30.0)
    claim = claimer.try_claim(batch)
    assert claim is not None
    releaser = threading.Thread(target=claim.release)
    releaser.start()
    releaser.join()
    again = Claimer("flock", 30.0).try_claim(batch)  # ``claim`` is still referenced
    assert again is not None and again.epoch == 2
    again.release()
    assert claim.released
