"""One batch's files, behind one object: the only place their names are built.

``ProjectStore.batch(batch_id)`` returns a ``BatchHandle``; claims, the journal, BatchRun, the
API and the janitor ask it for the record, its lock, the run lock, lease files, journal
segments, the cancel and active markers, and for removing all of them. Names under
``<project>/``::

    batches/<id>.json            the record, version 1 (zumik.versioned; never replaced)
    batches/<id>.v<N>.json       version N of the record, published once with link()
    batches/<id>.progress        counts/usage/cost of the running claim (zumik.progress)
    batches/<id>.run.lock        flock held by the worker running the batch (flock mode)
    batches/<id>.lease.<epoch>   the claim of that epoch (see zumik.claims)
    batches/<id>.<epoch>.jsonl   journal segment written by that epoch only (see zumik.journal)
    batches/<id>.cancel          cancel marker (a stat is cheaper than reading the record)
    active/<id>                  marker: not terminal yet; what executors scan

Every read-modify-write of a record goes through ``BatchHandle.update``, which publishes the
next version with create-if-absent (``zumik.storage.versioned``): correct on a shared filesystem
that promises only close-to-open consistency, atomic rename and atomic create, with no lock and no
dependence on a cache timeout. A writer holding a stale copy loses the race for the next version,
re-reads and applies its change again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from zumik.storage import fsutil, progress
from zumik.storage.versioned import VersionedDoc

ACTIVE_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
LOCK_TIMEOUT = 30.0

Change = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def _numbered(directory: Path, prefix: str, suffix: str) -> list[tuple[int, Path]]:
    """Files ``<prefix><number><suffix>`` in ``directory``, sorted by number."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.startswith(prefix) and name.endswith(suffix):
                middle = name[len(prefix) : len(name) - len(suffix)]
                if middle.isdigit():
                    found.append((int(middle), directory / name))
    found.sort()
    return found


class BatchHandle:
    """The files of one batch. Cheap to build; holds no open handles."""

    def __init__(
        self, batches_dir: Path, active_dir: Path, batch_id: str, project: str = ""
    ) -> None:
        self.batch_id = batch_id
        self.project = project
        self.dir = batches_dir
        self.active_dir = active_dir
        self.record_path = batches_dir / f"{batch_id}.json"
        self.run_lock_path = batches_dir / f"{batch_id}.run.lock"
        self.cancel_path = batches_dir / f"{batch_id}.cancel"
        self.progress_path = batches_dir / f"{batch_id}.progress"
        self.doc = VersionedDoc(self.record_path)
        self.active_path = active_dir / batch_id

    # -- the record ------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The newest record, with the running claim's latest saved progress, or None."""
        record = self.doc.read()
        return None if record is None else progress.overlay(record, self.progress_path)

    def create(self, record: dict[str, Any]) -> None:
        """Write a new record and its active marker (the caller holds the project lock)."""
        self.doc.create(record)
        self.active_path.touch()
        fsutil.fsync_dir(self.active_dir)

    def update(self, change: Change, keep_active: bool = False) -> dict[str, Any]:
        """Read-modify-write the record: the one way a stored record changes.

        ``change`` edits the record in place or returns a new one; it may run again on a newer
        version when another writer (another worker or host) published first, so it must
        decide from the record alone. KeyError when there is no record. A record that leaves
        the active statuses loses its active marker, unless ``keep_active``: the caller still
        has work to do for the ending and clears it then (``clear_active``); a kill meanwhile
        leaves the marker, so the next claim finds the terminal record and finishes that work.
        """
        record, _ = self.doc.update(change)
        if record.get("status") not in ACTIVE_STATUSES and not keep_active:
            self.clear_active()
        return record

    # -- markers ---------------------------------------------------------------------------
    def is_marked_active(self) -> bool:
        return self.active_path.exists()

    def clear_active(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.active_path)

    def mark_cancel(self) -> None:
        """Drop the marker a running executor polls."""
        self.cancel_path.touch()

    def cancel_requested(self) -> bool:
        return self.cancel_path.exists()

    # -- claims ----------------------------------------------------------------------------
    def run_lock(self) -> FileLock:
        """The flock a running worker holds (flock mode); non-blocking."""
        return FileLock(self.run_lock_path, blocking=False)

    def lease_path(self, epoch: int) -> Path:
        return self.dir / f"{self.batch_id}.lease.{epoch}"

    def leases(self) -> list[tuple[int, Path]]:
        """Lease files, oldest epoch first."""
        return _numbered(self.dir, f"{self.batch_id}.lease.", "")

    # -- the journal -----------------------------------------------------------------------
    def segment_path(self, epoch: int) -> Path:
        return self.dir / f"{self.batch_id}.{epoch}.jsonl"

    def segments(self) -> list[Path]:
        """Journal segments, oldest epoch first."""
        return [path for _, path in _numbered(self.dir, f"{self.batch_id}.", ".jsonl")]

    def temp_path(self, prefix: str) -> Path:
        """A temp file beside the batch's files (swept if its writer dies)."""
        return fsutil.temp_path(self.dir, prefix)

    # -- removal ---------------------------------------------------------------------------
    def remove_run_state(self) -> None:
        """After finalizing: the journal and the cancel marker (leases stay: epochs go on)."""
        for path in self.segments():
            path.unlink(missing_ok=True)
        self.cancel_path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Every file of the batch: the record's versions first, then the rest."""
        self.doc.remove()
        self.clear_active()
        prefix = self.batch_id + "."
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.dir):
                if name.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / name)
