"""Uploads API storage: an upload's record and its parts, under ``<project>/uploads/``::

    uploads/<upload_id>.json         the record (atomic replace)
    uploads/<upload_id>.<part_id>    one part's bytes (temp file, fsync, rename)

A part is published by one rename, so a part that exists is whole; its size is its length.
Every state change (create, add a part, complete, cancel, expire) happens under the project's
quota lock, so parallel parts, a racing cancel and the quota see one order. ``complete``
streams the parts into a temp file beside the files (validated as batch JSONL while it is
written, in constant memory) outside the lock, then publishes it like a direct upload. The file
id is reserved in the record first, so a complete repeated after a crash makes the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from zumik.core import ids, records
from zumik.core.exceptions import Conflict, InvalidRequest, NotFound
from zumik.settings import Settings
from zumik.storage import fsutil
from zumik.storage.accounting import RECORD, parts_bytes, upload_contribution
from zumik.storage.batchstore import Changes
from zumik.storage.store import ProjectStore, public_file
from zumik.storage.tempsink import CHUNK, TempSink
from zumik.storage.upload_records import RECORD_SUFFIX, status_at
from zumik.storage.versioned import VersionedDoc


class UploadSessions:
    """One project's uploads. Callers pass ids already checked with ``zumik.core.ids``."""

    def __init__(self, store: ProjectStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.dir = store.uploads_dir

    # -- names ----------------------------------------------------------------------------
    def record_path(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}{RECORD_SUFFIX}"

    def _doc(self, upload_id: str) -> VersionedDoc:
        """The record's versions (zumik.versioned): a host with a stale cache still reads the
        newest, so changes made under the quota lock on several hosts never go back. A
        malformed id is refused here (404), before any name is built from it."""
        if not ids.is_upload_id(upload_id):
            raise NotFound("Upload", upload_id, "upload_id")
        return VersionedDoc(self.record_path(upload_id))

    def _save(self, record: dict[str, Any]) -> None:
        """Store ``record`` (read and changed under the quota lock) as the next version."""
        self._doc(record["id"]).update(lambda _current: record)

    def part_path(self, upload_id: str, part_id: str) -> Path:
        return self.dir / f"{upload_id}.{part_id}"

    def part_ids(self, upload_id: str) -> list[str]:
        """The parts stored for an upload, oldest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        prefix = upload_id + "."
        return sorted(
            name[len(prefix) :]
            for name in names
            if name.startswith(prefix) and ids.is_part_id(name[len(prefix) :])
        )

    def part_temp(self) -> Path:
        """A fresh temp path for a part being received (swept if its writer dies)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        return fsutil.temp_path(self.dir, "part-")

    # -- reading --------------------------------------------------------------------------
    def get(self, upload_id: str) -> dict[str, Any]:
        """The stored record; 404 when there is none."""
        record = self._doc(upload_id).read()
        if record is None:
            raise NotFound("Upload", upload_id, "upload_id")
        return record

    def require_pending(
        self, upload_id: str, action: str, record: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The record of a pending upload (``record``: already read); a clear 400 naming its
        status otherwise."""
        if record is None:
            record = self.get(upload_id)
        status = status_at(record, self.store.clock())
        if status != "pending":
            raise InvalidRequest(
                f"Upload {upload_id} is {status}; {action} only while it is pending",
                param="upload_id",
                code=f"upload_{status}",
            )
        return record

    # -- changes --------------------------------------------------------------------------
    def create(
        self,
        *,
        nbytes: int,
        filename: str,
        mime_type: str,
        purpose: str,
        file_expires_after: int | None,
    ) -> dict[str, Any]:
        """A new pending upload; refused when the file it would make cannot fit the quota."""
        now = int(self.store.clock())
        upload_id = ids.new_id(ids.UPLOAD_PREFIX, self.store.clock())
        record: dict[str, Any] = {
            "id": upload_id,
            "object": "upload",
            "bytes": nbytes,
            "created_at": now,
            "expires_at": now + self.settings.upload_ttl,
            "filename": filename,
            "purpose": purpose,
            "status": "pending",
            "file": None,
            "mime_type": mime_type,
            "file_expires_after": file_expires_after,
            "file_id": None,
        }
        with self.store.quota_lock():
            state = self.store.ledger_state()
            self._admit(state, 1, nbytes, "this upload", new_records=1)
            self.store.ledger.commit(state, {upload_id: (None, upload_contribution(record, 0))})
            self.dir.mkdir(parents=True, exist_ok=True)
            self._doc(upload_id).create(record)
        return record

    def add_part(self, upload_id: str, tmp: Path) -> dict[str, Any]:
        """Publish a received part (a fsynced temp file) under the quota; returns the part."""
        size = tmp.stat().st_size
        part_id = ids.new_id(ids.PART_PREFIX, self.store.clock())
        with self.store.quota_lock():
            record = self.require_pending(upload_id, "parts may be added")
            count = len(self.part_ids(upload_id))
            if count >= self.settings.max_upload_parts:
                raise InvalidRequest(
                    f"Upload {upload_id} already has {count} parts, the most one "
                    "upload may hold (ZUMIK_MAX_UPLOAD_PARTS); send larger parts",
                    param="data",
                    code="too_many_parts",
                )
            state = self.store.ledger_state()
            self._admit(state, 0, size, f"this part of {size} bytes")
            held = parts_bytes(self.store, upload_id)
            self.store.ledger.commit(
                state,
                {
                    upload_id: (
                        upload_contribution(record, held),
                        upload_contribution(record, held + size),
                    )
                },
            )
            fsutil.commit_temp(tmp, self.part_path(upload_id, part_id))
        return {
            "id": part_id,
            "object": "upload.part",
            "created_at": int(self.store.clock()),
            "upload_id": upload_id,
        }

    def cancel(self, upload_id: str) -> dict[str, Any]:
        """Cancel a pending upload and free its parts; a cancelled upload answers as it is."""
        with self.store.quota_lock():
            record = self.get(upload_id)
            if record["status"] != "cancelled":
                self.require_pending(upload_id, "it can be cancelled", record)
                self._end(record, "cancelled")
            self.remove_parts(upload_id)
        return record

    def complete(self, upload_id: str, part_ids: list[str], md5: str | None) -> dict[str, Any]:
        """Assemble ``part_ids`` in order into a File; a completed upload answers as it is."""
        with self.store.quota_lock():
            record = self.get(upload_id)
            if record["status"] == "completed":
                return record
            self.require_pending(upload_id, "it can be completed", record)
            total = 0
            for part_id in part_ids:
                try:
                    total += self.part_path(upload_id, part_id).stat().st_size
                except FileNotFoundError:
                    raise InvalidRequest(
                        f"No part {part_id} in upload {upload_id}",
                        param="part_ids",
                        code="invalid_value",
                    ) from None
            if total != record["bytes"]:
                raise InvalidRequest(
                    f"The parts add up to {total} bytes but upload {upload_id} "
                    f"was created with bytes={record['bytes']}; send the missing "
                    "parts or list exactly the parts of the file",
                    param="part_ids",
                    code="bytes_mismatch",
                )
            if record["file_id"] is None:
                record["file_id"] = ids.new_id(ids.FILE_PREFIX, self.store.clock())
                self._save(record)
            elif (published := self.store.get_file(record["file_id"])) is not None:
                return self._mark_completed(record, published)  # published, then a crash
        sink, requests = self._assemble(upload_id, part_ids, md5)
        try:
            now = int(self.store.clock())
            expires = record["file_expires_after"]
            meta = records.new_file(
                record["file_id"],
                nbytes=sink.size,
                now=now,
                filename=record["filename"],
                purpose=record["purpose"],
                requests=requests,
                expires_at=now + expires if expires else None,
                model=sink.validator.model,  # internal: a batch over the file starts with it
            )
            with self.store.quota_lock():
                record = self.get(upload_id)
                if record["status"] == "completed":
                    return record
                self.require_pending(upload_id, "it can be completed", record)
                state = self.store.ledger_state()
                held = parts_bytes(self.store, upload_id)
                # the upload's file and parts are about to become the file: not counted twice
                self._admit(state, 0, meta["bytes"] - held, "this upload's file")
                done: Changes = {upload_id: (upload_contribution(record, held), RECORD)}
                self.store.write_file(sink.path, meta, state, done)
                return self._mark_completed(record, meta, counted=True)
        finally:
            sink.discard()

    def _assemble(
        self, upload_id: str, part_ids: list[str], md5: str | None
    ) -> tuple[TempSink, int]:
        """Stream the parts into a validated temp file beside the files; checks ``md5``.
        Returns the sink and the file's request count."""
        sink = TempSink(self.store.files_dir, self.settings)
        digest = hashlib.md5(usedforsecurity=False) if md5 is not None else None
        try:
            for part_id in part_ids:
                try:
                    part = open(self.part_path(upload_id, part_id), "rb", buffering=0)  # noqa: SIM115
                except FileNotFoundError:
                    self.require_pending(upload_id, "it can be completed")
                    raise Conflict(
                        f"Part {part_id} of upload {upload_id} disappeared "
                        "while it was being assembled",
                        param="part_ids",
                        code="conflict",
                    ) from None
                with part:
                    while chunk := part.read(CHUNK):
                        if digest is not None:
                            digest.update(chunk)
                        sink.write(chunk)
            requests = sink.finish()
        except BaseException:
            sink.discard()
            raise
        if digest is not None and md5 is not None and digest.hexdigest() != md5.lower():
            sink.discard()
            raise InvalidRequest(
                f"The assembled file's MD5 is {digest.hexdigest()}, not {md5}",
                param="md5",
                code="checksum_mismatch",
            )
        return sink, requests

    def _mark_completed(
        self, record: dict[str, Any], meta: dict[str, Any], counted: bool = False
    ) -> dict[str, Any]:
        """``counted``: the ledger already took the upload's share off with the file's."""
        record["file"] = public_file(meta)
        if counted:
            record["status"] = "completed"
            self._save(record)
        else:
            self._end(record, "completed")
        self.remove_parts(record["id"])
        return record

    def _end(self, record: dict[str, Any], status: str) -> None:
        """Leave ``pending`` (its file slot and parts stop counting), counted first."""
        before = upload_contribution(record, parts_bytes(self.store, record["id"]))
        record["status"] = status
        self.store.ledger.commit(self.store.ledger_state(), {record["id"]: (before, RECORD)})
        self._save(record)

    def remove_parts(self, upload_id: str) -> int:
        """Unlink every part of an upload; returns how many."""
        removed = 0
        for part_id in self.part_ids(upload_id):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.part_path(upload_id, part_id))
                removed += 1
        return removed

    def sweep(self, now: float) -> int:
        """Under the quota lock: expire pending uploads past ``expires_at`` and free the parts
        of every upload that is not pending; drop records one ``upload_ttl`` after they expired
        and parts without a record. Returns how many uploads were expired or dropped."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        swept = 0
        records = {
            name[: -len(RECORD_SUFFIX)]
            for name in names
            if name.endswith(RECORD_SUFFIX) and ids.is_upload_id(name[:-5])
        }
        for upload_id in sorted(records):
            record = self._doc(upload_id).read()
            if record is None or record["status"] == "pending" and record["expires_at"] > now:
                continue
            if record["status"] == "pending":
                self._end(record, "expired")
                swept += 1
            self.remove_parts(upload_id)
            if record["expires_at"] + self.settings.upload_ttl <= now:
                self.store.ledger.commit(self.store.ledger_state(), {upload_id: (RECORD, None)})
                self._doc(upload_id).remove()
                swept += 1
        for name in names:  # parts whose record is gone
            upload_id, dot, rest = name.partition(".")
            if (
                dot
                and ids.is_upload_id(upload_id)
                and ids.is_part_id(rest)
                and upload_id not in records
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / name)
        return swept

    # -- quota ----------------------------------------------------------------------------
    def _admit(
        self, state: dict[str, Any], files: int, nbytes: int, what: str, new_records: int = 0
    ) -> None:
        """The store's one quota check (``ProjectStore.admit``), for what an upload adds."""
        settings = self.settings
        self.store.admit(
            new_files=files,
            new_bytes=max(0, nbytes),
            max_files=settings.max_files,
            max_bytes=settings.max_bytes,
            what=what,
            state=state,
            new_records=new_records,
            max_records=settings.max_records,
            allow_full=True,
        )
