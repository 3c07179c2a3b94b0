"""The per-project filesystem store: file blobs and metadata, batch records, quotas.

Layout under ``<data_dir>/<project>/``::

    files/<file_id>.json     metadata (atomic replace)      files/<file_id>.data   content
    batches/<batch_id>.*     one batch's record and run state: ``batch(id)`` (zumik.batchhandle)
    active/<batch_id>        marker: the batch is not terminal yet (what executors scan)
    quota.lock               filelock around quota checks, admission and deletes
    idempotency/<sha256>.json  Idempotency-Key -> the object it made (see zumik.idempotency)
    uploads/<upload_id>.*    Uploads API records and parts (see zumik.upload_sessions)
    ledger.json              usage totals, changed under quota.lock (zumik.storage.ledger)
    index/files/<purpose>/…  one empty entry per file, sharded by time (zumik.storage.shards)
    index/batches/…          one empty entry per batch record, sharded by time
    index/inputs/<file_id>/… the batch records that use a file as their input
    index/expiry/<hour>/…    when contributions stop counting (the janitor's schedule too)
    index/ended/<hour>/…     when batches ended (the janitor removes their records batch_ttl on)
    index/status/<status>/…  ended batches by status (the dashboard's filters)

The store checks ids itself (a malformed id reads as unknown); names are never built from raw input.
Refusals are domain errors (``zumik.core.exceptions``), mapped to HTTP in ``zumik.api.errors``.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from zumik.core import ids
from zumik.core.exceptions import FileInUse, QuotaExceeded
from zumik.settings import Settings
from zumik.storage import accounting, fsutil
from zumik.storage.batchhandle import ACTIVE_STATUSES, LOCK_TIMEOUT, BatchHandle
from zumik.storage.batchstore import RESULT_FILES_PER_BATCH, BatchStore, Changes
from zumik.storage.idempotency import IdempotentRequest
from zumik.storage.ledger import Ledger, Schedule
from zumik.storage.shards import Shards

__all__ = ["ACTIVE_STATUSES", "RESULT_FILES_PER_BATCH", "ProjectStore", "Usage", "public_file"]
log = logging.getLogger("zumik.store")
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FILE_FIELDS = (
    "id",
    "object",
    "bytes",
    "created_at",
    "filename",
    "purpose",
    "status",
    "status_details",
    "expires_at",
)
ORPHAN_AGE = 3600.0  # seconds before a blob without metadata counts as abandoned
Clock = Callable[[], float]
PURPOSES = ("batch", "batch_output")  # the purposes a file can have (index folders)


def valid_project(name: str) -> bool:
    """Whether ``name`` may be a project (and therefore a folder under the data dir)."""
    return PROJECT_NAME.match(name) is not None


def public_file(meta: dict[str, Any]) -> dict[str, Any]:
    """The file object as the API shows it (internal keys dropped)."""
    return {key: meta.get(key) for key in FILE_FIELDS}


@dataclass(frozen=True)
class Usage:
    """What a project stores (from its ledger: files, bytes, pending uploads counted as a
    file and their parts' bytes, and records), plus the file slots its active batches hold
    for the results they will publish."""

    files: int
    bytes: int
    reserved_files: int = 0
    records: int = 0


class ProjectStore(BatchStore):
    """One project's folder. Cheap to build; holds no open handles."""

    def __init__(
        self, data_dir: Path, project: str, clock: Clock = time.time, batch_ttl: int | None = None
    ) -> None:
        if not valid_project(project):
            raise ValueError(f"invalid project name {project!r}")
        self.project = project
        self.root = data_dir / project
        self.files_dir = self.root / "files"
        self.batches_dir = self.root / "batches"
        self.active_dir = self.root / "active"
        self.idempotency_dir = self.root / "idempotency"
        self.uploads_dir = self.root / "uploads"
        self.index_dir = self.root / "index"
        self.batch_index = Shards(self.index_dir / "batches")
        self.ended = Schedule(self.index_dir / "ended")
        self.ledger = Ledger(self.root, lambda key: accounting.measure(self, key), clock)
        self.clock = clock
        self.batch_ttl = batch_ttl  # set: a record past it reads as gone (the API's view)

    @classmethod
    def open(
        cls, settings: Settings, project: str, clock: Clock = time.time, *, api_view: bool = False
    ) -> ProjectStore:
        """THE way Zumik builds a store. ``api_view``: as the API shows it, a record past
        ``batch_ttl`` reads as gone (workers see every record until the janitor removes it)."""
        return cls(settings.data_dir, project, clock, settings.batch_ttl if api_view else None)

    # -- plumbing -------------------------------------------------------------------------
    def ensure(self) -> ProjectStore:
        """Create the project's folders (idempotent)."""
        for directory in (self.files_dir, self.batches_dir, self.active_dir):
            directory.mkdir(parents=True, exist_ok=True)
        return self

    def quota_lock(self) -> FileLock:
        """The project lock; build per use (never share across fork)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / "quota.lock", timeout=LOCK_TIMEOUT)

    def batch(self, batch_id: str) -> BatchHandle:
        """The handle on one batch's files (record, locks, leases, journal, markers)."""
        return BatchHandle(
            self.batches_dir,
            self.active_dir,
            batch_id,
            self.project,
            on_end=lambda record: accounting.index_batch(self, record),
        )

    def status_index(self, status: str) -> Shards:
        """Ended batches with ``status`` (one entry each; what the dashboard's filters walk)."""
        return Shards(self.index_dir / "status" / status)

    def file_index(self, purpose: str) -> Shards:
        return Shards(self.index_dir / "files" / purpose)

    def file_purposes(self) -> list[str]:
        """Purposes with an index folder (the known ones first)."""
        try:
            found = set(os.listdir(self.index_dir / "files"))
        except FileNotFoundError:
            found = set()
        return [*PURPOSES, *sorted(found - set(PURPOSES))]

    def input_refs(self, file_id: str) -> Shards:
        """The batch records that read ``file_id`` (one entry each)."""
        return Shards(self.index_dir / "inputs" / file_id)

    # -- the ledger -----------------------------------------------------------------------
    def ledger_state(self) -> dict[str, Any]:
        """The ledger, checked (``Ledger.load``); counted afresh when missing. Under the lock."""
        state = self.ledger.load()
        if state is None:
            state = self.ledger.rebuild(accounting.scan(self))
        return state

    def recover(self) -> None:
        """Start-up: a ledger and indexes for a data dir that has none yet (the upgrade from
        the layout without them), and the repair of a change a crash interrupted."""
        with self.quota_lock():
            state = self.ledger.load()
            if state is None:
                started = time.monotonic()
                state = self.ledger.rebuild(accounting.scan(self))
                log.info(
                    "project %s: usage ledger and listing indexes built in %.1f s "
                    "(%d files, %d records)",
                    self.project,
                    time.monotonic() - started,
                    state["files"],
                    state["records"],
                )

    # -- files ----------------------------------------------------------------------------
    def file_meta_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.json"

    def file_data_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.data"

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        """The metadata of a live (stored, unexpired) file; None if unknown or not a file id."""
        meta = fsutil.read_json(self.file_meta_path(file_id)) if ids.is_file_id(file_id) else None
        if meta is None or self._expired(meta):
            return None
        return meta

    def _expired(self, meta: dict[str, Any]) -> bool:
        expires_at = meta.get("expires_at")
        return expires_at is not None and expires_at <= self.clock()

    def iter_file_ids(self, descending: bool = True, purpose: str | None = None) -> Iterator[str]:
        """Ids of stored files in creation order (ids are time-ordered), from the listing
        index: lazily, so a page reads about the page."""
        return self._file_ids(descending, purpose, None)

    def _file_ids(self, descending: bool, purpose: str | None, after: str | None) -> Iterator[str]:
        purposes = [purpose] if purpose is not None else self.file_purposes()
        walks = [self.file_index(p).iter_ids(descending, after) for p in purposes]
        if len(walks) == 1:
            return walks[0]
        return heapq.merge(*walks, reverse=descending)

    def list_files(
        self, *, purpose: str | None, order: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of live files and whether more follow."""
        page: list[dict[str, Any]] = []
        for file_id in self._file_ids(order == "desc", purpose, after):
            meta = self.get_file(file_id)
            if meta is None or (purpose is not None and meta.get("purpose") != purpose):
                continue
            if len(page) == limit:
                return page, True
            page.append(meta)
        return page, False

    def usage(self, active: int | None = None, state: dict[str, Any] | None = None) -> Usage:
        """Files and bytes stored now (expired files do not count; a pending upload counts as
        one file and the bytes of its parts), the records kept, and the result-file slots held
        by active batches (``active``: their number, when the caller counted them already).
        THE quota accounting, from the ledger (no lock needed to read it): every admission
        asks ``admit``, the API's and the dashboard's figures come from here."""
        if state is None:
            state = self.ledger.read()
        if state is None:
            with self.quota_lock():
                state = self.ledger_state()
        files, size, records = self.ledger.usage(state)
        if active is None:
            active = self.active_count()
        return Usage(files, size, RESULT_FILES_PER_BATCH * active, records)

    def active_count(self) -> int:
        """Active batches (at most ``max_active_batches``: bounded, whatever the project)."""
        return sum(1 for _ in self.active_batches())

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
    ) -> None:
        """Refuse (``QuotaExceeded``, with the numbers) what would pass the project's quota.
        Call under ``quota_lock``.

        Files: stored files plus the slots of active batches plus ``new_files`` must fit in
        ``max_files``, so results never push the count past it. Bytes: ``new_bytes`` must fit
        in what is left; a batch (``new_bytes=0``) needs some room left. Results are always
        published, so bytes can pass ``max_bytes`` by the results of the batches that were
        running when it was reached; the project is then refused until it frees space.
        Records (batch and upload records, idempotency keys): ``new_records`` must fit in
        ``max_records``. ``allow_full``: adding no bytes is fine even with no room left
        (a part of an upload, its completion: what they add must fit, nothing more).
        """
        used = self.usage(active, state if state is not None else self.ledger_state())
        taken = used.files + used.reserved_files
        if taken + new_files > max_files:
            held = (
                f" (+{used.reserved_files} held for the results of running batches)"
                if used.reserved_files
                else ""
            )
            raise QuotaExceeded(
                f"File quota exceeded: the project stores {used.files} of "
                f"{max_files} files{held} and {what} needs {new_files} more; "
                "delete some first"
            )
        if used.bytes + new_bytes > max_bytes or (
            new_bytes == 0 and not allow_full and used.bytes >= max_bytes
        ):
            raise QuotaExceeded(
                f"Storage quota exceeded: the project stores {used.bytes} of "
                f"{max_bytes} bytes and {what} needs {new_bytes or 'some'} "
                "more; delete files first"
            )
        if max_records is not None and new_records and used.records + new_records > max_records:
            raise QuotaExceeded(
                f"Record quota exceeded: the project keeps {used.records} of {max_records} "
                "records (batch records, upload records and idempotency keys, each kept "
                f"until it expires) and {what} needs {new_records} more; wait for old ones "
                "to expire or ask for a larger ZUMIK_MAX_RECORDS"
            )

    def stored_blobs(self) -> tuple[int, int]:
        """Blobs on disk and their bytes, from one ``stat`` each (no reads; for metrics)."""
        count = total = 0
        try:
            entries = list(os.scandir(self.files_dir))
        except FileNotFoundError:
            return 0, 0
        for entry in entries:
            if entry.name.endswith(".data") and entry.name.startswith("file-"):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
                    count += 1
        return count, total

    def commit_upload(
        self,
        tmp: Path,
        meta: dict[str, Any],
        *,
        max_files: int,
        max_bytes: int,
        idempotent: IdempotentRequest | None = None,
        max_records: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Check the quota and move an uploaded temp file into place, all under the lock.

        Returns the stored metadata and whether it is a replay of an earlier keyed upload
        (then ``tmp`` is left for the caller to discard and nothing is stored).
        """
        with self.quota_lock():
            earlier = idempotent.replay(self.get_file) if idempotent else None
            if earlier is not None:
                return earlier, True
            state = self.ledger_state()
            self.admit(
                new_files=1,
                new_bytes=meta["bytes"],
                max_files=max_files,
                max_bytes=max_bytes,
                what=f"this upload of {meta['bytes']} bytes",
                state=state,
                new_records=1 if idempotent else 0,
                max_records=max_records,
            )
            self.write_file(tmp, meta, state, idempotent.changes() if idempotent else None)
            if idempotent:
                idempotent.remember(meta["id"])
        return meta, False

    def write_file(
        self,
        tmp: Path,
        meta: dict[str, Any],
        state: dict[str, Any] | None = None,
        also: Changes | None = None,
    ) -> None:
        """Publish content then metadata, counted in the ledger first (with ``also``, other
        changes of the same step). Call under ``quota_lock``; a crash between leaves an
        orphan blob, swept later, and an intent the next ledger load corrects."""
        if state is None:
            state = self.ledger_state()
        self.ledger.commit(
            state, {meta["id"]: (None, accounting.file_contribution(meta)), **(also or {})}
        )
        fsutil.commit_temp(tmp, self.file_data_path(meta["id"]))
        try:
            fsutil.write_json(self.file_meta_path(meta["id"]), meta)
        except BaseException:
            self.file_data_path(meta["id"]).unlink(missing_ok=True)
            raise
        self.file_index(meta.get("purpose", "batch")).add(meta["id"])

    def publish_result(self, tmp: Path, meta: dict[str, Any]) -> None:
        """A batch's output or error file: ``write_file`` under the project lock."""
        with self.quota_lock():
            self.write_file(tmp, meta)

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; refuse (409) while an active batch reads it. False if unknown."""
        with self.quota_lock():
            if self.get_file(file_id) is None:
                return False
            for record in self.active_batches():
                if record.get("input_file_id") == file_id:
                    raise FileInUse.of(file_id, record)
            self.remove_file(file_id)
        return True

    def remove_file(
        self, file_id: str, state: dict[str, Any] | None = None, also: Changes | None = None
    ) -> None:
        """Unlink a file's metadata (first, so it stops existing), content and listing entry,
        uncounted in the ledger first. Call under ``quota_lock``."""
        meta = fsutil.read_json(self.file_meta_path(file_id))
        changes = dict(also or {})
        if isinstance(meta, dict):
            changes[file_id] = (accounting.file_contribution(meta), None)
        if changes:
            self.ledger.commit(state if state is not None else self.ledger_state(), changes)
        for path in (self.file_meta_path(file_id), self.file_data_path(file_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fsutil.fsync_dir(self.files_dir)
        for purpose in self.file_purposes():
            self.file_index(purpose).discard(file_id)

    def sweep(self, orphan_age: float = ORPHAN_AGE) -> None:
        """Start-up recovery: drop temp files of dead writers and blobs without metadata.

        A blob is published a moment before its metadata (``write_file``), and batch results
        are published outside ``quota.lock``; so a blob without metadata is an orphan only once
        it is ``orphan_age`` seconds old, or a worker booting beside a finalizing one (a
        gunicorn restart, ``--max-requests``, another host) would delete fresh results."""
        for directory in (self.files_dir, self.batches_dir, self.root, self.uploads_dir):
            fsutil.sweep_temps(directory)
        now = time.time()
        with self.quota_lock():
            for entry in os.scandir(self.files_dir):
                if not entry.name.endswith(".data"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if (
                        not (self.files_dir / f"{entry.name[:-5]}.json").exists()
                        and now - entry.stat().st_mtime > orphan_age
                    ):
                        os.unlink(entry.path)


def iter_projects(data_dir: Path) -> Iterator[str]:
    """Project folders under the data dir."""
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and valid_project(entry.name):
            yield entry.name
