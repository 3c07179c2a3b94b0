"""What each stored object contributes to a project's usage, measured from the disk.

The ledger (``zumik.storage.ledger``) keeps the totals; this module says what one object
counts (``measure``, used to repair an interrupted change) and counts a whole project afresh
(``scan``, used once to upgrade a data dir written before the ledger and its indexes, or when a
ledger is lost). Both also put the object's index entries right (listing, inputs, ended).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from zumik.core import ids
from zumik.core.records import ended_at, is_terminal
from zumik.storage import fsutil
from zumik.storage.ledger import Contribution
from zumik.storage.versioned import VersionedDoc

if TYPE_CHECKING:
    from zumik.storage.store import ProjectStore

RECORD: Contribution = (0, 0, 1, None)  # a batch record (and an upload no longer pending)
KEY_PREFIX = "key_"
DEFAULT_KEY_TTL = 86_400


def file_contribution(meta: dict[str, Any]) -> Contribution:
    expires = meta.get("expires_at")
    return 1, int(meta.get("bytes", 0)), 0, None if expires is None else int(expires)


def upload_contribution(record: dict[str, Any], parts_bytes: int) -> Contribution:
    if record.get("status") == "pending":
        return 1, parts_bytes, 1, int(record["expires_at"])
    return RECORD


def key_contribution(entry: dict[str, Any]) -> Contribution:
    expires = entry.get("expires_at", int(entry.get("created_at", 0)) + DEFAULT_KEY_TTL)
    return 0, 0, 1, int(expires)


def parts_bytes(store: ProjectStore, upload_id: str) -> int:
    total = 0
    prefix = upload_id + "."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(store.uploads_dir):
            if entry.name.startswith(prefix) and ids.is_part_id(entry.name[len(prefix) :]):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
    return total


def measure(store: ProjectStore, key: str) -> Contribution | None:
    """What object ``key`` holds now (None: it does not exist), its index entries repaired."""
    if ids.is_file_id(key):
        meta = fsutil.read_json(store.file_meta_path(key))
        for purpose in store.file_purposes():
            if meta is None or meta.get("purpose") != purpose:
                store.file_index(purpose).discard(key)
        if meta is None:
            return None
        store.file_index(meta.get("purpose", "batch")).add(key)
        return file_contribution(meta)
    if ids.is_upload_id(key):
        record = VersionedDoc(store.uploads_dir / f"{key}.json").read()
        return None if record is None else upload_contribution(record, parts_bytes(store, key))
    if ids.is_batch_id(key):
        record = store.batch(key).doc.read()
        if record is None:
            store.batch_index.discard(key)
            return None
        index_batch(store, record)
        return RECORD
    if key.startswith(KEY_PREFIX):
        entry = fsutil.read_json(store.idempotency_dir / f"{key[len(KEY_PREFIX) :]}.json")
        return key_contribution(entry) if isinstance(entry, dict) else None
    return None


def index_batch(store: ProjectStore, record: dict[str, Any], durable: bool = True) -> None:
    """The index entries of a stored batch record: listing, input reference, and once it
    ended its end time and status (idempotent: called again as it ends)."""
    store.batch_index.add(record["id"], durable)
    if ids.is_file_id(record.get("input_file_id")):
        store.input_refs(record["input_file_id"]).add(record["id"], durable)
    ended = ended_at(record)
    if is_terminal(record) and ended is not None:
        store.ended.add(ended, record["id"])
        store.status_index(record["status"]).add(record["id"], durable)


def scan(store: ProjectStore) -> Iterator[tuple[str, Contribution]]:
    """Every object of the project with its contribution, index entries written on the way."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(store.files_dir):
            if name.endswith(".json") and ids.is_file_id(name[:-5]):
                meta = fsutil.read_json(store.files_dir / name)
                if isinstance(meta, dict):
                    store.file_index(meta.get("purpose", "batch")).add(name[:-5], False)
                    yield name[:-5], file_contribution(meta)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(store.uploads_dir):
            if name.endswith(".json") and ids.is_upload_id(name[:-5]):
                record = VersionedDoc(store.uploads_dir / name).read()
                if record is not None:
                    yield name[:-5], upload_contribution(record, parts_bytes(store, name[:-5]))
    with contextlib.suppress(FileNotFoundError):
        legacy: dict[str, list[str]] = {}  # run state named the old way, beside the records
        for name in os.listdir(store.batches_dir):
            batch_id, dot, rest = name.partition(".")
            if dot and (
                rest.startswith("lease.") or (rest.endswith(".jsonl") and rest[:-6].isdigit())
            ):
                legacy.setdefault(batch_id, []).append(name)
            if rest == "json" and ids.is_batch_id(batch_id):
                record = store.batch(batch_id).doc.read()
                if record is not None:
                    index_batch(store, record, False)
                    yield batch_id, RECORD
        for batch_id, names in legacy.items():
            if ids.is_batch_id(batch_id):
                store.batch(batch_id).adopt_legacy(names)
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(store.idempotency_dir):
            if name.endswith(".json"):
                entry = fsutil.read_json(store.idempotency_dir / name)
                if isinstance(entry, dict):
                    yield KEY_PREFIX + name[:-5], key_contribution(entry)
