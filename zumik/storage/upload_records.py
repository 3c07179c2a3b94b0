"""The upload record: its public shape, its status at a given time, what pending ones hold.

Kept apart from ``zumik.storage.upload_sessions`` so the store can count pending uploads in its one
usage function without importing the sessions (which use the store).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from zumik.core import ids
from zumik.storage.versioned import VersionedDoc

UPLOAD_FIELDS = (
    "id",
    "object",
    "bytes",
    "created_at",
    "expires_at",
    "filename",
    "purpose",
    "status",
    "file",
)
RECORD_SUFFIX = ".json"


def status_at(record: dict[str, Any], now: float) -> str:
    """The upload's status at ``now``: a pending upload past ``expires_at`` is expired."""
    if record["status"] == "pending" and record["expires_at"] <= now:
        return "expired"
    return record["status"]


def public_upload(record: dict[str, Any], now: float) -> dict[str, Any]:
    """The upload object as the API shows it."""
    return {**{key: record.get(key) for key in UPLOAD_FIELDS}, "status": status_at(record, now)}


def pending_usage(uploads_dir: Path, now: float) -> tuple[int, int]:
    """What pending uploads hold: one file each (the one they will make) and their parts' bytes.

    Expired, cancelled and completed uploads hold nothing: their parts are being freed.
    """
    try:
        entries = list(os.scandir(uploads_dir))
    except FileNotFoundError:
        return 0, 0
    pending: set[str] = set()
    sizes: dict[str, int] = {}
    for entry in entries:
        upload_id, dot, rest = entry.name.partition(".")
        if not dot or not ids.is_upload_id(upload_id):
            continue
        if rest == "json":
            record = VersionedDoc(Path(entry.path)).read()
            if record is not None and status_at(record, now) == "pending":
                pending.add(upload_id)
        elif ids.is_part_id(rest):
            with contextlib.suppress(FileNotFoundError):
                sizes[upload_id] = sizes.get(upload_id, 0) + entry.stat().st_size
    return len(pending), sum(sizes.get(upload_id, 0) for upload_id in pending)
