"""The per-project filesystem store: file blobs and metadata, batch records, quotas.

Layout under ``<data_dir>/<project>/``::

    files/<file_id>.json     metadata (atomic replace)      files/<file_id>.data   content
    batches/<batch_id>.*     one batch's record and run state: ``batch(id)`` (zumik.batchhandle)
    active/<batch_id>        marker: the batch is not terminal yet (what executors scan)
    quota.lock               filelock around quota checks, admission and deletes
    idempotency/<sha256>.json  Idempotency-Key -> the object it made (see zumik.idempotency)
    uploads/<upload_id>.*    Uploads API records and parts (see zumik.upload_sessions)

The store checks ids itself (a malformed id reads as unknown); names are never built from raw input.
Refusals are domain errors (``zumik.core.exceptions``), mapped to HTTP in ``zumik.api.errors``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from zumik.core import ids
from zumik.core.exceptions import FileInUse, NoSuchInput, QuotaExceeded, TooManyActive
from zumik.core.records import ended_at
from zumik.settings import Settings
from zumik.storage import fsutil
from zumik.storage.batchhandle import ACTIVE_STATUSES, LOCK_TIMEOUT, BatchHandle, Change
from zumik.storage.idempotency import IdempotentRequest
from zumik.storage.upload_records import pending_usage

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
RESULT_FILES_PER_BATCH = 2  # an output file (successes) and an error file (failures)
Clock = Callable[[], float]


def valid_project(name: str) -> bool:
    """Whether ``name`` may be a project (and therefore a folder under the data dir)."""
    return PROJECT_NAME.match(name) is not None


def public_file(meta: dict[str, Any]) -> dict[str, Any]:
    """The file object as the API shows it (internal keys dropped)."""
    return {key: meta.get(key) for key in FILE_FIELDS}


@dataclass(frozen=True)
class Usage:
    """What a project stores, counted from the metadata itself, never from a counter, plus
    the file slots its active batches hold for the results they will publish."""

    files: int
    bytes: int
    reserved_files: int = 0


def in_use_message(file_id: str, record: dict[str, Any]) -> str:
    """Why a file cannot go yet, and what to do: never advice the batch's state contradicts."""
    batch_id, status = record["id"], record["status"]
    if status == "cancelling":
        return (
            f"File {file_id} is the input of batch {batch_id}, which is cancelling: it stops "
            "within a few seconds (its status then reads 'cancelled'); delete the file then"
        )
    return (
        f"File {file_id} is the input of batch {batch_id}, which is still {status}; wait for "
        f"it to finish, or cancel it (POST /v1/batches/{batch_id}/cancel) and delete the file "
        "once it reads 'cancelled'"
    )


