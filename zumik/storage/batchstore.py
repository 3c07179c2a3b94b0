"""The batch half of ``ProjectStore`` (a mixin: the state is the store's): admitting a new
batch, its input's reclaim time, listing records from the index, removing an ended one."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from zumik.core import ids
from zumik.core.exceptions import NoSuchInput, TooManyActive
from zumik.core.records import ended_at
from zumik.storage import accounting, fsutil
from zumik.storage.batchhandle import ACTIVE_STATUSES, BatchHandle, Change
from zumik.storage.idempotency import IdempotentRequest
from zumik.storage.ledger import Contribution, Ledger, Schedule
from zumik.storage.shards import Shards

if TYPE_CHECKING:
    from filelock import FileLock

    from zumik.storage.store import ProjectStore

RESULT_FILES_PER_BATCH = 2  # an output file (successes) and an error file (failures)
Changes = dict[str, tuple[Contribution | None, Contribution | None]]


class BatchStore:
    """What the batch half uses of the store (declared for the type checker)."""

    active_dir: Path
    batch_ttl: int | None
    clock: Callable[[], float]
    ledger: Ledger
    batch_index: Shards
    ended: Schedule

    if TYPE_CHECKING:

        def batch(self, batch_id: str) -> BatchHandle: ...
        def quota_lock(self) -> FileLock: ...
        def get_file(self, file_id: str) -> dict[str, Any] | None: ...
        def file_meta_path(self, file_id: str) -> Path: ...
        def ledger_state(self) -> dict[str, Any]: ...
        def input_refs(self, file_id: str) -> Shards: ...
        def status_index(self, status: str) -> Shards: ...
        def active_count(self) -> int: ...
        def remove_file(
            self, file_id: str, state: dict[str, Any] | None = None, also: Changes | None = None
        ) -> None: ...
        def admit(
            self,
            *,
            new_files: int,
            new_bytes: int,
            max_files: int,
            max_bytes: int,
            what: str,
            active: int | None = None,
            state: dict[str, Any] | None = None,
            new_records: int = 0,
            max_records: int | None = None,
            allow_full: bool = False,
        ) -> None: ...

    # -- batches --------------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        """The record, or None; past ``batch_ttl`` after it ended it is gone at once, as the
        janitor will remove it at its next sweep (expired files answer the same way)."""
        record = self.batch(batch_id).read() if ids.is_batch_id(batch_id) else None
        if record is not None and self.batch_ttl is not None:
            ended = ended_at(record)
            if ended is not None and ended + self.batch_ttl <= self.clock():
                return None
        return record

    def active_ids(self) -> list[str]:
        """Batches marked active (may include a few just turned terminal; stray names skipped)."""
        try:
            return sorted(n for n in os.listdir(self.active_dir) if ids.is_batch_id(n))
        except FileNotFoundError:
            return []

    def active_batches(self, with_progress: bool = False) -> Iterator[dict[str, Any]]:
        """Records of the active batches; ``with_progress``: with each running claim's latest
        saved counts (one more read per batch; quota and file checks need only the record)."""
        for batch_id in self.active_ids():
            handle = self.batch(batch_id)
            record = handle.read() if with_progress else handle.doc.read()
            if record is not None and record.get("status") in ACTIVE_STATUSES:
                yield record

    def create_batch(
        self,
        record: dict[str, Any],
        *,
        max_active: int,
        max_files: int,
        max_bytes: int,
        idempotent: IdempotentRequest | None = None,
        max_records: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Admit a new batch under the project lock, so no race can pass ``max_active`` or the
        quota (the batch holds file slots for its results from now on, see ``admit``).

        Returns the stored record and whether it is a replay of an earlier keyed create.
        """
        with self.quota_lock():
            earlier = idempotent.replay(self.get_batch) if idempotent else None
            if earlier is not None:
                return earlier, True
            active = self.active_count()
            if active >= max_active:
                raise TooManyActive(
                    f"Too many active batches: the project has {active} of "
                    f"{max_active}; wait for one to finish"
                )
            file_id = record["input_file_id"]
            meta = self.get_file(file_id)
            if meta is None:
                raise NoSuchInput(f"No such File object: {file_id}", param="input_file_id")
            state = self.ledger_state()
            self.admit(
                new_files=RESULT_FILES_PER_BATCH,
                new_bytes=0,
                max_files=max_files,
                max_bytes=max_bytes,
                what="a batch (for its output and error files)",
                active=active,
                state=state,
                new_records=2 if idempotent else 1,
                max_records=max_records,
            )
            changes: Changes = {record["id"]: (None, accounting.RECORD)}
            held = self._held(meta)
            if held is not None:
                changes[file_id] = (
                    accounting.file_contribution(meta),
                    accounting.file_contribution(held),
                )
            self.ledger.commit(state, {**changes, **(idempotent.changes() if idempotent else {})})
            if held is not None:
                fsutil.write_json(self.file_meta_path(file_id), held)
            self.batch(record["id"]).create(record)
            accounting.index_batch(cast("ProjectStore", self), record)
            if idempotent:
                idempotent.remember(record["id"])
        return record, False

    @staticmethod
    def _held(meta: dict[str, Any]) -> dict[str, Any] | None:
        """A new batch reads the file: its metadata without the reclaim time its previous
        batch gave it (None: nothing to undo)."""
        if "upload_expires_at" not in meta:
            return None
        held = dict(meta)
        held["expires_at"] = held.pop("upload_expires_at")
        return held

    def release_input(self, file_id: str, reclaim_at: int) -> None:
        """A batch over ``file_id`` ended: unless another active batch reads it, show in its
        ``expires_at`` when it will be reclaimed (its batch record's expiry, which takes the
        input with it; an earlier ``expires_after`` of its own still wins)."""
        with self.quota_lock():
            if any(r.get("input_file_id") == file_id for r in self.active_batches()):
                return
            meta = fsutil.read_json(self.file_meta_path(file_id))
            if meta is None:
                return
            before = accounting.file_contribution(meta)
            own = meta.get("upload_expires_at", meta.get("expires_at"))
            meta["upload_expires_at"] = own
            meta["expires_at"] = reclaim_at if own is None else min(own, reclaim_at)
            self.ledger.commit(
                self.ledger_state(), {file_id: (before, accounting.file_contribution(meta))}
            )
            fsutil.write_json(self.file_meta_path(file_id), meta)

    def update_batch(self, batch_id: str, change: Change) -> dict[str, Any]:
        """Read-modify-write a record (``BatchHandle.update``)."""
        return self.batch(batch_id).update(change)

    def batch_ids(self, descending: bool = True, after: str | None = None) -> Iterator[str]:
        """Ids of stored batch records in creation order (newest first), from the listing
        index: lazily, so a page reads about the page."""
        return self.batch_index.iter_ids(descending, after)

    def list_batches(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; one page and whether more follow."""
        page: list[dict[str, Any]] = []
        for batch_id in self.batch_ids(True, after):
            record = self.get_batch(batch_id)
            if record is None:
                continue
            if len(page) == limit:
                return page, True
            page.append(record)
        return page, False

    def remove_batch(self, batch_id: str, record: dict[str, Any], state: dict[str, Any]) -> bool:
        """Remove an ended batch's record and files (under ``quota_lock``), with its input when
        no other record uses it; returns whether the input went too."""
        file_id = record.get("input_file_id")
        refs = (
            self.input_refs(file_id)
            if isinstance(file_id, str) and ids.is_file_id(file_id)
            else None
        )
        if refs is not None:
            refs.discard(batch_id)
        last = refs is not None and next(refs.iter_ids(), None) is None
        self.ledger.commit(state, {batch_id: (accounting.RECORD, None)})
        self.batch(batch_id).remove()
        self.batch_index.discard(batch_id)
        ended = ended_at(record)
        if ended is not None:
            self.ended.remove(ended, batch_id)
            self.status_index(record["status"]).discard(batch_id)
        if last and file_id is not None:
            self.remove_file(file_id, state)
        return last
