"""The webhook outbox: one file per pending delivery, written when a batch becomes terminal.

Layout: ``<data_dir>/<project>/outbox/<webhook_id>.json`` (pending) and
``<webhook_id>.claim-<ms>-<pid>-<host>`` (being delivered). An entry holds the event body as
the bytes that are signed, the endpoint, the attempts and when the next one is due.

- ``enqueue`` writes one entry per subscribed endpoint from the terminal record *as stored*
  (``Finalizing.settle_ending``, after the record update, never inside its retried change
  function), so the body is what the record says. The batch keeps its active marker until the
  entries are written: a kill in between leaves a terminal batch marked active, and the next
  claim settles it, so no kill leaves a terminal batch without its entries. The names are
  derived from the batch and the endpoint, so a settle repeated after a crash rewrites the same
  entry instead of adding one, and ``webhook-id`` is stable across retries. (Entries written by
  older versions, before their terminal record, wait for it in the deliverer.)
- A deliverer claims an entry by renaming it to a claim name (one rename wins, on one host and
  on a shared filesystem alike), then deletes it (delivered, given up) or writes the next
  attempt back under the pending name. A claim whose holder died (same host, pid gone) or
  that is older than its lease is renamed back: delivery is at-least-once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zumik.core.records import STATUS_TIMESTAMP, Status
from zumik.storage import fsutil
from zumik.storage.store import iter_projects
from zumik.webhooks import registry as webhooks

OUTBOX_DIR = "outbox"
CLAIM_MARK = ".claim-"
HOST = fsutil.host_id()  # a rebooted host is a new owner: its old pids mean nothing


def event_id(batch_id: str) -> str:
    return "evt_" + hashlib.sha256(f"event/{batch_id}".encode()).hexdigest()[:32]


def webhook_id(batch_id: str, endpoint_id: str) -> str:
    return "wh_" + hashlib.sha256(f"{batch_id}/{endpoint_id}".encode()).hexdigest()[:32]


def event_type(record: dict[str, Any]) -> str:
    return f"batch.{record['status']}"


def event_body(record: dict[str, Any]) -> str:
    """OpenAI's thin batch event: the batch id only; receivers fetch the batch itself."""
    status = Status(record["status"])
    created = record.get(STATUS_TIMESTAMP[status]) or record.get("created_at")
    return json.dumps(
        {
            "id": event_id(record["id"]),
            "object": "event",
            "type": event_type(record),
            "created_at": created,
            "data": {"id": record["id"]},
        },
        separators=(",", ":"),
    )


def outbox_dir(data_dir: Path, project: str) -> Path:
    return data_dir / project / OUTBOX_DIR


def enqueue(data_dir: Path, project: str, record: dict[str, Any], now: float | None = None) -> int:
    """Write an entry for every endpoint of ``project`` subscribed to this terminal record's
    event (none registered: nothing, one stat). Returns how many."""
    kind = event_type(record)
    endpoints = webhooks.subscribers(data_dir, project, kind)
    if not endpoints:
        return 0
    directory = outbox_dir(data_dir, project)
    directory.mkdir(parents=True, exist_ok=True)
    now = time.time() if now is None else now
    body = event_body(record)
    for endpoint in endpoints:
        wid = webhook_id(record["id"], endpoint.id)
        fsutil.write_json(
            directory / f"{wid}.json",
            {
                "webhook_id": wid,
                "endpoint_id": endpoint.id,
                "batch_id": record["id"],
                "type": kind,
                "body": body,
                "enqueued_at": now,
                "attempts": 0,
                "next_at": now,
            },
        )
    return len(endpoints)


@dataclass(frozen=True)
class Claimed:
    """An entry this process holds: its claim file and its content."""

    path: Path
    project: str
    entry: dict[str, Any]

    @property
    def pending_path(self) -> Path:
        return self.path.parent / f"{self.entry['webhook_id']}.json"

    def finish(self) -> None:
        """Delivered, given up or dropped: the entry is gone."""
        self.path.unlink(missing_ok=True)

    def retry(self, changes: dict[str, Any]) -> None:
        """Write the next attempt back as pending, then drop the claim."""
        fsutil.write_json(self.pending_path, {**self.entry, **changes})
        self.path.unlink(missing_ok=True)


def _claim_name(wid: str, now: float) -> str:
    return f"{wid}{CLAIM_MARK}{int(now * 1000)}-{os.getpid()}-{HOST}"


def _claim_is_stale(name: str, now: float, lease: float) -> bool:
    try:
        millis, pid, host = name.split(CLAIM_MARK, 1)[1].split("-", 2)
        age, holder_pid = now - int(millis) / 1000, int(pid)
    except ValueError:
        return True
    return age > lease or fsutil.owner_alive(host, holder_pid) is False


class Outbox:
    """Scans every project's outbox for due entries and claims them."""

    def __init__(self, data_dir: Path, lease: float) -> None:
        self.data_dir = data_dir
        self.lease = lease
        self._due: dict[Path, tuple[int, float]] = {}  # entry -> (mtime_ns, next_at)

    def claim_due(self, limit: int, now: float | None = None) -> list[Claimed]:
        """Claim up to ``limit`` entries whose next attempt is due; release dead claims."""
        now = time.time() if now is None else now
        claimed: list[Claimed] = []
        seen: set[Path] = set()
        for project in iter_projects(self.data_dir):
            directory = outbox_dir(self.data_dir, project)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            if any(name.startswith(fsutil.TEMP_PREFIX) for name in names):
                fsutil.sweep_temps(directory)  # a writer killed mid-write
            for name in names:
                if CLAIM_MARK in name:
                    if _claim_is_stale(name, now, self.lease):
                        self._reclaim(directory / name)
                    continue
                if not name.endswith(".json") or name.startswith(fsutil.TEMP_PREFIX):
                    continue
                path = directory / name
                seen.add(path)
                if len(claimed) < limit and self._is_due(path, now):
                    taken = self._take(path, project, now)
                    if taken is not None:
                        claimed.append(taken)
        for gone in set(self._due) - seen:
            del self._due[gone]
        return claimed

    def _is_due(self, path: Path, now: float) -> bool:
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return False
        cached = self._due.get(path)
        if cached is None or cached[0] != mtime:
            try:
                entry = fsutil.read_json(path)
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                return False
            cached = self._due[path] = (mtime, float(entry.get("next_at", 0)))
        return cached[1] <= now

    def _take(self, path: Path, project: str, now: float) -> Claimed | None:
        target = path.parent / _claim_name(path.name[:-5], now)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None  # another worker won it
        self._due.pop(path, None)
        try:
            entry = fsutil.read_json(target)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "webhook_id" not in entry:
            target.unlink(missing_ok=True)  # not ours to interpret: never a crash loop
            return None
        return Claimed(target, project, entry)

    @staticmethod
    def _reclaim(claim: Path) -> None:
        """Put a dead holder's entry back (kept if a newer pending one already exists)."""
        pending = claim.parent / (claim.name.split(CLAIM_MARK, 1)[0] + ".json")
        with contextlib.suppress(FileNotFoundError):
            if pending.exists():
                claim.unlink()
            else:
                os.rename(claim, pending)


def pending_count(data_dir: Path, project: str, endpoint_id: str) -> int:
    """Deliveries still owed to an endpoint (pending or being delivered)."""
    directory = outbox_dir(data_dir, project)
    count = 0
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if name.startswith("wh_"):
                with contextlib.suppress(FileNotFoundError, ValueError):
                    entry = fsutil.read_json(directory / name) or {}
                    count += entry.get("endpoint_id") == endpoint_id
    return count
