"""Pages of a project's batches, filtered by status, without reading every record per view.

Batch ids sort by creation, so the newest-first order comes from one directory listing. A
terminal status never changes, so each worker remembers the statuses of terminal batches it
has read (``StatusIndex``); after that, a page view reads only the records on the page and
those marked active, whatever the number of batches.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from zumik.storage.store import ACTIVE_STATUSES, ProjectStore

FILTERS = ("all", "active", "completed", "failed", "cancelled", "expired")
INDEX_CAPACITY = 500_000  # remembered (project, batch) statuses per worker


class StatusIndex:
    """Statuses of terminal batches, per (project, batch id), shared by a worker's threads."""

    def __init__(self, capacity: int = INDEX_CAPACITY) -> None:
        self.capacity = capacity
        self._known: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.reads = 0  # records read (for tests and benchmarks)

    def statuses(
        self, store: ProjectStore, ids: list[str], read: dict[str, dict[str, Any]] | None = None
    ) -> dict[str, str]:
        """The status of each id (ids whose record is gone are left out); records it had to
        read go into ``read``."""
        active = set(store.active_ids())
        out: dict[str, str] = {}
        with self._lock:
            known = {i: self._known.get((store.project, i)) for i in ids}
        learned: dict[tuple[str, str], str] = {}
        for batch_id in ids:
            status = known[batch_id]
            if status is None or batch_id in active:
                record = self.read(store, batch_id)
                if record is None:
                    continue
                if read is not None:
                    read[batch_id] = record
                status = record.get("status", "")
                if status not in ACTIVE_STATUSES:
                    learned[(store.project, batch_id)] = status
            out[batch_id] = status
        if learned:
            with self._lock:
                if len(self._known) + len(learned) > self.capacity:
                    self._known.clear()
                self._known.update(learned)
        return out

    def read(self, store: ProjectStore, batch_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return store.get_batch(batch_id)


def matches(status: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "active":
        return status in ACTIVE_STATUSES
    return status == wanted


@dataclass
class BatchPage:
    records: list[dict[str, Any]]
    counts: dict[str, int]  # per filter
    page: int
    pages: int
    matching: int


def batch_page(
    store: ProjectStore, index: StatusIndex, wanted: str, page: int, per_page: int
) -> BatchPage:
    """One page (1-based) of the project's batches whose status matches ``wanted``."""
    read: dict[str, dict[str, Any]] = {}
    statuses = index.statuses(store, list(store.batch_ids()), read)
    by_status = Counter(statuses.values())
    counts = {
        name: sum(n for status, n in by_status.items() if matches(status, name)) for name in FILTERS
    }
    if wanted == "all":
        chosen = list(statuses)  # newest first (insertion order)
    else:
        chosen = [i for i, status in statuses.items() if matches(status, wanted)]
    pages = max(1, -(-len(chosen) // per_page))
    page = min(max(1, page), pages)
    records = []
    for batch_id in chosen[(page - 1) * per_page : page * per_page]:
        record = read.get(batch_id) or index.read(store, batch_id)
        if record is not None:
            records.append(record)
    return BatchPage(records, counts, page, pages, len(chosen))