class ProjectStore:
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
        return BatchHandle(self.batches_dir, self.active_dir, batch_id, self.project)

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

    def iter_file_ids(self, descending: bool = True) -> list[str]:
        """Ids of stored files, sorted by creation (ids are time-ordered)."""
        try:
            names = os.listdir(self.files_dir)
        except FileNotFoundError:
            return []
        ids = [n[:-5] for n in names if n.endswith(".json") and n.startswith("file-")]
        ids.sort(reverse=descending)
        return ids

    def list_files(
        self, *, purpose: str | None, order: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of live files and whether more follow."""
        descending = order == "desc"
        page: list[dict[str, Any]] = []
        for file_id in self.iter_file_ids(descending):
            if after is not None and (file_id >= after if descending else file_id <= after):
                continue
            meta = self.get_file(file_id)
            if meta is None or (purpose is not None and meta.get("purpose") != purpose):
                continue
            if len(page) == limit:
                return page, True
            page.append(meta)
        return page, False

    def usage(self, active: int | None = None) -> Usage:
        """Files and bytes stored now (expired files do not count; a pending upload counts as
        one file and the bytes of its parts), and the result-file slots held by active
        batches (``active``: their number, when the caller counted them already). THE quota
        accounting: every admission asks ``admit``."""
        count = total = 0
        for file_id in self.iter_file_ids():
            meta = self.get_file(file_id)
            if meta is not None:
                count += 1
                total += int(meta.get("bytes", 0))
        uploads, parts = pending_usage(self.uploads_dir, self.clock())
        if active is None:
            active = sum(1 for _ in self.active_batches())
        return Usage(count + uploads, total + parts, RESULT_FILES_PER_BATCH * active)

    def admit(
        self,
        *,
        new_files: int,
        new_bytes: int,
        max_files: int,
        max_bytes: int,
        what: str,
        active: int | None = None,
    ) -> None:
        """Refuse (``QuotaExceeded``, with the numbers) what would pass the project's quota.
        Call under ``quota_lock``.

        Files: stored files plus the slots of active batches plus ``new_files`` must fit in
        ``max_files``, so results never push the count past it. Bytes: ``new_bytes`` must fit
        in what is left; a batch (``new_bytes=0``) needs some room left. Results are always
        published, so bytes can pass ``max_bytes`` by the results of the batches that were
        running when it was reached; the project is then refused until it frees space.
        """
        used = self.usage(active)
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
        if used.bytes + new_bytes > max_bytes or (new_bytes == 0 and used.bytes >= max_bytes):
            raise QuotaExceeded(
                f"Storage quota exceeded: the project stores {used.bytes} of "
                f"{max_bytes} bytes and {what} needs {new_bytes or 'some'} "
                "more; delete files first"
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
    ) -> tuple[dict[str, Any], bool]:
        """Check the quota and move an uploaded temp file into place, all under the lock.

        Returns the stored metadata and whether it is a replay of an earlier keyed upload
        (then ``tmp`` is left for the caller to discard and nothing is stored).
        """
        with self.quota_lock():
            earlier = idempotent.replay(self.get_file) if idempotent else None
            if earlier is not None:
                return earlier, True
            self.admit(
                new_files=1,
                new_bytes=meta["bytes"],
                max_files=max_files,
                max_bytes=max_bytes,
                what=f"this upload of {meta['bytes']} bytes",
            )
            self.write_file(tmp, meta)
            if idempotent:
                idempotent.remember(meta["id"])
        return meta, False

    def write_file(self, tmp: Path, meta: dict[str, Any]) -> None:
        """Publish content then metadata; a crash between leaves an orphan blob, swept later."""
        fsutil.commit_temp(tmp, self.file_data_path(meta["id"]))
        try:
            fsutil.write_json(self.file_meta_path(meta["id"]), meta)
        except BaseException:
            self.file_data_path(meta["id"]).unlink(missing_ok=True)
            raise

    def delete_file(self, file_id: str) -> bool:
        """Delete a file; refuse (409) while an active batch reads it. False if unknown."""
        with self.quota_lock():
            if self.get_file(file_id) is None:
                return False
            for record in self.active_batches():
                if record.get("input_file_id") == file_id:
                    raise FileInUse(in_use_message(file_id, record), param="file_id")
            self.remove_file(file_id)
        return True

    def remove_file(self, file_id: str) -> None:
        """Unlink a file's metadata (first, so it stops existing) and content."""
        for path in (self.file_meta_path(file_id), self.file_data_path(file_id)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fsutil.fsync_dir(self.files_dir)

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
    ) -> tuple[dict[str, Any], bool]:
        """Admit a new batch under the project lock, so no race can pass ``max_active`` or the
        quota (the batch holds file slots for its results from now on, see ``admit``).

        Returns the stored record and whether it is a replay of an earlier keyed create.
        """
        with self.quota_lock():
            earlier = idempotent.replay(self.get_batch) if idempotent else None
            if earlier is not None:
                return earlier, True
            active = sum(1 for _ in self.active_batches())
            if active >= max_active:
                raise TooManyActive(
                    f"Too many active batches: the project has {active} of "
                    f"{max_active}; wait for one to finish"
                )
            meta = self.get_file(record["input_file_id"])
            if meta is None:
                raise NoSuchInput(
                    f"No such File object: {record['input_file_id']}", param="input_file_id"
                )
            self.admit(
                new_files=RESULT_FILES_PER_BATCH,
                new_bytes=0,
                max_files=max_files,
                max_bytes=max_bytes,
                what="a batch (for its output and error files)",
                active=active,
            )
            self._hold_input(record["input_file_id"], meta)
            self.batch(record["id"]).create(record)
            if idempotent:
                idempotent.remember(record["id"])
        return record, False

    def _hold_input(self, file_id: str, meta: dict[str, Any]) -> None:
        """A new batch reads the file: undo the reclaim time its previous batch gave it."""
        if "upload_expires_at" in meta:
            meta["expires_at"] = meta.pop("upload_expires_at")
            fsutil.write_json(self.file_meta_path(file_id), meta)

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
            own = meta.get("upload_expires_at", meta.get("expires_at"))
            meta["upload_expires_at"] = own
            meta["expires_at"] = reclaim_at if own is None else min(own, reclaim_at)
            fsutil.write_json(self.file_meta_path(file_id), meta)

    def update_batch(self, batch_id: str, change: Change) -> dict[str, Any]:
        """Read-modify-write a record (``BatchHandle.update``)."""
        return self.batch(batch_id).update(change)

    def batch_ids(self, descending: bool = True) -> list[str]:
        """Ids of every stored batch record, newest first (ids are time-ordered)."""
        try:
            names = os.listdir(self.batches_dir)
        except FileNotFoundError:
            return []
        return sorted(
            (
                n[:-5]
                for n in names
                if n.startswith("batch_") and n.endswith(".json") and n.count(".") == 1
            ),
            reverse=descending,
        )

    def list_batches(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; one page and whether more follow."""
        ids = self.batch_ids()
        page: list[dict[str, Any]] = []
        for batch_id in ids:
            if after is not None and batch_id >= after:
                continue
            record = self.get_batch(batch_id)
            if record is None:
                continue
            if len(page) == limit:
                return page, True
            page.append(record)
        return page, False


def iter_projects(data_dir: Path) -> Iterator[str]:
    """Project folders under the data dir."""
    try:
        entries = list(os.scandir(data_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir() and valid_project(entry.name):
            yield entry.name
