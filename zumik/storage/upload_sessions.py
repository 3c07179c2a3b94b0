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

from zumik.core import ids
from zumik.core.exceptions import Conflict, InvalidRequest, NotFound, QuotaExceeded
from zumik.settings import Settings
from zumik.storage import fsutil
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
            files, used = self._usage(None)
            self._check_quota(files + 1, used + nbytes)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._doc(upload_id).create(record)
        return record

    def add_part(self, upload_id: str, tmp: Path) -> dict[str, Any]:
        """Publish a received part (a fsynced temp file) under the quota; returns the part."""
        size = tmp.stat().st_size
        part_id = ids.new_id(ids.PART_PREFIX, self.store.clock())
        with self.store.quota_lock():
            self.require_pending(upload_id, "parts may be added")
            count = len(self.part_ids(upload_id))
            if count >= self.settings.max_upload_parts:
                raise InvalidRequest(
                    f"Upload {upload_id} already has {count} parts, the most one "
                    "upload may hold (ZUMIK_MAX_UPLOAD_PARTS); send larger parts",
                    param="data",
                    code="too_many_parts",
                )
            files, used = self._usage(None)
            self._check_quota(files, used + size)
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
                record["status"] = "cancelled"
                self._save(record)
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
            meta = {
                "id": record["file_id"],
                "object": "file",
                "bytes": sink.size,
                "created_at": now,
                "filename": record["filename"],
                "purpose": record["purpose"],
                "status": "processed",
                "status_details": None,
                "expires_at": now + expires if expires else None,
                "requests": requests,
                "model": sink.validator.model,  # internal: a batch over the file starts with it
            }
            with self.store.quota_lock():
                record = self.get(upload_id)
                if record["status"] == "completed":
                    return record
                self.require_pending(upload_id, "it can be completed", record)
                files, used = self._usage(upload_id)
                self._check_quota(files + 1, used + meta["bytes"])
                self.store.write_file(sink.path, meta)
                return self._mark_completed(record, meta)
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

    def _mark_completed(self, record: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        record["status"] = "completed"
        record["file"] = public_file(meta)
        self._save(record)
        self.remove_parts(record["id"])
        return record

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
                record["status"] = "expired"
                self._save(record)
                swept += 1
            self.remove_parts(upload_id)
            if record["expires_at"] + self.settings.upload_ttl <= now:
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
    def _usage(self, completing: str | None) -> tuple[int, int]:
        """The project's usage; without the share of the upload being completed, whose parts
        are about to be replaced by the file it makes."""
        used = self.store.usage()
        files, total = used.files + used.reserved_files, used.bytes  # slots held for results
        if completing is not None:
            files -= 1
            total -= sum(
                self.part_path(completing, part_id).stat().st_size
                for part_id in self.part_ids(completing)
            )
        return files, total

    def _check_quota(self, files: int, total: int) -> None:
        settings = self.settings
        if files > settings.max_files:
            raise QuotaExceeded(
                f"File quota exceeded: the project would hold {files} of "
                f"{settings.max_files} files (a pending upload counts as one); "
                "delete some first"
            )
        if total > settings.max_bytes:
            raise QuotaExceeded(
                f"Storage quota exceeded: {total} bytes (pending upload parts "
                f"count) would pass the project's {settings.max_bytes} bytes"
            )
