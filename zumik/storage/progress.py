"""A running batch's progress (``request_counts``, ``usage``, ``cost``) while it runs.

The claim holder saves progress every second. Those saves do not go into the batch record:
records are versioned (``zumik.storage.versioned``) and change only on status moves, so a count save
can never overwrite a cancel. Progress lives in ``batches/<id>.progress``, rewritten *in place* (no
rename, so another host opening it reads the latest bytes under close-to-open consistency, never a
replaced file its cache still names) in two checksummed slots used in turn: a reader that catches a
write half-done still finds the other slot whole. A reader takes the valid slot with the highest
(epoch, sequence), so a newer claim's progress wins over an older one's.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

SLOT = 4096
HEADER = 32  # 16 hex sequence, 8 hex crc32, 8 hex length


def write(path: Path, doc: dict[str, Any], epoch: int, seq: int) -> None:
    """Write ``doc`` as the progress of claim ``epoch``, save number ``seq`` (1, 2, ...)."""
    body = json.dumps({**doc, "epoch": epoch, "seq": seq}, separators=(",", ":")).encode()
    if len(body) > SLOT - HEADER:
        raise ValueError(f"progress document too large ({len(body)} bytes)")
    frame = f"{seq:016x}{zlib.crc32(body):08x}{len(body):08x}".encode() + body
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, frame.ljust(SLOT, b" "), (seq % 2) * SLOT)
        os.fsync(fd)
    finally:
        os.close(fd)


def _slot(raw: bytes) -> dict[str, Any] | None:
    try:
        crc, length = int(raw[16:24], 16), int(raw[24:32], 16)
        body = raw[HEADER : HEADER + length]
        if len(body) != length or zlib.crc32(body) != crc:
            return None
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def read(path: Path) -> dict[str, Any] | None:
    """The newest whole progress document, or None."""
    try:
        with open(path, "rb") as f:
            raw = f.read(2 * SLOT)
    except FileNotFoundError:
        return None
    slots = [doc for doc in (_slot(raw[:SLOT]), _slot(raw[SLOT:])) if doc is not None]
    return max(slots, key=lambda d: (d.get("epoch", 0), d.get("seq", 0)), default=None)


def overlay(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The record with the running batch's latest saved progress (terminal records carry their
    final counts themselves; progress never lowers a count)."""
    if record.get("status") not in ("in_progress", "cancelling", "finalizing"):
        return record
    saved = read(path)
    if saved is None:
        return record
    counts = record.get("request_counts") or {}
    new_counts = saved.get("request_counts") or {}
    if new_counts.get("completed", 0) + new_counts.get("failed", 0) < counts.get(
        "completed", 0
    ) + counts.get("failed", 0):
        return record
    record = dict(record)
    record["request_counts"] = {
        **counts,
        **{k: new_counts[k] for k in ("completed", "failed") if k in new_counts},
    }
    for key in ("usage", "cost"):
        if key in saved:
            record[key] = saved[key]
    return record
